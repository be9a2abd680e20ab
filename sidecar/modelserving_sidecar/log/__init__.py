"""The inference log: exchanges made into Avro records, spooled to disk, produced to Kafka."""
