"""The feedback sink: labelled examples from production, written where ingest reads them back
(`data.source=<sink>/*.jsonl`, `data.text_fields=[text]`, `data.label_field=label`).

Each request becomes one small file, so the sink works the same on a local disk and on object
storage (which cannot append) and concurrent replicas never write the same file."""

from __future__ import annotations

import io
import json
import time
import uuid
from typing import Any


def write_feedback(uri: str, records: list[dict[str, Any]], fmt: str = "jsonl") -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from raylane.sources import filesystem

    name = f"feedback-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:12]}.{fmt}"
    fs, path = filesystem(f"{uri.rstrip('/')}/{name}")
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    if fmt == "parquet":
        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(records), buffer)
        payload = buffer.getvalue()
    else:
        payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
    with fs.open_output_stream(path) as stream:
        stream.write(payload)
    return f"{uri.rstrip('/')}/{name}"
