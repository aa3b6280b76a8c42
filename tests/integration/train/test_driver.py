from pathlib import Path

from mlflow import MlflowClient

from raylane.predictor import Predictor
from raylane.tracking import start_run
from raylane.train.driver import fit


def _history(run, key):
    return [
        m.value
        for m in sorted(MlflowClient(run.tracking_uri).get_metric_history(run.run_id, key), key=lambda m: m.step)
    ]


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
    assert abs(seen - smoke_dataset.manifest.splits["train"]) <= 1
    assert result.metrics["epoch"] in (1, 2)
    assert 0.0 <= result.metrics["val_macro_f1"] <= 1.0
    assert Path(result.checkpoint_uri).is_dir()
    assert (Path(result.model_dir) / "config.json").is_file()
    predictions = Predictor(result.model_dir).predict(["a computer vision paper"])
    assert predictions[0]["label"] in smoke_dataset.label_names
    assert len(_history(run, "train_loss")) == 2


def test_placement_groups_left_behind_are_released_so_the_next_stage_gets_cpus(ray_session):
    """What a trial stopped early can leave behind: a placement group of this job holding a CPU."""
    import ray
    from ray.util.placement_group import placement_group

    from raylane.runtime import release_stray_placement_groups, stray_placement_groups

    job_id = ray.get_runtime_context().get_job_id()
    cpus = ray.cluster_resources()["CPU"]
    stray = placement_group([{"CPU": 1}])
    ray.get(stray.ready())
    assert stray_placement_groups(ray.util.placement_group_table(), job_id) == [stray.id.hex()]
    assert release_stray_placement_groups(grace_s=1) == 1
    assert stray_placement_groups(ray.util.placement_group_table(), job_id) == []
    # The CPU is free again: a task asking for every CPU runs.
    assert ray.get(ray.remote(num_cpus=cpus)(lambda: "ran").remote(), timeout=60) == "ran"
    assert release_stray_placement_groups(grace_s=1) == 0


def test_only_this_jobs_live_placement_groups_count_as_strays():
    from raylane.runtime import stray_placement_groups

    table = {
        "aa01000000": {"state": "CREATED"},
        "bb01000000": {"state": "REMOVED"},
        "cc02000000": {"state": "CREATED"},
        "dd01000000": {"state": "PENDING"},
    }
    assert stray_placement_groups(table, "01000000") == ["aa01000000", "dd01000000"]
