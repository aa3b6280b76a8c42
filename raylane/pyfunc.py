"""The MLflow pyfunc face of a raylane model: a DataFrame with a `text` column in, `label` and
`score` out. Shipped with the model (code_paths), so loading it needs only raylane's core."""

from __future__ import annotations

import mlflow.pyfunc
import pandas as pd


class TextClassifier(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from raylane.predictor import Predictor

        self.predictor = Predictor(context.artifacts["hf_model"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        rows = self.predictor.predict([str(t) for t in model_input["text"]], raw=True)
        return pd.DataFrame({"label": [r["label"] for r in rows], "score": [r["score"] for r in rows]})
