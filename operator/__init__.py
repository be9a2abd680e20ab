"""The kopf operator: a ModelServing's children rendered from its spec, applied, status kept."""
