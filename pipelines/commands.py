"""The commands: each opens one MLflow parent run, runs its stages nested under it, and prints
what a person needs next. Stages pass URIs (dataset dir, model dir, models:/ URI), so each
command also runs alone from the output of an earlier one."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from raylane.config import PROJECT_ROOT, PipelineConfig
from raylane.dataset import DatasetInfo, open_dataset
from raylane.runtime import init_ray, release_stray_placement_groups
from raylane.tracking import RunRef, start_run, tracking_uri, ui_command


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@contextlib.contextmanager
def pipeline_run(cfg: PipelineConfig, command: str) -> Iterator[RunRef]:
    name = cfg.tracking.run_name or f"{command}-{time.strftime('%Y%m%d-%H%M%S')}"
    with start_run(cfg, name, tags={"raylane.command": command, "git_commit": _git_commit()}) as run:
        run.log_params(cfg.flat())
        run.log_dict(cfg.to_dict(), "config.json")
        yield run


def _dataset(cfg: PipelineConfig, args: argparse.Namespace) -> DatasetInfo:
    return open_dataset(getattr(args, "dataset", None) or cfg.data.output_uri or str(cfg.output_path / "dataset"))


# --- stages, each a nested run ----------------------------------------------------------------


def ingest_stage(cfg: PipelineConfig, parent: RunRef, force: bool = False, tasks=None) -> DatasetInfo:
    from ingest.stage import format_summary, run as ingest

    with start_run(cfg, "ingest", parent) as run:
        result = ingest(cfg, run, force=force, tasks=tasks)
    print(f"\ningest:\n{format_summary(result)}")
    return result.dataset


def train_stage(cfg: PipelineConfig, dataset: DatasetInfo, parent: RunRef):
    from train.driver import fit

    with start_run(cfg, "train", parent, tags={"dataset": dataset.uri}) as run:
        run.log_params({f"train.{k}": v for k, v in cfg.to_dict()["train"].items()})
        result = dataclasses.replace(fit(cfg, dataset, run), run_id=run.run_id)
    print(f"\ntrain: best {cfg.train.metric} {result.metrics[cfg.train.metric]:.4f} "
          f"(epoch {result.metrics.get('epoch')}) -> {result.model_dir}")
    return result


def tune_stage(cfg: PipelineConfig, dataset: DatasetInfo, parent: RunRef):
    from tune.sweep import run_sweep

    with start_run(cfg, "sweep", parent, tags={"dataset": dataset.uri}) as run:
        result = run_sweep(cfg, dataset, run)
    result = dataclasses.replace(result, best=dataclasses.replace(result.best, run_id=run.run_id))
    metric = cfg.train.metric
    print(f"\nsweep: {len(result.trials)} trials")
    for t in result.trials:
        score = t[f"best_{metric}"]
        print(f"  {t['trial_id']}  {t['params']}  best {metric} {score if score is None else round(score, 4)}  "
              f"epochs {t['epochs']}{'' if t['completed'] else '  (stopped early)'}")
    print(f"  best: {result.best_params} -> {result.best.model_dir}")
    return result.best


def evaluate_stage(cfg: PipelineConfig, model_dir: str, dataset: DatasetInfo, parent: RunRef):
    from evaluate.stage import format_table, run as evaluate

    with start_run(cfg, "evaluate", parent, tags={"model_dir": model_dir}) as run:
        result = evaluate(cfg, model_dir, dataset, cfg.output_path / "evaluation", run)
    print(f"\nevaluate (test split):\n{format_table(result.metrics)}\n  report: {result.report_path}")
    return result, run.run_id


def register_stage(cfg: PipelineConfig, model_dir: str, dataset: DatasetInfo, evaluation, parent: RunRef,
                   lineage: dict[str, str]):
    """Re-score the champion on the same test split, gate, register, move aliases."""
    from evaluate.gate import format_decision, register, score_champion

    with start_run(cfg, "register", parent) as run:
        champion = score_champion(cfg, dataset, run.tracking_uri, cfg.output_path / "evaluation" / "champion")
        reg = register(cfg, run, model_dir, dataset, evaluation.metrics, champion,
                       lineage={"pipeline_run_id": parent.run_id, "git_commit": _git_commit(), **lineage})
    print(f"\nregister: {format_decision(reg)}")
    return reg


# --- commands ---------------------------------------------------------------------------------


def _check_sources(cfg: PipelineConfig):
    """The checked input files: whole-file problems (empty, unreadable, a column missing) fail
    here, before Ray starts."""
    from ingest.inputs import source_tasks

    return source_tasks(cfg)


def ingest(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    tasks = _check_sources(cfg)
    init_ray()
    with pipeline_run(cfg, "ingest") as run:
        ingest_stage(cfg, run, force=args.force, tasks=tasks)
    return 0


def train(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    return _on_dataset(cfg, args, "train", train_stage)


def tune(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    return _on_dataset(cfg, args, "tune", tune_stage)


def _on_dataset(cfg: PipelineConfig, args: argparse.Namespace, command: str, stage) -> int:
    dataset = _dataset(cfg, args)  # a missing dataset fails before Ray starts
    init_ray()
    with pipeline_run(cfg, command) as run:
        stage(cfg, dataset, run)
    return 0


def evaluate(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    from raylane.registry import resolve_model

    dataset = _dataset(cfg, args)
    resolved = resolve_model(args.model or cfg.serve_model_uri, tracking_uri(cfg))
    init_ray()
    with pipeline_run(cfg, "evaluate") as run:
        result, evaluate_run_id = evaluate_stage(cfg, resolved.model_dir, dataset, run)
        if args.register:
            reg = register_stage(cfg, resolved.model_dir, dataset, result, run, {"evaluate_run_id": evaluate_run_id})
            return _gate_exit_code(cfg, reg)
    return 0


def _gate_exit_code(cfg: PipelineConfig, reg) -> int:
    """A rejected model is a result, not an error, unless the config says to fail on it."""
    return 1 if cfg.gate.fail_on_reject and not reg.decision.passed else 0


def serve(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    from serve.deploy import client_headers, deploy

    client_headers(cfg)  # a missing or empty API-key source fails now, not in every replica
    init_ray()
    url = deploy(cfg, args.model)
    print(f"serving {args.model or cfg.serve_model_uri} at {url}  (POST /predict, GET /healthz, /model, /docs); "
          "Ctrl-C stops")
    _block()
    return 0


def predict(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    from raylane.registry import resolve_model
    from serve.batch import predict_files

    resolved = resolve_model(args.model or cfg.serve_model_uri, tracking_uri(cfg))
    init_ray()
    out = Path(args.output or cfg.output_path / "predictions")
    rows = predict_files(cfg, resolved.model_dir, args.input, out)
    print(f"predict: {rows} rows scored -> {out}")
    return 0


def run(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    from serve.deploy import client_headers, deploy, predict_http

    started = time.time()
    tasks = _check_sources(cfg)
    headers = client_headers(cfg)  # a missing or empty API-key source fails now, not after training
    init_ray()
    with pipeline_run(cfg, "run") as parent:
        dataset = ingest_stage(cfg, parent, force=args.force, tasks=tasks)
        best = tune_stage(cfg, dataset, parent) if cfg.sweep.enabled else train_stage(cfg, dataset, parent)
        release_stray_placement_groups()  # or evaluate may wait forever for the CPUs they hold
        evaluation, evaluate_run_id = evaluate_stage(cfg, best.model_dir, dataset, parent)
        reg = register_stage(cfg, best.model_dir, dataset, evaluation, parent,
                             {"training_run_id": best.run_id, "evaluate_run_id": evaluate_run_id})
        # A rejected model never displaces the champion; with no champion yet, it is all there is.
        served_uri = cfg.serve_model_uri if reg.decision.passed or reg.previous_version else reg.version.uri
        url = deploy(cfg, served_uri)
        answer = predict_http(url, [cfg.serve.sample_text], headers=headers)
        elapsed = time.time() - started
        summary = {
            "pipeline_run_id": parent.run_id,
            "dataset": dataset.uri,
            "model_dir": best.model_dir,
            "test_weighted_f1": evaluation.weighted_f1,
            "test_accuracy": evaluation.metrics["accuracy"],
            "test_macro_f1": evaluation.metrics["macro_f1"],
            "registered_model": reg.version.name,
            "registered_version": reg.version.version,
            "alias": reg.alias,
            "gate": {"passed": reg.decision.passed, "failed_rules": reg.decision.reasons},
            "served_model_uri": served_uri,
            "serve_url": url,
            "sample_response": answer,
            "elapsed_s": round(elapsed, 1),
            "tracking_uri": tracking_uri(cfg),
        }
        parent.log_metrics({"elapsed_s": elapsed, "test_weighted_f1": evaluation.weighted_f1})
        parent.log_dict(summary, "run_summary.json")
    (cfg.output_path / "run_summary.json").write_text(json.dumps(summary, indent=2))
    print(f"\nserved at {url}: POST /predict {{\"texts\": [\"{cfg.serve.sample_text}\"]}}\n"
          f"  -> {json.dumps(answer['predictions'][0]['label'])} (score {answer['predictions'][0]['score']:.3f}, "
          f"model version {answer['model_version']})")
    print(f"\ndone in {elapsed / 60:.1f} min; test weighted F1 {evaluation.weighted_f1:.4f}")
    print(f"MLflow UI: {ui_command(cfg)}")
    if cfg.serve.keep_running:
        print(f"serving at {url} until Ctrl-C")
        _block()
    return _gate_exit_code(cfg, reg)


def _block() -> None:
    while True:
        time.sleep(3600)
