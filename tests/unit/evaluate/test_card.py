"""The model card says what a reviewer needs, and nothing secret."""

from raylane.config import load_config
from raylane.dataset import DatasetInfo
from raylane.evaluate.card import model_card
from raylane.evaluate.gate import GateDecision, Rule
from raylane.evaluate.report import ClassScores, Evaluation
from tests.manifests import make_manifest


def test_the_card_carries_metrics_and_verdict_but_no_credentials(tmp_path):
    secret = "s3cr3t-K3y"
    cfg = load_config(None, [f"data.source=s3://AKIA:{secret}@bucket/raw/*.csv", f"output_dir={tmp_path}"])
    manifest = make_manifest(["a", "b"], {"train": {"a": 3, "b": 2}, "test": {"a": 1, "b": 1}}, [0] * 13)
    dataset = DatasetInfo(f"s3://AKIA:{secret}@bucket/datasets/x", manifest)
    evaluation = Evaluation(
        split="test",
        model_dir="m",
        rows=2,
        labels=["a", "b"],
        metrics={"accuracy": 0.5, "weighted_f1": 0.5, "macro_f1": 0.5},
        per_class={n: ClassScores(precision=0.5, recall=0.5, f1=0.5, support=1) for n in "ab"},
    )
    decision = GateDecision(False, [Rule("gate.min_weighted_f1", False, "test weighted F1 0.5000 < 0.85")])
    card = model_card(cfg, dataset, evaluation, decision, None, {"dataset_uri": dataset.uri})
    assert "## Test metrics (2 rows)" in card and "## Gate: rejected" in card and "0.5000 < 0.85" in card
    assert secret not in card and "s3://***@bucket/datasets/x" in card
