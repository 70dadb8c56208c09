"""Throughput, latency and lag benchmarks of the stages and of the whole pipeline."""
