"""The commands: each opens one MLflow parent run, runs its stages nested under it, and prints
what a person needs next. Stages pass URIs (dataset dir, model dir, models:/ URI), so each
command also runs alone from the output of an earlier one."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from raylane.config import PipelineConfig
from raylane.dataset import DatasetInfo, open_dataset
from raylane.redact import redacted
from raylane.runtime import init_ray, release_stray_placement_groups
from raylane.tasks import get_task
from raylane.tracking import RunRef, start_run, tracking_uri, ui_command


def _git_commit() -> str:
    """The commit of the code running, when it runs from a git checkout ("unknown" from a wheel)."""
    import raylane

    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(raylane.__file__).parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@contextlib.contextmanager
def pipeline_run(cfg: PipelineConfig, command: str) -> Iterator[RunRef]:
    name = cfg.tracking.run_name or f"{command}-{time.strftime('%Y%m%d-%H%M%S')}"
    commit = _git_commit()
    tags = {"raylane.command": command, "git_commit": commit, "task": cfg.task}
    if commit != "unknown":
        tags["mlflow.source.git.commit"] = commit  # the UI shows it beside the source
    with start_run(cfg, name, tags=tags, stage="pipeline", source=f"raylane {command}") as run:
        run.log_params(cfg.flat())
        run.log_dict(cfg.to_dict(), "config.json")  # redacted on the way, like every value logged
        yield run


def _dataset(cfg: PipelineConfig, args: argparse.Namespace) -> DatasetInfo:
    return open_dataset(getattr(args, "dataset", None) or cfg.data.output_uri or str(cfg.output_path / "dataset"))


# --- stages, each a nested run ----------------------------------------------------------------


def ingest_stage(cfg: PipelineConfig, parent: RunRef, force: bool = False, tasks=None) -> DatasetInfo:
    from raylane.ingest.stage import format_summary, run_ingest

    with start_run(cfg, "ingest", parent) as stage_run:
        result = run_ingest(cfg, stage_run, force=force, tasks=tasks)
    print(f"\ningest:\n{format_summary(result)}")
    return result.dataset


def train_stage(cfg: PipelineConfig, dataset: DatasetInfo, parent: RunRef):
    from raylane.train.driver import fit

    with start_run(cfg, "train", parent, tags={"dataset": dataset.uri}) as stage_run:
        dataset.log_inputs(stage_run, ("train", "val"))
        stage_run.log_params({f"train.{k}": v for k, v in cfg.to_dict()["train"].items()})
        _soft_targets(cfg, dataset, stage_run)
        result = dataclasses.replace(fit(cfg, dataset, stage_run), run_id=stage_run.run_id)
    print(
        f"\ntrain: best {cfg.train.metric} {result.metrics[cfg.train.metric]:.4f} "
        f"(epoch {result.metrics.get('epoch')}) -> {result.model_dir}"
    )
    return result


def tune_stage(cfg: PipelineConfig, dataset: DatasetInfo, parent: RunRef):
    from raylane.tune.sweep import run_sweep

    with start_run(cfg, "sweep", parent, tags={"dataset": dataset.uri}) as stage_run:
        dataset.log_inputs(stage_run, ("train", "val"))
        _soft_targets(cfg, dataset, stage_run)  # once, before the trials: each of them reads them
        result = run_sweep(cfg, dataset, stage_run)
    result = dataclasses.replace(result, best=dataclasses.replace(result.best, run_id=stage_run.run_id))
    print(f"\nsweep: {len(result.trials)} trials")
    for t in result.trials:
        score = t.best if t.best is None else round(t.best, 4)
        print(
            f"  {t.trial_id}  {t.params}  best {t.metric} {score}  "
            f"epochs {t.epochs}{'' if t.completed else '  (stopped early)'}"
        )
    print(f"  best: {result.best_params} -> {result.best.model_dir}")
    return result.best


def _soft_targets(cfg: PipelineConfig, dataset: DatasetInfo, stage_run: RunRef) -> None:
    """A distilled model's teacher outputs on the training split (computed once per teacher
    version), and the teacher on the run: its pinned version is the student's lineage."""
    if not cfg.train.distill.teacher:
        return
    from raylane.train.distill import ensure_soft_targets

    record = ensure_soft_targets(cfg, dataset)
    stage_run.set_tags({"raylane.distill.teacher": record["teacher"], "raylane.distill.soft_targets": record["uri"]})
    stage_run.log_metrics({"soft_targets_s": 0.0 if record["reused"] else record["seconds"]})


