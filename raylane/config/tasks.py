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
        "train.loss": (cfg.train.loss != "auto", target.kind == "numeric", "is for text_regression"),
        "evaluate.slices": (bool(cfg.evaluate.slices), inputs.kind == "text", "are rules on texts"),
        "serve.feedback": (cfg.serve.feedback, inputs.kind == "text", "takes texts back for retraining"),
    }
    for key, (set_, fits, why) in applies.items():
        if set_ and not fits:
            raise ConfigError(key, f"{why}; the task is {cfg.task}")
