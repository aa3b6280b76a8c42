"""The ingest manifest: what a tokenized dataset holds and how it was made, as ingest writes it
and every later stage reads it (`manifest.json` beside the split shards).

A typed record rather than a dict read by string keys in several modules: a field renamed here
is renamed everywhere, and a manifest that does not match this schema (an older format, a file
cut short by a crash) reads as no manifest at all, which makes ingest run again rather than trust
it.
"""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

MANIFEST = "manifest.json"


class Record(BaseModel):
    """A frozen JSON record that refuses keys it does not know."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class SourceFile(Record):
    """One input file and how its lines were accounted for. A text file reconciles:
    lines = header_lines + blank_lines + record_lines, and its records are the rows ingest read
    from it (each accepted or quarantined). `literal_records` were read with the quote as an
    ordinary character after a stray quote (data.max_record_lines). Parquet has rows, not lines."""

    uri: str
    role: str  # "data", "test" for an explicit test source, "feedback" for a feedback sink's file
    format: str
    size: int
    sha256: str
    lines: int | None = None
    header_lines: int = 0
    blank_lines: int = 0
    record_lines: int = 0
    records: int = 0
    literal_records: int = 0


class Counts(Record):
    """Every record read ends accepted or quarantined with one reason: input = accepted +
    quarantined; `lines` are the physical lines of the text files they came from."""

    input: int
    accepted: int
    quarantined: int
    quarantine_reasons: dict[str, int]
    lines: int = 0


class TextPreparation(Record):
    """What ingest did to each text before tokenizing it; a model trained on the dataset carries
    it, so that serving prepares raw text the same way."""

    lowercase: bool
    mask_pii: list[str]


class LengthStats(Record):
    """Token lengths of one split; `histogram` is per `raylane.drift.LENGTH_EDGES` bin (the drift
    reference), `truncated` counts rows cut at max_length."""

    p50: int
    p95: int
    max: int
    mean: float
    truncated: int
    histogram: list[int]


class PiiStats(Record):
    masked_kinds: list[str]
    counts: dict[str, int]


class TokenizerRef(Record):
    name_or_path: str
    digest: str


class ImageStats(Record):
    """Images of one split: sizes and brightness (mean grey level, 0-255), and a brightness
    histogram per `raylane.drift.BRIGHTNESS_EDGES` bin: the drift reference."""

    rows: int
    width_p50: int
    height_p50: int
    max_pixels: int
    brightness_mean: float
    brightness_histogram: list[int]


class Manifest(Record):
    format_version: int
    task: str = "text_classification"
    created_at: str
    source_digest: str
    config_digest: str
    sources: list[SourceFile]
    tokenizer: TokenizerRef
    max_length: int
    text_fields: list[str]
    label_field: str
    preparation: TextPreparation
    labels: list[str]
    label2id: dict[str, int]
    counts: Counts
    splits: dict[str, int]
    class_counts: dict[str, dict[str, int]]
    token_lengths: dict[str, LengthStats] = {}  # text inputs
    image_stats: dict[str, ImageStats] = {}  # image inputs
    # A numeric target, per split: rows, mean, std, min, max, and a histogram (edges, counts).
    target_stats: dict[str, dict[str, Any]] = {}
    pii: PiiStats
    shards: dict[str, int]
    columns: dict[str, str]  # the split shards' columns and what they hold
    config: dict[str, Any]  # the data section the dataset was made with
    elapsed_s: float

    @property
    def digest(self) -> str:
        """What the data is: its sources' digest and the ingest config's (the MLflow dataset digest)."""
        return f"{self.source_digest}-{self.config_digest}"

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)


def read_manifest(uri: str) -> Manifest | None:
    """The manifest in dataset directory `uri`; None when there is none, or when what is there
    does not parse as one (cut short, hand-edited, an older format)."""
    from raylane.sources import filesystem, join

    fs, path = filesystem(join(uri, MANIFEST))
    try:
        with fs.open_input_stream(path) as stream:
            return Manifest.model_validate_json(stream.read())
    except (FileNotFoundError, OSError, ValidationError, ValueError):
        return None


def write_manifest(uri: str, manifest: Manifest) -> str:
    """Write the manifest through a temporary file and a rename, so that a reader sees the old
    manifest, no manifest, or the whole new one: never half of it."""
    from raylane.sources import filesystem, join

    fs, path = filesystem(join(uri, MANIFEST))
    temporary = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with fs.open_output_stream(temporary) as stream:
        stream.write(manifest.to_json().encode())
    fs.move(temporary, path)
    return join(uri, MANIFEST)


def remove_manifest(uri: str) -> None:
    """Delete the manifest, if any: the first thing a rewrite of the dataset does, so that an
    interrupted rewrite leaves no manifest over half-written shards."""
    from raylane.sources import filesystem, join

    fs, path = filesystem(join(uri, MANIFEST))
    try:
        fs.delete_file(path)
    except FileNotFoundError:
        pass
