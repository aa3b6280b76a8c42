"""The registered model as any MLflow consumer loads it: logged as code (nothing pickled), then
`mlflow.pyfunc.load_model` from the registry, against a real (SQLite) store."""

from pathlib import Path

import mlflow
import pandas as pd

from raylane.config import load_config
from raylane.models import load_classifier, load_tokenizer
from raylane.registry import log_and_register
from raylane.tasks.saved import SavedTask
from raylane.text import TextPrep
from raylane.tracking import start_run


def test_a_registered_model_loads_and_answers_through_mlflow_pyfunc(tmp_path, tiny_model, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # its own SQLite store
    labels = ["cv", "nlp"]
    model_dir = tmp_path / "model"
    load_classifier(str(tiny_model), labels).save_pretrained(model_dir)
    load_tokenizer(str(tiny_model)).save_pretrained(model_dir)
    TextPrep().save(model_dir)
    SavedTask("text_classification", labels).write(model_dir)

    cfg = load_config(None, [f"output_dir={tmp_path / 'out'}", "tracking.experiment=pyfunc"])
    with start_run(cfg, "register") as run:
        version = log_and_register(run, str(model_dir), "pyfunc-test", labels)

    stored = mlflow.artifacts.download_artifacts(
        f"models:/pyfunc-test/{version.version}", tracking_uri=run.tracking_uri
    )
    assert not list(Path(stored).rglob("python_model.pkl"))  # code, not a pickle
    mlflow.set_tracking_uri(run.tracking_uri)
    model = mlflow.pyfunc.load_model(version.uri)
    answers = model.predict(pd.DataFrame({"text": ["a picture of a cat", "parsing sentences"]}))
    assert list(answers.columns[:2]) == ["pred_label", "score"] and len(answers) == 2
    assert set(answers["pred_label"]) <= set(labels) and answers["score"].between(0, 1).all()
