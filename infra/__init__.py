"""Local infrastructure: a real Apache Kafka broker or cluster and Prometheus, on 127.0.0.1."""
