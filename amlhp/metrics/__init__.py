"""Prometheus metrics of the pipeline's processes, shared by every stage that runs one.

A layer below the stages (``streams``, ``flows``, later alerts and replay), so that each
of them reports through the same metric families without importing another stage; split
by concern:

* :mod:`~amlhp.metrics.definitions`: step names, buckets, bounded labels, the metric
  families as data and :class:`PipelineMetrics`, the one registry of a process.
* :mod:`~amlhp.metrics.histogram`: :class:`BulkHistogram`, a histogram fed whole arrays.
* :mod:`~amlhp.metrics.lag`: :class:`ConsumerLagCollector`, consumer lag from Kafka.
* :mod:`~amlhp.metrics.server`: the ``/metrics`` endpoint and :func:`start_stage_metrics`.
* :mod:`~amlhp.metrics.faust_sensor`: Faust's own sensor in the same registry.

Nothing is re-exported here: import from the module that holds what you need.
"""
