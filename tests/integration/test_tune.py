import json

from mlflow import MlflowClient

from raylane.predictor import Predictor
from raylane.tracking import start_run
from tune.sweep import run_sweep


def test_two_trial_sweep_nests_trials_and_exports_the_best(smoke_dataset, smoke_cfg_factory, mlflow_server):
    cfg = smoke_cfg_factory(f"tracking.uri={mlflow_server}", "tracking.experiment=sweep-test", "train.epochs=2")
    with start_run(cfg, "sweep") as sweep_run:
        result = run_sweep(cfg, smoke_dataset, sweep_run, name="sweep-it")
    assert len(result.trials) == 2
    assert len({json.dumps(t["params"], sort_keys=True) for t in result.trials}) == 2  # distinct samples
    scores = [t["best_val_macro_f1"] for t in result.trials]
    assert result.best.metrics["val_macro_f1"] == max(scores)
    assert Predictor(result.best.model_dir).labels == smoke_dataset.label_names

    client = MlflowClient(mlflow_server)
    children = client.search_runs([sweep_run.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{sweep_run.run_id}'")
    assert len(children) == 2
    for child in children:
        assert child.info.status in ("FINISHED", "KILLED")
        assert {"train.lr", "train.batch_size"} <= child.data.params.keys()
        assert len(client.get_metric_history(child.info.run_id, "val_macro_f1")) >= 1
    artifacts = [a.path for a in client.list_artifacts(sweep_run.run_id)]
    assert "trials.json" in artifacts
