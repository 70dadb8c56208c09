"""A benchmark run's topics are its own: creating and deleting them touches nothing else."""

from __future__ import annotations

from amlhp.benchmarks.pipeline_run import bench_settings
from amlhp.pipeline.children import child_env
from amlhp.settings import Settings


def test_every_topic_and_the_group_are_renamed_for_the_run() -> None:
    base = Settings.model_validate({})
    run = bench_settings(base, "r1", partitions=3)
    assert set(run.topics.all()).isdisjoint(base.topics.all())
    assert all(name.startswith("amlhp-bench-r1.") for name in run.topics.all())
    assert run.consumer_group == "amlhp-bench-r1"
    assert run.partitions == 3
    env = child_env(run)
    assert env["AMLHP_TOPIC_RAW"] == run.topic_raw
    assert env["AMLHP_TOPIC_VERDICTS"] == run.topic_verdicts
    assert env["AMLHP_CONSUMER_GROUP"] == run.consumer_group
