"""The operator's own autoscaler, for servings that scale on concurrency (decide.py: how many
pods; readings.py: what the sidecars report; loop.py: the leader's rounds)."""
