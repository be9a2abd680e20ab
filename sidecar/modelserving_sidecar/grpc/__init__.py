"""TF Serving's gRPC API on the sidecar: the gateway, health checking, the wire and its JSON."""
