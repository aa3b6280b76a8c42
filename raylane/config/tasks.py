"""Checks across sections that depend on the task: a key that means nothing for the configured
task, or a metric it does not compute, fails at load like any other bad value, naming the key."""

from __future__ import annotations

from raylane.config.schema import ConfigError


def check_task_settings(cfg) -> None:
    from raylane.tasks import TASK_NAMES, get_task

    if cfg.task not in TASK_NAMES:
        raise ConfigError("task", f"must be one of {', '.join(map(repr, TASK_NAMES))}; got {cfg.task!r}")
    task = get_task(cfg.task)
    target, inputs = task.target, task.inputs
    metric = cfg.train.metric
    if metric != "auto" and metric not in task.metrics:
        raise ConfigError(
            "train.metric", f"{cfg.task} ranks by one of {', '.join(task.metrics)} (or auto); got {metric!r}"
        )
    applies = {
        "data.stratify": (cfg.data.stratify, target.stratifiable, "needs one label per row"),
        "data.labels": (bool(cfg.data.labels), target.has_label_set, "is for tasks that predict labels"),
        "data.label_separator": (
            bool(cfg.data.label_separator),
            target.kind == "multi_label",
            "is for text_multilabel",
        ),
        "gate.min_weighted_f1": (
            bool(cfg.gate.min_weighted_f1),
            target.kind == "single_label",
            "is for the single-label tasks (text_classification, image_classification)",
        ),
        "gate.min_micro_f1": (bool(cfg.gate.min_micro_f1), target.kind == "multi_label", "is for text_multilabel"),
        "gate.min_class_f1": (bool(cfg.gate.min_class_f1), target.has_label_set, "is for tasks with classes"),
        "gate.max_rmse": (bool(cfg.gate.max_rmse), target.kind == "numeric", "is for text_regression"),
        "gate.min_exact_match": (bool(cfg.gate.min_exact_match), target.kind == "generation", "is for causal_lm"),
        "gate.max_perplexity": (bool(cfg.gate.max_perplexity), target.kind == "generation", "is for causal_lm"),
        "data.prompt_template": (bool(cfg.data.prompt_template), inputs.kind == "chat", "is for causal_lm"),
        "serve.quantize": (
            cfg.serve.quantize != "none",
            target.keeps_outputs,
            "compresses classifier and regression replicas only",
        ),
        "serve.prune_amount": (
            cfg.serve.prune_amount > 0,
            target.keeps_outputs,
            "compresses classifier and regression replicas only",
        ),
        "train.loss": (cfg.train.loss != "auto", target.kind == "numeric", "is for text_regression"),
        "evaluate.slices": (bool(cfg.evaluate.slices), inputs.kind == "text", "are rules on texts"),
        "serve.feedback": (cfg.serve.feedback, inputs.kind == "text", "takes texts back for retraining"),
    }
    for key, (set_, fits, why) in applies.items():
        if set_ and not fits:
            raise ConfigError(key, f"{why}; the task is {cfg.task}")
    if cfg.data.prompt_template:
        _check_prompt_template(cfg.data.prompt_template, cfg.data.text_fields)


def _check_prompt_template(template: str, fields: list[str]) -> None:
    """Every {name} of the template is a prompt column, and the template formats."""
    import string

    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as err:
        raise ConfigError("data.prompt_template", f"is not a format string: {err}") from None
    unknown = sorted(n for n in names if n not in fields)
    if unknown:
        raise ConfigError(
            "data.prompt_template",
            f"names {', '.join(map(repr, unknown))}, which data.text_fields does not hold ({', '.join(fields)})",
        )
