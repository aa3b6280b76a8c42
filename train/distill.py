"""Soft targets for distillation: the teacher's outputs on the training split, computed once in a
Ray Data pass and stored beside the dataset's shards, so every epoch, every Tune trial and a
second run from the same teacher read them instead of running the teacher again.

They are kept under `<dataset>/soft_targets/<key>/split=train/`, the training rows with a
`teacher` column added, where the key is the teacher's version (or its weights' content) and the
dataset's digest: a new teacher version or new data gets new targets, nothing else does.
"""

from __future__ import annotations

import hashlib
import json
import time

import numpy as np
import pandas as pd
import pyarrow.fs as pafs

from raylane.config import PipelineConfig
from raylane.console import say
from raylane.dataset import DatasetInfo
from raylane.distill import KEY, Teacher, identity, resolve_teacher
from raylane.errors import ConfigError
from raylane.runtime import on_this_node
from raylane.scoring import aligned
from raylane.sources import filesystem, join
from raylane.tracking import tracking_uri

DONE = "soft_targets.json"


class TeacherScores:
    """Ray Data callable class: the teacher (loaded once per actor) scores a batch of training
    rows, and its outputs, in the dataset's label order and scale, become the `teacher` column."""

    def __init__(self, model_dir: str, labels: list[str], extras: dict):
        from raylane.predictor import Predictor

        self.predictor = Predictor(model_dir)
        self.labels, self.extras = labels, extras

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        teacher = self.predictor
        outputs, _ = teacher.scores(list(batch[teacher.task.inputs.column]))
        outputs = aligned(outputs, teacher.labels, self.labels)
        batch["teacher"] = list(teacher.task.target.soft_targets(outputs, self.extras).astype(np.float32))
        return batch


def soft_targets_uri(cfg: PipelineConfig, dataset: DatasetInfo, teacher: Teacher) -> str:
    key = hashlib.sha256(f"{identity(teacher, tracking_uri(cfg))}|{dataset.digest}".encode()).hexdigest()[:16]
    return join(dataset.uri, "soft_targets", key)


def _done(uri: str) -> dict | None:
    fs, path = filesystem(join(uri, DONE))
    try:
        with fs.open_input_stream(path) as f:
            return json.loads(f.read())
    except (FileNotFoundError, OSError):
        return None


def ensure_soft_targets(cfg: PipelineConfig, dataset: DatasetInfo) -> dict:
    """The teacher's soft targets for the training split: read if stored, else computed and
    stored. Returns their record (uri, teacher, rows, seconds, reused)."""
    import ray.data

    from raylane.tasks import get_task

    teacher = resolve_teacher(cfg)
    if sorted(teacher.labels) != sorted(dataset.label_names):
        raise ConfigError(
            KEY, f"{teacher.uri} predicts {sorted(teacher.labels)}; the dataset has {dataset.label_names}"
        )
    uri = soft_targets_uri(cfg, dataset, teacher)
    done = _done(uri)
    if done is not None:
        say(f"distill: soft targets of {teacher.uri} on the training split found ({done['rows']} rows), reused")
        return {**done, "reused": True}
    rows = dataset.manifest.splits["train"]
    say(f"distill: the teacher {teacher.uri} scores the {rows} training rows (soft targets, once per version)")
    started = time.time()
    target = get_task(cfg.task).target
    fs, path = filesystem(uri)
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        fs.delete_dir(path)  # what a pass cut short left: its files would be read twice
    ds = dataset.read_split("train").materialize()  # read first: the scoring actors may take the last CPU
    scored = ds.map_batches(
        TeacherScores,
        batch_format="pandas",
        batch_size=cfg.evaluate.batch_size,
        compute=ray.data.ActorPoolStrategy(size=cfg.resources.predict_actors),
        fn_constructor_kwargs={
            "model_dir": teacher.model_dir,
            "labels": dataset.label_names,
            "extras": target.extras(dataset.manifest),
        },
        **on_this_node(),
    )
    scored.write_parquet(join(uri, "split=train"))
    record = {"uri": uri, "teacher": teacher.uri, "rows": rows, "seconds": round(time.time() - started, 2)}
    fs, path = filesystem(join(uri, DONE))
    with fs.open_output_stream(path) as f:  # last: a pass cut short leaves no record, and runs again
        f.write(json.dumps(record).encode())
    say(f"distill: soft targets stored in {record['seconds']:.1f}s: {uri}")
    return {**record, "reused": False}


def read_soft_targets(cfg: PipelineConfig, dataset: DatasetInfo):
    """The training split with its `teacher` column, as a Ray Dataset (stored by `ensure_soft_targets`)."""
    import ray.data

    uri = soft_targets_uri(cfg, dataset, resolve_teacher(cfg))
    if _done(uri) is None:
        uri = ensure_soft_targets(cfg, dataset)["uri"]
    return ray.data.read_parquet(join(uri, "split=train"), partitioning=None)
