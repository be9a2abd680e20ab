"""Tests against the local environment of real parts (a control plane, Kafka, helm)."""
