"""The IoT-AMLHP network, its baselines, training, evaluation, artifact and fast inference."""