def evaluate_stage(cfg: PipelineConfig, model_dir: str, dataset: DatasetInfo, parent: RunRef):
    from raylane.evaluate.report import format_table
    from raylane.evaluate.stage import run_evaluation

    with start_run(cfg, "evaluate", parent, tags={"model_dir": model_dir}) as stage_run:
        dataset.log_inputs(stage_run, ("test",))
        evaluation = run_evaluation(cfg, model_dir, dataset, cfg.output_path / "evaluation", stage_run)
    print(f"\nevaluate (test split):\n{format_table(evaluation)}\n  report: {evaluation.report_path}")
    return evaluation, stage_run.run_id


def register_stage(
    cfg: PipelineConfig, model_dir: str, dataset: DatasetInfo, evaluation, parent: RunRef, lineage: dict[str, str]
):
    """Re-score the champion on the same test split, gate, register, move aliases."""
    from raylane.evaluate.promote import format_decision, promote, score_champion

    with start_run(cfg, "register", parent) as stage_run:
        champion = score_champion(cfg, dataset, stage_run.tracking_uri, cfg.output_path / "evaluation" / "champion")
        promotion = promote(
            cfg,
            stage_run,
            model_dir,
            dataset,
            evaluation,
            champion,
            lineage={"pipeline_run_id": parent.run_id, "git_commit": _git_commit(), **lineage},
        )
    print(f"\nregister: {format_decision(promotion)}")
    return promotion


# --- commands ---------------------------------------------------------------------------------


def _check_sources(cfg: PipelineConfig):
    """The checked input files: whole-file problems (empty, unreadable, a column missing) fail
    here, before Ray starts."""
    from raylane.ingest.inputs import source_tasks

    return source_tasks(cfg)


