"""The inputs of an ingest, found and checked before any compute starts, and their digests
(what the cache compares)."""

from __future__ import annotations

import hashlib
import json

from raylane.config import PipelineConfig
from raylane.ingest.reader import FileTask, ReadOptions, check_file
from raylane.manifest import SourceFile
from raylane.sources import IngestError, list_files
from raylane.tasks import get_task

FORMAT_VERSION = 3  # 3: a typed manifest (raylane.manifest) that accounts for every line


def source_tasks(cfg: PipelineConfig) -> list[FileTask]:
    """Every input file, checked; test-source files first, so a text in both the test file and
    the training data keeps its test copy (and cannot leak into training)."""
    data = cfg.data
    required = [*get_task(cfg.task).inputs.fields(data), data.label_field] + ([data.id_field] if data.id_field else [])
    roles = ([("test", data.test_source)] if data.test_source else []) + [("data", data.source)]
    tasks: list[FileTask] = []
    options = ReadOptions.of(data)
    for role, source in roles:
        for file in list_files(source, data.format):
            check_file(file, required, options)
            tasks.append(FileTask(file, len(tasks), role))
    for file in feedback_files(data.feedback_source):  # last: a text the source holds keeps its copy
        check_file(file, list(FEEDBACK_COLUMNS), ReadOptions())
        tasks.append(FileTask(file, len(tasks), FEEDBACK, fields=feedback_fields(cfg)))
    return tasks


# What a feedback record holds (raylane.serve.feedback): the text as scored, the label given.
FEEDBACK_COLUMNS = ("text", "label")
FEEDBACK = "feedback"


def feedback_files(sink: str) -> list[SourceFile]:
    """The sink's files; a sink nobody has written to yet holds none, which is not an error."""
    if not sink:
        return []
    try:
        return list_files(sink)
    except IngestError:
        return []


def feedback_fields(cfg: PipelineConfig) -> tuple[str, ...]:
    """A feedback record's columns in place of the configured ones: its text (already joined, as
    it was scored) fills the first text field, its label the label field, its prediction id
    (unique) the id field."""
    n_text = len(get_task(cfg.task).inputs.fields(cfg.data))
    return ("text", *[""] * (n_text - 1), "label") + (("prediction_id",) if cfg.data.id_field else ())


def config_digest(cfg: PipelineConfig, tokenizer_digest: str) -> str:
    """What decides the output, besides the source bytes: where files live does not."""
    data = {
        k: v
        for k, v in cfg.to_dict()["data"].items()
        if k not in ("source", "test_source", "feedback_source", "output_uri")
    }
    blob = json.dumps({"data": data, "tokenizer": tokenizer_digest, "format": FORMAT_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def source_digest(files: list[SourceFile]) -> str:
    blob = json.dumps([(f.role, f.size, f.sha256) for f in files])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
