"""The model card: what a person deciding whether to trust a registered version needs on one
page (data and its digest, test metrics, the gate's verdict, the training config, lineage).
Markdown, saved as the model directory's README.md and as the registry version's description."""

from __future__ import annotations

import json

from raylane.config import PipelineConfig
from raylane.dataset import DatasetInfo
from raylane.evaluate.report import Evaluation
from raylane.redact import redact


def model_card(
    cfg: PipelineConfig, dataset: DatasetInfo, evaluation: Evaluation, decision, champion, lineage: dict[str, str]
) -> str:
    m = dataset.manifest
    metrics = evaluation.metrics
    lines = [
        f"# {cfg.model.registered_name}",
        "",
        f"Text classifier fine-tuned from `{cfg.model.name_or_path}` by raylane on {len(dataset.label_names)} labels: "
        + ", ".join(f"`{name}`" for name in dataset.label_names)
        + ".",
        "",
        "## Data",
        f"- dataset: `{dataset.uri}` (digest `{dataset.digest}`)",
        f"- rows per split: {json.dumps(m.splits)}; quarantined at ingest: {m.counts.quarantined}",
        f"- text: fields {cfg.data.text_fields}, at most {cfg.data.max_length} tokens; personal data masked: "
        f"{', '.join(cfg.data.mask_pii) or 'no'}",
        "",
        f"## Test metrics ({evaluation.rows} rows)",
        "| metric | value |",
        "|---|---|",
        *(
            f"| {k} | {metrics[k]:.4f} |"
            for k in (
                "accuracy",
                "weighted_f1",
                "macro_f1",
                "weighted_precision",
                "weighted_recall",
                "roc_auc",
                "average_precision",
            )
            if k in metrics
        ),
        "",
        "| class | precision | recall | F1 | support |",
        "|---|---|---|---|---|",
        *(
            f"| {name} | {r.precision:.3f} | {r.recall:.3f} | {r.f1:.3f} | {r.support} |"
            for name, r in evaluation.per_class.items()
        ),
    ]
    if evaluation.slices:
        nan = float("nan")
        lines += ["", "| slice | rows | accuracy | weighted F1 |", "|---|---|---|---|"]
        lines += [
            f"| {name} | {r.rows} | {r.metrics.get('accuracy', nan):.3f} | {r.metrics.get('weighted_f1', nan):.3f} |"
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
