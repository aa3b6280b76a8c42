from pathlib import Path

from mlflow import MlflowClient

from raylane.predictor import Predictor
from raylane.tracking import start_run
from train.driver import fit


def _history(run, key):
    return [m.value for m in sorted(MlflowClient(run.tracking_uri).get_metric_history(run.run_id, key),
                                    key=lambda m: m.step)]


def test_local_mode_loss_falls_and_is_logged_per_epoch(smoke_dataset, smoke_cfg_factory):
    cfg = smoke_cfg_factory("resources.num_workers=0", "train.epochs=3", "train.lr=2e-3")
    with start_run(cfg, "train-local") as run:
        result = fit(cfg, smoke_dataset, run, name="local")
    losses = _history(run, "train_loss")
    assert len(losses) == 3
    assert losses[-1] < losses[0]
    assert len(_history(run, "val_macro_f1")) == 3
    assert Predictor(result.model_dir).labels == smoke_dataset.label_names


def test_two_real_workers_train_and_export(smoke_dataset, smoke_cfg_factory):
    cfg = smoke_cfg_factory("resources.num_workers=2", "resources.cpus_per_worker=1", "train.epochs=2")
    with start_run(cfg, "train-ddp") as run:
        result = fit(cfg, smoke_dataset, run, name="ddp")
    # The all-reduced throughput covers both workers' shards: together, the whole split
    # (equal shards may drop one odd row).
    seen = result.metrics["samples_per_s"] * result.metrics["epoch_time_s"]
    assert abs(seen - smoke_dataset.manifest["splits"]["train"]) <= 1
    assert result.metrics["epoch"] in (1, 2)
    assert 0.0 <= result.metrics["val_macro_f1"] <= 1.0
    assert Path(result.checkpoint_uri).is_dir()
    assert (Path(result.model_dir) / "config.json").is_file()
    predictions = Predictor(result.model_dir).predict(["a computer vision paper"])
    assert predictions[0]["label"] in smoke_dataset.label_names
    assert len(_history(run, "train_loss")) == 2
