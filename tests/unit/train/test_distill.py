"""Distillation's loss, the student cut from its teacher, and the teacher's checks before Ray."""

import math
import shutil

import numpy as np
import pytest
import torch

from raylane.distill import keep_layers, pin_teacher
from raylane.errors import ConfigError
from raylane.models import load_classifier, load_tokenizer
from raylane.tasks import get_task
from raylane.tasks.saved import SavedTask
from raylane.train.optim import Precision, loss_of

CPU = Precision(torch.device("cpu"), "fp32")
LOGITS = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, -0.3]])
TEACHER = torch.tensor([[1.0, 0.0, -1.0], [-0.5, 1.5, 0.0]])


def _softmax(row, t):
    e = [math.exp(v / t) for v in row]
    return [v / sum(e) for v in e]


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_single_label_soft_loss_is_the_tempered_kl_times_t_squared(temperature):
    target = get_task("text_classification").target
    expected = 0.0
    for s, t in zip(LOGITS.tolist(), TEACHER.tolist()):
        p_s, p_t = _softmax(s, temperature), _softmax(t, temperature)
        expected += sum(pt * (math.log(pt) - math.log(ps)) for ps, pt in zip(p_s, p_t))
    got = target.soft_loss(LOGITS, TEACHER, temperature)
    assert float(got) == pytest.approx(expected * temperature**2, rel=1e-5)


def test_single_label_soft_targets_are_the_teachers_logits_up_to_a_constant():
    target = get_task("text_classification").target
    outputs = target.outputs(TEACHER.numpy(), {})
    soft = torch.from_numpy(target.soft_targets(outputs, {}))
    # Same distribution at every temperature: the student that says what the teacher says has no soft loss.
    for t in (1.0, 3.0):
        assert float(target.soft_loss(TEACHER, soft, t)) == pytest.approx(0.0, abs=1e-5)


def test_multi_label_soft_loss_is_per_label_cross_entropy_against_tempered_probabilities():
    target = get_task("text_multilabel").target
    t = 2.0
    expected = 0.0
    for s_row, t_row in zip(LOGITS.tolist(), TEACHER.tolist()):
        for s, q in zip(s_row, t_row):
            p, y = 1 / (1 + math.exp(-s / t)), 1 / (1 + math.exp(-q / t))
            expected -= y * math.log(p) + (1 - y) * math.log(1 - p)
    assert float(target.soft_loss(LOGITS, TEACHER, t)) == pytest.approx(expected * t * t, rel=1e-5)
    # The teacher's probabilities go back to its logits.
    soft = target.soft_targets(target.outputs(TEACHER.numpy(), {}), {})
    np.testing.assert_allclose(soft, TEACHER.numpy(), atol=1e-4)


def test_regression_soft_loss_is_squared_error_against_the_standardised_prediction():
    target = get_task("text_regression").target
    extras = {"target_mean": 10.0, "target_scale": 2.0}
    predictions = np.array([[12.0], [9.0]])  # the teacher's outputs, in the data's units
    soft = target.soft_targets(predictions, extras)
    np.testing.assert_allclose(soft.reshape(-1), [1.0, -0.5])
    logits = torch.tensor([[0.5], [0.0]])
    assert float(target.soft_loss(logits, torch.from_numpy(soft), 3.0)) == pytest.approx(0.5**2 + 0.5**2)


def _batch(tiny_model):
    tokenizer = load_tokenizer(str(tiny_model))
    enc = tokenizer([f"text {i} " + "word " * i for i in range(4)], padding=True, return_tensors="pt")
    return {
        "input_ids": enc["input_ids"],
        "attention_mask": enc["attention_mask"],
        "labels": torch.tensor([0, 1, 2, 1]),
        "teacher": torch.randn(4, 3),
    }


