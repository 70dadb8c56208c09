"""The pipeline parts that more than one stage uses (``streams``, ``flows``, ``benchmarks``).

Stages import this layer, never each other; it imports only the base (settings, errors,
wire) below it, so a new stage (alerts, replay) builds on these parts without reaching
into another stage:

* :mod:`~amlhp.pipeline.kafka_io`: librdkafka producer/consumer configurations.
* :mod:`~amlhp.pipeline.dataset`: the layout of a Parquet dataset written from a topic.
* :mod:`~amlhp.pipeline.parquet_sink`: the one sink core (buffers, offset-range files,
  manifests, resume, flush-then-commit) that every Parquet writer subclasses.
* :mod:`~amlhp.pipeline.faust_app`: the one Faust app factory and worker runner.
* :mod:`~amlhp.pipeline.signals`: SIGTERM/SIGINT -> a stop event.
* :mod:`~amlhp.pipeline.children`: a child process's environment and the stage launcher.

Nothing is re-exported here: import from the module that holds what you need.
"""
