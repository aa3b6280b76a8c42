"""Loading a saved model by its task's engine: a scoring model as a `Predictor` (a forward pass
per batch), a generating one as a `Generator` (decoding). Evaluation, serving, batch prediction
and the MLflow pyfunc all load through here, so a model answers the same wherever it runs."""

from __future__ import annotations

from typing import Any

from raylane.generate import Generator
from raylane.predictor import Predictor
from raylane.tasks import answer_alike, get_task
from raylane.tasks.saved import read_saved_task


def _generator(model_dir: str, device: str | None = None, threads: int = 0, **variant: Any) -> Generator:
    if any(variant.values()):  # compression is refused at config load (serve.quantize is the scorers')
        raise ValueError(f"a generating model has no compressed variant; got {variant}")
    return Generator(model_dir, threads=threads, device=device)


LOADERS = {"scoring": Predictor, "generating": _generator}


def load_model(model_dir: str, serves: str = "", **options: Any) -> Predictor | Generator:
    """The model saved in `model_dir`, ready to answer; `options`: device, threads, and a scoring
    model's compressed variant (quantize, prune_amount). With `serves`, a model of another task is
    refused: a deployment serves the task it was built for, or one whose models answer alike (a
    chat model's deployment serves its preference-tuned successor, and back)."""
    task = get_task(read_saved_task(model_dir).task)
    if serves and not answer_alike(task.name, serves):
        raise ValueError(f"{model_dir} is a {task.name} model; this deployment serves {serves}")
    return LOADERS[task.engine.name](model_dir, **options)
