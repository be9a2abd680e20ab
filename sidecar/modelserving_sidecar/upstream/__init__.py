"""The way to TF Serving: the request body, the kept-alive connections, the forwarded answer."""
