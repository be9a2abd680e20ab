"""The inference log's Kafka side: the sender, the partitioner, aiokafka's logs summarised."""
