"""Pipeline stages on Kafka: sensor tap, the Faust worker (decode, encode, score), Parquet sink."""
