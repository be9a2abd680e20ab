"""Who may call a serving: API keys, Kubernetes tokens, and the refusals."""
