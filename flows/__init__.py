"""Flow context: structured flow sequences, a flow CNN, confidence and Shapley explanations.

The second method of the project (Sivanathan et al., "Real-Time and Trustworthy
Classification of IoT Traffic Using Lightweight Deep Learning"): traffic is classified per
flow, with the flow's recent predecessors of the same device as context, and each verdict
carries a calibrated confidence and Shapley attributions over feature groups.
"""
