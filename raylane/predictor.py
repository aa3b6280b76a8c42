"""Scoring texts with an exported model directory (`save_pretrained` + tokenizer + label map).

One implementation for every consumer: evaluation and batch prediction (through `ScoreBatch`
in Ray Data actors), the Serve replicas, and the MLflow pyfunc wrapper.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


class Predictor:
    def __init__(self, model_dir: str, device: str | None = None):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForSequenceClassification.from_pretrained(model_dir).to(self.device).eval()
        id2label = self.model.config.id2label
        self.labels = [id2label[i] for i in range(len(id2label))]

    def probabilities(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Softmax scores, shape (len(texts), num_labels). Texts are truncated to the length the
        model was trained with (the tokenizer's model_max_length, set at export)."""
        import torch

        out = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                enc = self.tokenizer(
                    texts[start : start + batch_size], padding=True, truncation=True, return_tensors="pt"
                ).to(self.device)
                out.append(torch.softmax(self.model(**enc).logits.float(), dim=-1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)), dtype=np.float32)

    def predict(self, texts: list[str], top_k: int = 1) -> list[dict[str, Any]]:
        probs = self.probabilities(texts)
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

    def __init__(self, model_dir: str, threads: int = 0, with_probs: bool = False):
        if threads:
            import torch

            torch.set_num_threads(threads)
        self.predictor = Predictor(model_dir)
        self.with_probs = with_probs

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        probs = self.predictor.probabilities([str(t) for t in batch["text"]])
        pred = probs.argmax(axis=1)
        batch = batch.drop(columns=[c for c in ("input_ids",) if c in batch.columns])
        batch["pred"] = pred.astype(np.int32)
        batch["pred_label"] = [self.predictor.labels[i] for i in pred]
        batch["score"] = probs.max(axis=1).astype(np.float32)
        if self.with_probs:
            batch["probs"] = list(probs.astype(np.float32))
        return batch
