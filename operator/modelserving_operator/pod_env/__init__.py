"""The Secrets and ConfigMaps a serving's pods read at start: the digest that
rolls them, the checks."""
