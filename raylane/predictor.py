"""Scoring texts with an exported model directory (`save_pretrained` + tokenizer + label map).

One implementation for every consumer: evaluation and batch prediction (through `ScoreBatch`
in Ray Data actors), the Serve replicas, and the MLflow pyfunc wrapper.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from raylane.text import TextPrep


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
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from raylane.compress import compress

        if threads:
            torch.set_num_threads(threads)
        compressed = quantize != "none" or prune_amount > 0
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() and not compressed else "cpu"))
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
        self.model = compress(model, quantize, prune_amount) if compressed else model.to(self.device)
        id2label = self.model.config.id2label
        self.labels = [id2label[i] for i in range(len(id2label))]
        self.prepare = TextPrep.of_model(model_dir)  # for raw text: what ingest did to the training data

    def scores(self, texts: list[str], batch_size: int = 64, raw: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(softmax scores of shape (len(texts), num_labels), token count of each text), in the
        order given. `raw`: prepare the texts first, as ingest prepared the training data. Texts
        are truncated to the length the model was trained with (the tokenizer's
        model_max_length, set at export)."""
        import torch

        if raw:
            texts = [self.prepare(t) for t in texts]
        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32), np.zeros(0, dtype=np.int64)
        # Similar lengths side by side: each chunk pads to its longest text, so less padding.
        order = np.argsort([len(t) for t in texts], kind="stable")
        probs, lengths = [], []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                chunk = [texts[i] for i in order[start : start + batch_size]]
                enc = self.tokenizer(chunk, padding=True, truncation=True, return_tensors="pt").to(self.device)
                probs.append(torch.softmax(self.model(**enc).logits.float(), dim=-1).cpu().numpy())
                lengths.append(enc["attention_mask"].sum(dim=1).cpu().numpy())
        restore = np.argsort(order)
        return np.concatenate(probs)[restore], np.concatenate(lengths)[restore]

    def probabilities(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        return self.scores(texts, batch_size)[0]

    def predict(self, texts: list[str], top_k: int = 1, raw: bool = False) -> list[dict[str, Any]]:
        return self.ranked(self.scores(texts, raw=raw)[0], top_k)

    def ranked(self, probs: np.ndarray, top_k: int = 1) -> list[dict[str, Any]]:
        """Per row of scores: the best label, its score, and the `top_k` best, best first."""
        results = []
        for row in probs:
            order = np.argsort(-row)[: max(1, top_k)]
            results.append(
                {
                    "label": self.labels[order[0]],
                    "score": float(row[order[0]]),
                    "top_k": [{"label": self.labels[i], "score": float(row[i])} for i in order],
                }
            )
        return results


class ScoreBatch:
    """Ray Data callable class: loads the model once per actor, adds `pred`, `pred_label`, `score`
    (and `probs`, every class's score, when asked)."""

    def __init__(
        self,
        model_dir: str,
        threads: int = 0,
        with_probs: bool = False,
        quantize: str = "none",
        prune_amount: float = 0.0,
        raw_text: bool = False,
    ):
        self.predictor = Predictor(model_dir, quantize=quantize, prune_amount=prune_amount, threads=threads)
        self.with_probs = with_probs
        self.raw_text = raw_text  # False: texts come from an ingested dataset, already prepared

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        probs = self.predictor.scores([str(t) for t in batch["text"]], raw=self.raw_text)[0]
        pred = probs.argmax(axis=1)
        batch = batch.drop(columns=[c for c in ("input_ids",) if c in batch.columns])
        batch["pred"] = pred.astype(np.int32)
        batch["pred_label"] = [self.predictor.labels[i] for i in pred]
        batch["score"] = probs.max(axis=1).astype(np.float32)
        if self.with_probs:
            batch["probs"] = list(probs.astype(np.float32))
        return batch
