"""The inference log's topics and the Kafka access the operator reads from a serving."""
