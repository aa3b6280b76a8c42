"""What a model directory says about its task, beside the Hugging Face files: `raylane_task.json`
holds the task's name, the labels in the model's output order, and what the target needs to
turn logits into answers (a numeric target's scale, multi-label thresholds). Everything that
loads a model (evaluation, serving, batch prediction, the MLflow pyfunc) reads it from here, so a
model answers the same wherever it runs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TASK_FILE = "raylane_task.json"


@dataclass(frozen=True)
class SavedTask:
    task: str
    labels: list[str]
    extras: dict[str, Any] = field(default_factory=dict)

    def write(self, model_dir: str | Path) -> None:
        payload = {"task": self.task, "labels": self.labels, "extras": self.extras}
        (Path(model_dir) / TASK_FILE).write_text(json.dumps(payload, indent=1))

    def with_extras(self, **extras: Any) -> SavedTask:
        return SavedTask(self.task, self.labels, {**self.extras, **extras})


def read_saved_task(model_dir: str | Path) -> SavedTask:
    """The model's task; a model exported before tasks existed is a text classifier whose labels
    are its config's id2label."""
    path = Path(model_dir) / TASK_FILE
    if path.exists():
        saved = json.loads(path.read_text())
        return SavedTask(saved["task"], list(saved["labels"]), dict(saved.get("extras", {})))
    id2label = json.loads((Path(model_dir) / "config.json").read_text())["id2label"]
    return SavedTask("text_classification", [id2label[str(i)] for i in range(len(id2label))])
