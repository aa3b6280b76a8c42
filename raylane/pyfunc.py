"""The MLflow pyfunc face of a raylane model: a DataFrame with the task's input column in (`text`,
or `image` as bytes), the task's answer columns out (`pred_label` and `score`; `pred_labels` and
`scores`; `value`). A chat model (causal_lm) takes `text` as a conversation (JSON chat messages)
or a plain prompt, and answers `reply` (`answer_frame` of the model its engine loads:
`raylane.loader`). Shipped with the model (code_paths), so loading it needs only
raylane's core.

Logged as code (MLflow's "models from code"): this file is the model's definition, run again at
load, so the model's weights and settings are data, never unpickled. Loading still runs code:
this file and the code paths stored with the model, as any MLflow pyfunc does; load models only
from a registry you trust."""

from __future__ import annotations

import mlflow.models
import mlflow.pyfunc
import pandas as pd


class RaylaneModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from raylane.loader import load_model

        self.model = load_model(context.artifacts["hf_model"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return self.model.answer_frame(model_input)


mlflow.models.set_model(RaylaneModel())
