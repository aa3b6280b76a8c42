"""One reader row through ingest's `prepare_batch`, for tests that check a single row's fate."""

import pyarrow as pa

from raylane.ingest.reader import field_columns
from raylane.ingest.transforms import RowSpec, prepare_batch


def prepare_row(error: str, texts: list, label, key, spec: RowSpec) -> dict:
    """One reader row through `prepare_batch`, as a dict (pii: the kinds masked, with counts)."""
    values = [*texts, label] + ([key] if spec.has_id else [])
    table = pa.table(
        {
            "source": ["f"],
            "line": [1],
            "lines": [1],
            "pos": [1],
            "role": ["data"],
            "error": [error],
            "raw": ["{}"],
            **{name: pa.array([v], pa.string()) for name, v in zip(field_columns(len(values)), values)},
        }
    )
    row = prepare_batch(table, spec=spec).to_pylist()[0]
    row["pii"] = {k: row.pop(f"pii_{k}") for k in spec.pii_kinds if row.get(f"pii_{k}")}
    return row
