"""Helpers the tests share: reference implementations and test doubles, no fixtures."""
