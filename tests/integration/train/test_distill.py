"""Distillation on a real local Ray: the teacher's soft targets computed once and reused, a
student cut from the teacher trained on them, and the teacher scored beside it at evaluation."""

import dataclasses

import numpy as np
import pyarrow.parquet as pq
import pytest

from raylane.dataset import DatasetInfo
from raylane.distill import pin_teacher
from raylane.errors import ConfigError
from raylane.evaluate.gate import decide
from raylane.evaluate.stage import run_evaluation
from raylane.predictor import Predictor
from raylane.sources import join
from raylane.train.distill import ensure_soft_targets
from raylane.train.driver import fit


@pytest.fixture(scope="module")
def distill_cfg(smoke_cfg_factory, trained_classifier):
    return pin_teacher(
        smoke_cfg_factory(
            "resources.num_workers=0",
            "train.epochs=2",
            f"train.distill.teacher={trained_classifier.model_dir}",
            "train.distill.student_layers=[1]",
            "train.distill.alpha=0.7",
        )
    )


def test_soft_targets_are_the_teachers_outputs_computed_once_per_teacher(
    distill_cfg, smoke_dataset, trained_classifier, tmp_path
):
    first = ensure_soft_targets(distill_cfg, smoke_dataset)
    second = ensure_soft_targets(distill_cfg, smoke_dataset)
    assert not first["reused"] and second["reused"] and second["uri"] == first["uri"]
    assert first["uri"].startswith(smoke_dataset.uri)  # beside the shards
    table = pq.read_table(join(first["uri"], "split=train")).to_pandas()
    assert len(table) == smoke_dataset.manifest.splits["train"]
    # The stored targets are the teacher's log-probabilities of each row (dataset label order).
    teacher = Predictor(trained_classifier.model_dir)
    rows = table.head(8)
    outputs, _ = teacher.scores(list(rows["text"]))
    np.testing.assert_allclose(np.exp(np.stack(rows["teacher"])), outputs, atol=1e-4)
    # Other data (another dataset digest) gets targets of its own.
    other = smoke_dataset.manifest.model_copy(update={"source_digest": "other-data"})
    third = ensure_soft_targets(distill_cfg, DatasetInfo(smoke_dataset.uri, other))
    assert not third["reused"] and third["uri"] != first["uri"]


def test_a_cut_student_trains_on_the_soft_targets_and_is_evaluated_beside_its_teacher(
    distill_cfg, smoke_dataset, trained_classifier, tmp_path
):
    # Two DDP workers: each reads its shard of the rows, soft targets with them.
    ddp = dataclasses.replace(
        distill_cfg,
        resources=dataclasses.replace(distill_cfg.resources, num_workers=2, cpus_per_worker=1),
    )
    result = fit(ddp, smoke_dataset, name="student")
    student = Predictor(result.model_dir)
    assert student.model.config.num_hidden_layers == 1  # one layer of the 2-layer teacher
    assert result.metrics["val_macro_f1"] > 0.3  # it learned: a constant answer scores ~0.17 on 4 classes

    evaluation = run_evaluation(distill_cfg, result.model_dir, smoke_dataset, tmp_path / "evaluation")
    teacher_scores = evaluation.teacher
    assert teacher_scores is not None and teacher_scores.teacher == distill_cfg.train.distill.teacher
    alone = run_evaluation(
        dataclasses.replace(
            distill_cfg, train=dataclasses.replace(distill_cfg.train, distill=type(distill_cfg.train.distill)())
        ),
        trained_classifier.model_dir,
        smoke_dataset,
        tmp_path / "teacher",
    )
    assert teacher_scores.metrics["weighted_f1"] == pytest.approx(alone.metrics["weighted_f1"])
    gap = evaluation.metrics["weighted_f1"] - alone.metrics["weighted_f1"]
    assert teacher_scores.student_delta_points["weighted_f1"] == pytest.approx(100 * gap, abs=1e-3)

    # The gate holds the student to its teacher when asked to.
    strict = dataclasses.replace(distill_cfg.gate, max_teacher_gap=max(0.0, -gap) / 2 if gap < 0 else 0.0)
    loose = dataclasses.replace(distill_cfg.gate, max_teacher_gap=1.0)
    assert decide(loose, evaluation, None).passed
    rule = next(r for r in decide(strict, evaluation, None).rules if r.key == "gate.max_teacher_gap")
    assert rule.passed == (gap >= 0)


def test_a_teacher_of_another_label_set_fails_before_the_pass_starts(distill_cfg, smoke_dataset):
    renamed = smoke_dataset.manifest.model_copy(update={"labels": ["w", "x", "y", "z"]})
    with pytest.raises(ConfigError) as err:
        ensure_soft_targets(distill_cfg, DatasetInfo(smoke_dataset.uri, renamed))
    assert err.value.key == "train.distill.teacher"
