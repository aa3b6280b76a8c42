"""The engine of a task: how a model of it answers once trained, the one fork between kinds of
model that reaches past the task seam. A **scoring** engine runs one forward pass per batch and
turns logits into answers (`raylane.predictor.Predictor`); a **generating** engine decodes an
answer token by token (`raylane.generate.Generator`). A task's engine follows from its target.

What the engine owns in the seam is here: its name, the route its served app answers on, its
config keys, and whether files can be batch-scored. Where the code that differs lives above the
seam, its module keeps one implementation per engine in a table keyed by `Engine.name`: how a
saved model loads (`raylane.loader`), what an epoch records (`raylane.train.records`), how a split
is evaluated (`raylane.evaluate.stage`), which Serve app is built (`raylane.serve.app`), what the
freshly served model is asked first (`raylane.pipelines.commands`). Nothing outside the seam asks
which task it runs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from raylane.errors import ConfigError


class Engine(ABC):
    name: ClassVar[str]
    route: ClassVar[str]  # the served app's main route, for the console
    config_keys: ClassVar[frozenset[str]] = frozenset()

    @abstractmethod
    def check_batch_prediction(self, task_name: str) -> None:
        """Batch prediction over files (`raylane predict`) applies, or a ConfigError says why not."""


class Scoring(Engine):
    name = "scoring"
    route = "POST /predict"
    config_keys = frozenset({"serve.quantize", "serve.prune_amount", "train.distill", "gate.max_teacher_gap"})

    def check_batch_prediction(self, task_name: str) -> None:
        return None


class Generating(Engine):
    name = "generating"
    route = "POST /v1/chat/completions"

    def check_batch_prediction(self, task_name: str) -> None:
        raise ConfigError(
            "task",
            f"predict scores files with classifiers and regressors; a {task_name} model answers conversations "
            f"through `raylane serve` ({self.route})",
        )


SCORING, GENERATING = Scoring(), Generating()
ENGINES = {engine.name: engine for engine in (SCORING, GENERATING)}
