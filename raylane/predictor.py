"""Scoring inputs with an exported model directory (`save_pretrained` + its processor + the task
file `raylane_task.json`): texts or images in, the task's outputs and answers out.

One implementation for every consumer: evaluation and batch prediction (through `ScoreBatch`
in Ray Data actors), the Serve replicas, and the MLflow pyfunc wrapper.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from raylane.tasks import get_task
from raylane.tasks.saved import read_saved_task


class Predictor:
    """`quantize`/`prune_amount` build a compressed variant on load (see raylane.compress), which
    also puts the model on the CPU; `threads` caps torch's intra-op threads (0: torch's default)."""

    def __init__(
        self,
        model_dir: str,
        device: str | None = None,
        quantize: str = "none",
        prune_amount: float = 0.0,
        threads: int = 0,
    ):
        import torch

        from raylane.compress import compress

        if threads:
            torch.set_num_threads(threads)
        saved = read_saved_task(model_dir)
        self.task = get_task(saved.task)
        self.labels, self.extras = saved.labels, saved.extras
        compressed = quantize != "none" or prune_amount > 0
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() and not compressed else "cpu"))
        self.processor = self.task.inputs.load_processor(model_dir)
        model = self.task.inputs.load_model(model_dir, self.labels, self.task.target).eval()
        self.model = compress(model, quantize, prune_amount) if compressed else model.to(self.device)
        # Raw inputs are prepared as ingest prepared the training data (text: preprocessing.json).
        self.prepare = self.task.inputs.raw_preparer(model_dir)

    @property
    def tokenizer(self):
        return self.processor

    def scores(self, items: list, batch_size: int = 16, raw: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(outputs of shape (len(items), k), one drift feature per item: tokens per text, an
        image's brightness), in the order given. `raw`: prepare the items first.

        Items are sorted (texts by length) and scored in chunks of `batch_size`, each padded to its
        own longest. On 2 CPUs (MiniLM-L6, 30 batches of 32 holdout texts) chunks of 16 scored
        1.23x as many texts/s as one padded batch of 32 in fp32 and 1.47x with int8, and 8 no
        better than 16; `bench serve_batching` and `serve_int8` measure the effect end to end."""
        import torch

        if raw:
            items = [self.prepare(item) for item in items]
        width = self.task.target.num_outputs(self.labels)
        if not items:
            return np.zeros((0, width), dtype=np.float32), np.zeros(0)
        # Similar items side by side (texts by length): each chunk pads to its longest.
        order = np.argsort([self.task.inputs.sort_key(item) for item in items], kind="stable")
        logits, features = [], []
        with torch.inference_mode():
            for start in range(0, len(items), batch_size):
                chunk = [items[i] for i in order[start : start + batch_size]]
                inputs, feature = self.task.inputs.encode(self.processor, chunk, self.device)
                logits.append(self.model(**inputs).logits.float().cpu().numpy())
                features.append(feature)
        restore = np.argsort(order)
        outputs = self.task.target.outputs(np.concatenate(logits), self.extras)
        return outputs[restore], np.concatenate(features)[restore]

    def probabilities(self, items: list, batch_size: int = 16) -> np.ndarray:
        return self.scores(items, batch_size)[0]

    def predict(self, items: list, top_k: int = 1, raw: bool = False) -> list[dict[str, Any]]:
        return self.answer(self.scores(items, raw=raw)[0], top_k)

    def answer(self, outputs: np.ndarray, top_k: int = 1) -> list[dict[str, Any]]:
        """Per row of outputs, the task's answer: the best labels with their scores, the labels
        over their thresholds, the value."""
        return self.task.target.answer(outputs, self.labels, self.extras, top_k)

    def ranked(self, probs: np.ndarray, top_k: int = 1) -> list[dict[str, Any]]:
        return self.answer(probs, top_k)

    def answer_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The MLflow pyfunc's answer: the task's input column in, its answer columns out."""
        column = self.task.inputs.column
        items = [v if isinstance(v, bytes) else str(v) for v in frame[column]]  # bytes: an image
        return pd.DataFrame(self.task.target.answer_columns(self.predict(items, raw=True)))


class ScoreBatch:
    """Ray Data callable class: loads the model once per actor, adds the outputs (`outputs`, every
    class's or label's score, or the value) and the answer's columns (`pred_label` and `score`,
    `pred_labels` and `scores`, or `value`)."""

    def __init__(
        self,
        model_dir: str,
        threads: int = 0,
        quantize: str = "none",
        prune_amount: float = 0.0,
        raw_text: bool = False,
    ):
        self.predictor = Predictor(model_dir, quantize=quantize, prune_amount=prune_amount, threads=threads)
        self.raw = raw_text  # False: inputs come from an ingested dataset, already prepared

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        column = self.predictor.task.inputs.column
        outputs, _ = self.predictor.scores(list(batch[column]), raw=self.raw)
        batch = batch.drop(columns=[c for c in ("input_ids", "image") if c in batch.columns])
        batch["outputs"] = list(outputs.astype(np.float32))
        for name, values in self.predictor.task.target.answer_columns(self.predictor.answer(outputs)).items():
            batch[name] = values
        return batch
