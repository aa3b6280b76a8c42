"""distill_speedup: a student distilled from the embedded default's model against that teacher,
served the same way, and against the same student size trained without a teacher.

The teacher is trained here as the default config trains it (configs/default.yaml, no sweep:
MiniLM-L6, 6 layers, 6 epochs). The student is configs/distill.yaml's: layers [0, 5] of the
teacher, trained on the teacher's soft targets and the labels (`train.distill`), with the
pipeline's own ingest, `fit` and evaluate stage (which scores the teacher on the same holdout
beside it: the F1 figures are those the pipeline logs). What distillation adds: the same 2
layers cut from the pretrained MiniLM (no teacher), trained on the labels alone with the same
settings.

Throughput: ok requests/s at concurrency 32 (one text per request, the holdout's texts cycled),
one replica of 2 CPUs, batching on (max_batch_size 16), each side redeployed per round and the
sides alternating (teacher, student, student int8, and an app on the same routes that answers
without a model: the ceiling of this path on this machine); medians of the rounds. Direct-call p50:
`Predictor.predict([text])` over the holdout's texts in this process, one at a time.
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

from bench import REPO_ROOT
from bench.harness import benchmark
from bench.serve import holdout, load_average, say, serve_session, throughput_side

STUDENT_LAYERS = [0, 5]
CONFIG = REPO_ROOT / "configs" / "distill.yaml"


def _direct_p50_ms(model_dir: str, texts: list[str]) -> float:
    from raylane.predictor import Predictor

    predictor = Predictor(model_dir)
    for text in texts[:10]:
        predictor.predict([text])
    times = []
    for text in texts:
        started = time.perf_counter()
        predictor.predict([text])
        times.append(1000 * (time.perf_counter() - started))
    return statistics.median(times)


def _base_cut(directory: Path, labels: list[str]) -> str:
    """The pretrained MiniLM-L6 cut to the student's layers, with a fresh head: the same student
    size with nothing learned from the teacher."""
    import torch

    from raylane.config.schema import DEFAULT_MODEL
    from raylane.distill import keep_layers
    from raylane.models import load_classifier, load_tokenizer

    torch.manual_seed(0)
    model = keep_layers(load_classifier(DEFAULT_MODEL, labels), STUDENT_LAYERS)
    model.save_pretrained(directory)
    load_tokenizer(DEFAULT_MODEL).save_pretrained(directory)
    return str(directory)


@benchmark(
    "distill_speedup",
    "requests/s at concurrency 32: a 2-layer student distilled from the default model vs that teacher, "
    "served alike; holdout weighted F1 of both, and of the same student size trained without the teacher",
    goal=">= 3x requests/s; student within 1.0 point of the teacher's holdout weighted F1",
)
def distill_speedup(quick: bool) -> dict:
    from raylane.config import load_config
    from raylane.distill import pin_teacher
    from raylane.evaluate.stage import run_evaluation
    from raylane.ingest.stage import run_ingest
    from raylane.runtime import init_ray
    from raylane.train.driver import fit

    texts, _ = holdout()
    load_before = load_average()
    seconds, warm_s, rounds = (4, 2, 1) if quick else (20, 5, 3)
    epochs = ["train.epochs=1"] if quick else []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        init_ray()
        teacher_cfg = load_config(None, [f"output_dir={out}", "sweep.enabled=false", *epochs])
        dataset = run_ingest(teacher_cfg).dataset
        say("training the teacher (the default config, no sweep)")
        started = time.perf_counter()
        teacher = fit(teacher_cfg, dataset, None, name="teacher")
        teacher_s = time.perf_counter() - started

        student_cfg = pin_teacher(
            load_config(CONFIG, [f"output_dir={out}", f"train.distill.teacher={teacher.model_dir}", *epochs])
        )
        say(f"distilling layers {student_cfg.train.distill.student_layers} of it")
        started = time.perf_counter()
        student = fit(student_cfg, dataset, None, name="student")
        student_s = time.perf_counter() - started
        # With int8 too: evaluate then also scores the student as an int8 replica serves it.
        int8_cfg = dataclasses.replace(student_cfg, serve=dataclasses.replace(student_cfg.serve, quantize="int8"))
        evaluation = run_evaluation(int8_cfg, student.model_dir, dataset, out / "evaluation")

        plain_cfg = load_config(
            CONFIG,
            [
                f"output_dir={out}",
                f"model.name_or_path={_base_cut(Path(tmp) / 'base-cut', dataset.label_names)}",
                "train.distill.teacher=",
                "train.distill.student_layers=[]",
                *epochs,
            ],
        )
        say("training the same size without the teacher (labels only, from the pretrained layers)")
        plain = fit(plain_cfg, dataset, None, name="plain")
        plain_evaluation = run_evaluation(plain_cfg, plain.model_dir, dataset, out / "evaluation-plain")

        direct = {
            "teacher": _direct_p50_ms(teacher.model_dir, texts),
            "student": _direct_p50_ms(student.model_dir, texts),
        }
        with serve_session() as server:
            sides = {
                "teacher": lambda: server.deploy(teacher.model_dir, quantize="none"),
                "student": lambda: server.deploy(student.model_dir, quantize="none"),
                "student_int8": lambda: server.deploy(student.model_dir, quantize="int8"),
                # What no model can beat here: the same routes answered at once (Serve's proxy,
                # router and replica hop, FastAPI, and this process's load generator).
                "no_model": server.deploy_echo,
            }
            runs: dict[str, list[float]] = {name: [] for name in sides}
            reports: dict[str, list[dict]] = {name: [] for name in sides}
            for _ in range(rounds):
                for name, deploy in sides.items():
                    runs[name].append(throughput_side(server.url, texts, seconds, warm_s, name, reports[name], deploy))
            server.delete()
    rps = {name: statistics.median(values) for name, values in runs.items()}
    f1_teacher = evaluation.teacher.metrics["weighted_f1"]
    return {
        "load_average_1min": [load_before, load_average()],
        "ours": round(rps["student"], 1),
        "baseline": round(rps["teacher"], 1),
        "ratio": round(rps["student"] / rps["teacher"], 3),
        "unit": "ok requests/s at concurrency 32, 1 text/request (2-layer distilled student vs 6-layer teacher)",
        "student_int8_rps": round(rps["student_int8"], 1),
        "student_int8_ratio": round(rps["student_int8"] / rps["teacher"], 3),
        "no_model_rps": round(rps["no_model"], 1),
        "no_model_ratio": round(rps["no_model"] / rps["teacher"], 3),
        "runs": runs,
        "p50_ms": {name: [r["p50_ms"] for r in reports[name]] for name in sides},
        "direct_p50_ms": {k: round(v, 2) for k, v in direct.items()},
        "direct_p50_ratio": round(direct["teacher"] / direct["student"], 3),
        "holdout_weighted_f1_teacher": round(f1_teacher, 4),
        "holdout_weighted_f1_student": round(evaluation.metrics["weighted_f1"], 4),
        "holdout_weighted_f1_student_delta_points": evaluation.teacher.student_delta_points["weighted_f1"],
        "holdout_weighted_f1_student_int8": round(evaluation.serving_variant.metrics["weighted_f1"], 4),
        "holdout_weighted_f1_same_size_without_teacher": round(plain_evaluation.metrics["weighted_f1"], 4),
        "teacher_train_seconds": round(teacher_s, 1),
        "student_train_seconds": round(student_s, 1),
        "seconds_per_run": seconds,
        "rounds": rounds,
        "model": f"teacher MiniLM-L6 (default config, no sweep); student layers {STUDENT_LAYERS} of it "
        "(configs/distill.yaml); 1 replica, replica_cpus=2, max_batch_size 16",
    }
