"""The MLflow pyfunc face of a raylane model: a DataFrame with the task's input column in (`text`,
or `image` as bytes), the task's answer columns out (`pred_label` and `score`; `pred_labels` and
`scores`; `value`). A chat model (causal_lm) takes `text` as a conversation (JSON chat messages)
or a plain prompt, and answers `reply`. Shipped with the model (code_paths), so loading it needs
only raylane's core.

Logged as code (MLflow's "models from code"): this file is the model's definition, run again at
load, so nothing is pickled, and loading a registered model executes no stored bytes."""

from __future__ import annotations

import mlflow.models
import mlflow.pyfunc
import pandas as pd


class RaylaneModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from raylane.tasks import get_task
        from raylane.tasks.saved import read_saved_task

        model_dir = context.artifacts["hf_model"]
        self.generator = self.predictor = None
        if get_task(read_saved_task(model_dir).task).target.keeps_outputs:
            from raylane.predictor import Predictor

            self.predictor = Predictor(model_dir)
        else:
            from raylane.generate import Generator

            self.generator = Generator(model_dir)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        if self.generator is not None:
            from raylane.tasks.chat import parse_messages

            generator = self.generator
            conversations = [
                parse_messages(str(v)) or [{"role": "user", "content": str(v)}] for v in model_input["text"]
            ]
            prompts = [generator.chat_prompt(messages) for messages in conversations]
            replies = generator.generate(prompts, [generator.defaults] * len(prompts))
            return pd.DataFrame({"reply": [r.text for r in replies]})
        column = self.predictor.task.inputs.column
        items = [str(v) if column == "text" else v for v in model_input[column]]
        answers = self.predictor.predict(items, raw=True)
        return pd.DataFrame(self.predictor.task.target.answer_columns(answers))


mlflow.models.set_model(RaylaneModel())
