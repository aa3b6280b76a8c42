"""The registry of tasks: `task:` in a config names one of these.

Each is an inputs half and a target half (`raylane.tasks.base`) and, through its target, an
engine (`raylane.tasks.engine`: scoring or generating); every stage reaches the task-specific
behaviour through `get_task(cfg.task)`. Adding a kind of
model means adding its `Inputs` or `Target` and a line here.
"""

from __future__ import annotations

from raylane.tasks.base import Inputs, Target, Task
from raylane.tasks.chat import ChatInputs
from raylane.tasks.engine import ENGINES, GENERATING, SCORING, Engine
from raylane.tasks.generation import Generation
from raylane.tasks.image import ImageInputs
from raylane.tasks.multi_label import MultiLabel
from raylane.tasks.numeric import Numeric
from raylane.tasks.preference import Preference, PreferenceInputs
from raylane.tasks.single_label import SingleLabel
from raylane.tasks.text import TextInputs

TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task("text_classification", TextInputs(), SingleLabel(), "one label per text"),
        Task("text_multilabel", TextInputs(), MultiLabel(), "any number of labels per text"),
        Task("text_regression", TextInputs(), Numeric(), "a number per text"),
        Task("image_classification", ImageInputs(), SingleLabel(), "one label per image"),
        Task("causal_lm", ChatInputs(), Generation(), "an answer per conversation (instruction fine-tuning)"),
        Task(
            "preference", PreferenceInputs(), Preference(), "a preferred and a rejected answer per conversation (DPO)"
        ),
    )
}
TASK_NAMES = tuple(TASKS)
# Validation metrics where lower is better, across tasks (what a checkpoint ranking needs to know).
LOWER_IS_BETTER = frozenset({"val_loss"} | {f"val_{m}" for t in TASKS.values() for m in t.target.lower_is_better})


def answer_alike(a: str, b: str) -> bool:
    """Whether models of tasks `a` and `b` answer alike (the same task, or one whose target
    rescores the other's models: a chat model and its preference-tuned successor), so that a
    deployment of one serves the other and either's champion is the other's to beat."""
    return get_task(a).compares_with(b) or get_task(b).compares_with(a)


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(TASKS)}") from None


__all__ = [
    "ENGINES",
    "GENERATING",
    "LOWER_IS_BETTER",
    "SCORING",
    "TASKS",
    "TASK_NAMES",
    "answer_alike",
    "Engine",
    "Inputs",
    "Target",
    "Task",
    "get_task",
]
