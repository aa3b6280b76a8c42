"""The engine of a task: how a model of it answers once trained, the one fork between kinds of
model that reaches past the task seam. A **scoring** engine runs one forward pass per batch and
turns logits into answers (`raylane.predictor.Predictor`); a **generating** engine decodes an
answer token by token (`raylane.generate.Generator`). A task's engine follows from its target.

What the engine owns in the seam is here: its name, the route its served app answers on, its config
keys, what batch prediction (`raylane predict`) does to a row, and what a training forward passes
beside the batch. Where the code that differs lives above the seam, its module keeps one
implementation per engine in a table keyed by `Engine.name`: how a saved model loads
(`raylane.loader`), what an epoch records (`raylane.train.records`), how a split is evaluated
(`raylane.evaluate.stage`), which Serve app is built (`raylane.serve.app`), what the freshly served
model is asked first (`raylane.pipelines.commands`). Nothing outside the seam asks
which task it runs.
"""

from __future__ import annotations

from typing import ClassVar


class Engine:
    name: ClassVar[str]
    route: ClassVar[str]  # the served app's main route, for the console
    predicted: ClassVar[str]  # what `raylane predict` did to each row, for the console
    config_keys: ClassVar[frozenset[str]] = frozenset()
    forward_options: ClassVar[dict[str, object]] = {}  # what a training forward passes beside the batch


class Scoring(Engine):
    name = "scoring"
    route = "POST /predict"
    predicted = "scored"
    config_keys = frozenset({"serve.quantize", "serve.prune_amount", "train.distill", "gate.max_teacher_gap"})


class Generating(Engine):
    name = "generating"
    route = "POST /v1/chat/completions"
    predicted = "answered"
    # No KV cache in a training forward: it would keep every layer's keys and values of the batch
    # for nothing, and transformers reads packed conversations from the position ids (an attention
    # mask kept inside each) only where there is none.
    forward_options = {"use_cache": False}


SCORING, GENERATING = Scoring(), Generating()
ENGINES = {engine.name: engine for engine in (SCORING, GENERATING)}