def test_alpha_weighs_the_soft_loss_against_the_plain_one(tiny_model):
    torch.manual_seed(0)
    model = load_classifier(str(tiny_model), ["a", "b", "c"]).eval()
    task = get_task("text_classification")
    batch = _batch(tiny_model)
    plain_batch = {k: v for k, v in batch.items() if k != "teacher"}
    plain, logits = loss_of(model, plain_batch, task, {}, CPU)
    soft = task.target.soft_loss(logits, batch["teacher"], 2.0)

    def mixed(alpha):
        settings = {"distill_alpha": alpha, "distill_temperature": 2.0}
        return float(loss_of(model, batch, task, settings, CPU)[0])

    assert mixed(0.0) == pytest.approx(float(plain), rel=1e-6)
    assert mixed(1.0) == pytest.approx(float(soft), rel=1e-6)
    assert mixed(0.3) == pytest.approx(0.3 * float(soft) + 0.7 * float(plain), rel=1e-6)
    assert float(soft) != pytest.approx(float(plain))  # the mix can tell them apart


def test_a_student_of_every_teacher_layer_answers_as_the_teacher(tiny_model):
    torch.manual_seed(0)
    teacher = load_classifier(str(tiny_model), ["a", "b", "c"]).eval()
    batch = _batch(tiny_model)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        expected = teacher(**inputs).logits
    depth = teacher.config.num_hidden_layers
    student = keep_layers(teacher, list(range(depth)))
    with torch.no_grad():
        torch.testing.assert_close(student(**inputs).logits, expected)


def test_a_cut_student_keeps_the_chosen_layers_and_saves_as_a_smaller_model(tiny_model, tmp_path):
    torch.manual_seed(0)
    teacher = load_classifier(str(tiny_model), ["a", "b", "c"]).eval()
    last = teacher.config.num_hidden_layers - 1
    kept_weight = teacher.bert.encoder.layer[last].output.dense.weight.detach().clone()
    student = keep_layers(teacher, [last])
    assert student.config.num_hidden_layers == 1 and len(student.bert.encoder.layer) == 1
    torch.testing.assert_close(student.bert.encoder.layer[0].output.dense.weight, kept_weight)
    student.save_pretrained(tmp_path / "student")
    reloaded = load_classifier(str(tmp_path / "student"), ["a", "b", "c"]).eval()
    batch = _batch(tiny_model)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, student(**inputs).logits)


@pytest.fixture
def teacher_dir(tiny_model, tmp_path):
    """A model directory that says it is a 3-class text classifier."""
    path = tmp_path / "teacher"
    shutil.copytree(tiny_model, path)
    load_classifier(str(tiny_model), ["a", "b", "c"]).save_pretrained(path)
    SavedTask("text_classification", ["a", "b", "c"]).write(path)
    return path


def _config_error(make_cfg, *overrides):
    with pytest.raises(ConfigError) as err:
        pin_teacher(make_cfg(*overrides))
    return err.value


def test_a_missing_teacher_fails_naming_the_key(make_cfg, tmp_path):
    err = _config_error(make_cfg, f"train.distill.teacher={tmp_path / 'nowhere'}")
    assert err.key == "train.distill.teacher" and "nowhere" in str(err)


def test_a_teacher_of_another_task_fails_naming_the_key(make_cfg, teacher_dir):
    SavedTask("text_multilabel", ["a", "b", "c"]).write(teacher_dir)
    err = _config_error(make_cfg, f"train.distill.teacher={teacher_dir}")
    assert err.key == "train.distill.teacher" and "text_multilabel" in str(err)


def test_a_teacher_of_another_label_set_fails_naming_the_key(make_cfg, teacher_dir):
    err = _config_error(make_cfg, f"train.distill.teacher={teacher_dir}", "data.labels=[a, b, z]")
    assert err.key == "train.distill.teacher" and "'z'" in str(err)


def test_layers_the_teacher_lacks_fail_naming_the_key(make_cfg, teacher_dir):
    err = _config_error(make_cfg, f"train.distill.teacher={teacher_dir}", "train.distill.student_layers=[0, 7]")
    assert err.key == "train.distill.student_layers" and "[7]" in str(err)


def test_a_good_teacher_is_pinned_and_a_cut_student_starts_from_it(make_cfg, teacher_dir):
    cfg = pin_teacher(make_cfg(f"train.distill.teacher={teacher_dir}", "train.distill.student_layers=[1]"))
    assert cfg.train.distill.teacher == str(teacher_dir.resolve())
    assert cfg.model.name_or_path == str(teacher_dir.resolve())
