"""The MLflow pyfunc face of a raylane model: a DataFrame with the task's input column in (`text`,
or `image` as bytes), the task's answer columns out (`pred_label` and `score`; `pred_labels` and
`scores`; `value`). Shipped with the model (code_paths), so loading it needs only raylane's core.

Logged as code (MLflow's "models from code"): this file is the model's definition, run again at
load, so nothing is pickled, and loading a registered model executes no stored bytes."""

from __future__ import annotations

import mlflow.models
import mlflow.pyfunc
import pandas as pd


class RaylaneModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from raylane.predictor import Predictor

        self.predictor = Predictor(context.artifacts["hf_model"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        column = self.predictor.task.inputs.column
        items = [str(v) if column == "text" else v for v in model_input[column]]
        answers = self.predictor.predict(items, raw=True)
        return pd.DataFrame(self.predictor.task.target.answer_columns(answers))


mlflow.models.set_model(RaylaneModel())