def ingest_command(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    tasks = _check_sources(cfg)
    init_ray()
    with pipeline_run(cfg, "ingest") as parent:
        ingest_stage(cfg, parent, force=args.force, tasks=tasks)
    return 0


def train_command(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    return _on_dataset(cfg, args, "train", train_stage)


def tune_command(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    return _on_dataset(cfg, args, "tune", tune_stage)


def _on_dataset(cfg: PipelineConfig, args: argparse.Namespace, command: str, stage) -> int:
    dataset = _dataset(cfg, args)  # a missing dataset fails before Ray starts
    init_ray()
    with pipeline_run(cfg, command) as parent:
        dataset.log_inputs(parent, ("train", "val"))
        stage(cfg, dataset, parent)
    return 0


def evaluate_command(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    from raylane.registry import resolve_model

    dataset = _dataset(cfg, args)
    resolved = resolve_model(args.model or cfg.serve_model_uri, tracking_uri(cfg))
    init_ray()
    with pipeline_run(cfg, "evaluate") as parent:
        dataset.log_inputs(parent, ("test",))
        evaluation, evaluate_run_id = evaluate_stage(cfg, resolved.model_dir, dataset, parent)
        if args.register:
            promotion = register_stage(
                cfg, resolved.model_dir, dataset, evaluation, parent, {"evaluate_run_id": evaluate_run_id}
            )
            if promotion.version.model_id:
                parent.log_model_output(promotion.version.model_id)
            return _gate_exit_code(cfg, promotion)
    return 0


def _gate_exit_code(cfg: PipelineConfig, promotion) -> int:
    """A rejected model is a result, not an error, unless the config says to fail on it."""
    return 1 if cfg.gate.fail_on_reject and not promotion.decision.passed else 0


def serve_command(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    from raylane.serve.deploy import client_headers, deploy

    client_headers(cfg)  # a missing or empty API-key source fails now, not in every replica
    init_ray()
    url = deploy(cfg, args.model)
    route = get_task(cfg.task).engine.route
    print(f"serving {args.model or cfg.serve_model_uri} at {url}  ({route}, GET /healthz, /model, /docs); Ctrl-C stops")
    _block()
    return 0


def predict_command(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    from raylane.registry import resolve_model
    from raylane.serve.batch import check_output_dir, predict_files
    from raylane.serve.generate_files import QUARANTINE_DIR

    out = Path(args.output or cfg.output_path / "predictions")
    check_output_dir(out, args.overwrite)  # before the model is fetched and Ray starts
    resolved = resolve_model(args.model or cfg.serve_model_uri, tracking_uri(cfg))
    init_ray()
    rows, quarantined = predict_files(cfg, resolved.model_dir, args.input, out, args.overwrite)
    kept = "".join(f", {n} quarantined ({reason})" for reason, n in sorted(quarantined.items()))
    where = f" ({out / QUARANTINE_DIR})" if quarantined else ""
    print(f"predict: {rows} rows {get_task(cfg.task).engine.predicted} -> {out}{kept}{where}")
    return 0


def train_to_registry(cfg: PipelineConfig, parent: RunRef, tasks, force: bool = False):
    """Ingest -> sweep (or train) -> evaluate -> gate and register, under `parent`: what `run`
    does before it serves, and what each cycle of `loop` does. Returns (dataset, best training
    result, evaluation, promotion); the parent run's row gets the headline."""
    started = time.time()
    dataset = ingest_stage(cfg, parent, force=force, tasks=tasks)
    dataset.log_inputs(parent)
    best = tune_stage(cfg, dataset, parent) if cfg.sweep.enabled else train_stage(cfg, dataset, parent)
    release_stray_placement_groups()  # or evaluate may wait forever for the CPUs they hold
    evaluation, evaluate_run_id = evaluate_stage(cfg, best.model_dir, dataset, parent)
    promotion = register_stage(
        cfg,
        best.model_dir,
        dataset,
        evaluation,
        parent,
        {
            "training_run_id": best.run_id,
            "evaluate_run_id": evaluate_run_id,
            **({"distill_teacher": cfg.train.distill.teacher} if cfg.train.distill.teacher else {}),
        },
    )
    _headline_on_parent(parent, promotion, evaluation, time.time() - started, best.run_id)
    return dataset, best, evaluation, promotion


def loop_command(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    from raylane.pipelines.loop import run_loop

    return run_loop(cfg, once=args.once)


def run_command(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    from raylane.serve.deploy import client_headers, deploy

    started = time.time()
    tasks = _check_sources(cfg)
    headers = client_headers(cfg)  # a missing or empty API-key source fails now, not after training
    init_ray()
    with pipeline_run(cfg, "run") as parent:
        dataset, best, evaluation, promotion = train_to_registry(cfg, parent, tasks, force=args.force)
        # A rejected model never displaces the champion; with no champion yet, it is all there is.
        served_uri = (
            cfg.serve_model_uri if promotion.decision.passed or promotion.previous_version else promotion.version.uri
        )
        # Read before deploying: the replicas may take every CPU, and a Ray Data read would wait.
        row = dataset.read_split("test").take(1)[0]
        url = deploy(cfg, served_uri)
        request_line, answer, answer_line = _first_request(cfg, row, url, headers)
        elapsed = time.time() - started
        headline = get_task(cfg.task).target.headline
        summary = {
            "pipeline_run_id": parent.run_id,
            "task": cfg.task,
            "dataset": dataset.uri,
            "model_dir": best.model_dir,
            "headline_metric": f"test_{headline}",
            **{f"test_{k}": v for k, v in evaluation.metrics.items()},
            "registered_model": promotion.version.name,
            "registered_version": promotion.version.version,
            "alias": promotion.alias,
            "gate": {"passed": promotion.decision.passed, "failed_rules": promotion.decision.reasons},
            "served_model_uri": served_uri,
            "serve_url": url,
            "sample_response": answer,
            "elapsed_s": round(elapsed, 1),
            "tracking_uri": tracking_uri(cfg),
        }
        parent.log_metrics({"elapsed_s": elapsed})  # the whole run's, serving included
        parent.log_dict(summary, "run_summary.json")
    (cfg.output_path / "run_summary.json").write_text(json.dumps(redacted(summary), indent=2))
    print(f"\nserved at {url}: {request_line}\n  -> {answer_line}")
    print(f"\ndone in {elapsed / 60:.1f} min; test {headline} {evaluation.metrics[headline]:.4f}")
    print(f"MLflow UI: {ui_command(cfg, parent.experiment_id)}")
    if cfg.serve.keep_running:
        print(f"serving at {url} until Ctrl-C")
        _block()
    return _gate_exit_code(cfg, promotion)


def _headline_on_parent(parent: RunRef, promotion, evaluation, elapsed: float, training_run_id: str) -> None:
    """How it went, on the parent run's row of the runs table: the test metrics, the wall time,
    the gate's verdict and the champion; its Models column links the registered model, as does
    the training run's (the run whose checkpoint it is)."""
    parent.log_metrics({"elapsed_s": elapsed, **{f"test_{k}": v for k, v in evaluation.metrics.items()}})
    serving_now = promotion.alias not in ("challenger", "rejected")  # a challenger walks the canary first
    champion = promotion.version.version if serving_now else promotion.previous_version
    parent.set_tags(
        {
            "gate": "pass" if promotion.decision.passed else "fail",
            "registered_version": promotion.version.version,
            "alias": promotion.alias,
            "champion_version": champion or "none",
        }
    )
    if promotion.version.model_id:
        parent.log_model_output(promotion.version.model_id)
        if training_run_id:
            dataclasses.replace(parent, run_id=training_run_id).log_model_output(promotion.version.model_id)


def _first_request(cfg: PipelineConfig, row: dict[str, Any], url: str, headers: dict[str, str]):
    """The freshly served model's first request: (the request in words, the answer, the answer in
    words), by the engine that answers it."""
    return FIRST_REQUESTS[get_task(cfg.task).engine.name](cfg, row, url, headers)


def _first_chat(cfg: PipelineConfig, row: dict[str, Any], url: str, headers: dict[str, str]):
    """A chat model is asked the first test conversation (`row`), through the chat API."""
    from raylane.serve.deploy import chat_http

    messages = json.loads(row["text"])
    answer = chat_http(url, messages, headers=headers)
    shown = json.dumps({"messages": messages}, ensure_ascii=False)
    reply = answer["choices"][0]["message"]["content"]
    return f"POST /v1/chat/completions {shown[:300]}", answer, f"{reply!r} ({answer['model']})"


def _first_prediction(cfg: PipelineConfig, row: dict[str, Any], url: str, headers: dict[str, str]):
    """A scoring model is asked the configured sample text, else the first test row's input."""
    from raylane.serve.deploy import predict_http

    field, sample, shown = _sample_request(cfg, row)
    answer = predict_http(url, [sample], headers=headers, field=field)
    first = {k: v for k, v in answer["predictions"][0].items() if k != "prediction_id"}
    request = f'POST /predict {{"{field}": [{shown}]}}'
    return request, answer, f"{json.dumps(first)[:300]} (model version {answer['model_version']})"


def _sample_request(cfg: PipelineConfig, row: dict[str, Any]) -> tuple[str, Any, str]:
    """(request field, one input, how to show it) for the served model's first request: the
    configured sample text, else the first row of the test split (an image as base64)."""
    import base64

    inputs = get_task(cfg.task).inputs
    field = next(iter(inputs.request_model().model_fields))
    item = row[inputs.column]
    if isinstance(item, str) and cfg.serve.sample_text:
        return field, cfg.serve.sample_text, json.dumps(cfg.serve.sample_text)
    if isinstance(item, bytes):
        return field, base64.b64encode(item).decode(), f"<{row['text'] or 'the first test image'}, base64>"
    return field, item, json.dumps(item)


FIRST_REQUESTS = {"scoring": _first_prediction, "generating": _first_chat}


def _block() -> None:
    while True:
        time.sleep(3600)


# The CLI's commands, by name (raylane.pipelines.cli).
def rollout_command(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    """The rollout as the registry records it; promote or abort it by hand (the serving app's
    controller sees the aliases move at its next tick)."""
    from raylane import rollout

    uri, name = tracking_uri(cfg), cfg.model.registered_name
    pointed, record = rollout.registry_state(uri, name)
    challenger = pointed.get(rollout.CHALLENGER)
    if args.action != "status":
        if not challenger:
            print(f"raylane: error: {name} has no challenger to {args.action}", file=sys.stderr)
            return 2
        if record is None or not record.walks(challenger):
            record = rollout.Rollout(version=challenger, champion=pointed.get(cfg.gate.alias, ""))
        if args.action == "promote":
            record = rollout.promote(uri, name, record, "promoted by hand", cfg.gate.alias)
        else:
            record = rollout.roll_back(uri, name, record, "aborted by hand", rollout.ABORTED)
        pointed = rollout.aliases(uri, name)
    print(json.dumps({"model": name, "aliases": pointed, "rollout": record and dataclasses.asdict(record)}, indent=2))
    return 0


COMMANDS = {
    "run": run_command,
    "ingest": ingest_command,
    "train": train_command,
    "tune": tune_command,
    "evaluate": evaluate_command,
    "serve": serve_command,
    "predict": predict_command,
    "rollout": rollout_command,
    "loop": loop_command,
}
