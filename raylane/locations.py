"""Where inputs live: a URI of object storage passes through as it is, a relative path resolves
against the working directory and then against what raylane ships. A leaf module: the config,
the sources and the model loaders all resolve paths the same way, and none of them imports
another to do it."""

from __future__ import annotations

import glob
from pathlib import Path

from raylane.resources import packaged

REMOTE_SCHEMES = ("s3://", "gs://", "gcs://", "abfs://", "hdfs://", "http://", "https://")


def resolve_input(path: str) -> str:
    """A relative input path resolves against the working directory, then against what raylane
    ships (`data/...`: the embedded datasets), so the embedded defaults run from any directory,
    with raylane installed or from a checkout. URIs pass through."""
    if not path or path.startswith(REMOTE_SCHEMES):
        return path
    p = Path(path).expanduser()
    if p.is_absolute() or glob.glob(str(Path.cwd() / p)):
        return str(Path.cwd() / p)
    shipped = packaged(path)
    if shipped is not None and glob.glob(str(shipped)):
        return str(shipped)
    return str(Path.cwd() / p)
