"""raylane's shared core: config, tracking, registry, datasets, models and inference.

Stages (ingest, train, tune, evaluate, serve) depend on this package; it depends on none of them.
"""

__version__ = "0.1.0"
