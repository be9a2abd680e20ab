"""What TF Serving says of this pod's model, and the report the pod publishes of it."""
