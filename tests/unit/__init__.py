"""Tests that need no infrastructure: seconds, no cluster, no Kafka."""
