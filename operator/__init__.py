"""The kopf operator: a ModelServing's children rendered from its spec, applied, and its status kept true."""
