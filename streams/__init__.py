"""Pipeline stages on Kafka: sensor tap, Faust encode and score agents, Parquet sink."""
