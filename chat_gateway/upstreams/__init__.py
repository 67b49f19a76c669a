"""Many upstreams: configured from a file (config), routing by model (registry, route), health (breaker, limits)."""
