"""The model card: what a person deciding whether to trust a registered version needs on one
page (data and its digest, test metrics, the gate's verdict, the training config, lineage).
Markdown, saved as the model directory's README.md and as the registry version's description."""

from __future__ import annotations

import json

from raylane.config import PipelineConfig
from raylane.dataset import DatasetInfo
from raylane.evaluate.report import Evaluation
from raylane.redact import redact
from raylane.tasks import get_task


def model_card(
    cfg: PipelineConfig, dataset: DatasetInfo, evaluation: Evaluation, decision, champion, lineage: dict[str, str]
) -> str:
    m = dataset.manifest
    metrics = evaluation.metrics
    task = get_task(cfg.task)
    what = (
        f"on {len(dataset.label_names)} labels: " + ", ".join(f"`{n}`" for n in dataset.label_names)
        if (dataset.label_names)
        else f"predicting `{cfg.data.label_field}`"
    )
    lines = [
        f"# {cfg.model.registered_name}",
        "",
        f"A {task.name} model ({task.description}) fine-tuned from `{cfg.model.name_or_path}` by raylane {what}.",
        "",
        f"- base model: `{cfg.model.name_or_path}`; its license: {model_license(cfg.model.name_or_path)} "
        "(a fine-tuned model inherits its base's terms)",
        "",
        "## Data",
        f"- dataset: `{dataset.uri}` (digest `{dataset.digest}`)",
        f"- rows per split: {json.dumps(m.splits)}; quarantined at ingest: {m.counts.quarantined}",
        f"- {task.inputs.kind}: {task.inputs.describe(cfg.data)}",
        "",
        f"## Test metrics ({evaluation.rows} rows)",
        "| metric | value |",
        "|---|---|",
        *(f"| {k} | {v:.4f} |" for k, v in metrics.items()),
    ]
    teacher = evaluation.teacher
    if teacher:
        distill = cfg.train.distill
        lines += [
            "",
            f"Distilled from `{teacher.teacher}` (alpha {distill.alpha}, temperature {distill.temperature}"
            + (f", layers {distill.student_layers} of it" if distill.student_layers else "")
            + "); the teacher on the same rows:",
            "",
            "| metric | teacher | student - teacher (points) |",
            "|---|---|---|",
            *(f"| {k} | {v:.4f} | {teacher.student_delta_points[k]:+.2f} |" for k, v in teacher.metrics.items()),
        ]
    if evaluation.per_class:
        lines += ["", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
        lines += [
            f"| {name} | {r.precision:.3f} | {r.recall:.3f} | {r.f1:.3f} | {r.support} |"
            for name, r in evaluation.per_class.items()
        ]
    if evaluation.slices:
        names = list(task.target.metrics)
        lines += ["", "| slice | rows | " + " | ".join(names) + " |", "|---" * (len(names) + 2) + "|"]
        lines += [
            f"| {name} | {r.rows} | " + " | ".join(f"{r.metrics.get(k, float('nan')):.3f}" for k in names) + " |"
            for name, r in evaluation.slices.items()
        ]
    lines += ["", f"## Gate: {'passed' if decision.passed else 'rejected'}"]
    lines += [f"- {'ok' if r.passed else 'FAILED'}: {r.detail}" for r in decision.rules] or ["- no rules enabled"]
    if champion is not None and champion.evaluation is None:
        lines.append(f"- champion version {champion.version} not compared: {champion.note}")
    lines += [
        "",
        "## Training",
        "```json",
        json.dumps({"train": cfg.to_dict()["train"]}, indent=2),
        "```",
        "",
        "## Lineage",
        *(f"- {k}: `{v}`" for k, v in sorted(lineage.items())),
        "",
    ]
    return redact("\n".join(lines))  # the card goes to the registry, MLflow and the model directory


def model_license(name_or_path: str) -> str:
    """The base model's license as its package (a model wheel) or its model card's front matter
    (`license:`) states it; else a pointer to where to look."""
    from pathlib import Path

    from raylane.models import resolve_model_source

    if name_or_path.endswith(".gguf") and "/" in name_or_path:
        from importlib.metadata import PackageNotFoundError, metadata

        try:
            found = metadata(name_or_path.split("/", 1)[0].replace("_", "-")).get("License")
        except PackageNotFoundError:
            found = None
        if found:
            return f"{found} (package metadata)"
    try:
        readme = Path(resolve_model_source(name_or_path)) / "README.md"
        for line in readme.read_text(errors="replace").splitlines()[:40] if readme.is_file() else []:
            if line.startswith("license:"):
                return f"{line.split(':', 1)[1].strip()} (model card)"
    except (OSError, ValueError):
        pass
    return "not stated in the model files; check the base model's card"
