import json

import pandas as pd
import pytest
import ray.data

from ingest.stage import run as ingest
from raylane.sources import IngestError


def test_embedded_data_is_fully_accounted_for(smoke_dataset):
    m = smoke_dataset.manifest
    assert m["counts"]["input"] == 764 + 191
    assert m["counts"]["input"] == m["counts"]["accepted"] + m["counts"]["quarantined"]
    assert sum(m["splits"].values()) == m["counts"]["accepted"]
    assert m["splits"]["test"] == 191  # the holdout file is the test split, whole
    assert m["labels"] == ["computer-vision", "mlops", "natural-language-processing", "other"]
    for split, n in m["splits"].items():
        rows = smoke_dataset.read_split(split).take_all()
        assert len(rows) == n
        assert sum(m["class_counts"][split].values()) == n
    row = smoke_dataset.read_split("train").take(1)[0]
    assert 0 <= row["label"] < 4
    assert row["input_ids"][0] == 101 and len(row["input_ids"]) <= 64  # [CLS] ... truncated at max_length


def test_dirty_rows_are_quarantined_with_reasons(ray_session, smoke_cfg_factory, tmp_path):
    good = [{"title": f"paper {i}", "description": "about things", "tag": "a" if i % 2 else "b"} for i in range(40)]
    bad = [
        {"title": "", "description": "  ", "tag": "a"},  # empty text
        {"title": "no label", "description": "x", "tag": None},  # missing label
    ]
    pd.DataFrame(good + bad).to_csv(tmp_path / "train.csv", index=False)
    pd.DataFrame([{"title": "t1", "description": "d", "tag": "a"},
                  {"title": "t2", "description": "d", "tag": "zzz"}]).to_csv(tmp_path / "test.csv", index=False)
    cfg = smoke_cfg_factory(f"data.source={tmp_path}/train.csv", f"data.test_source={tmp_path}/test.csv",
                            out=tmp_path / "out")
    manifest = ingest(cfg, tmp_path / "ds").dataset.manifest
    counts = manifest["counts"]
    assert counts["input"] == 44
    assert counts["quarantined"] == 3
    assert counts["quarantine_reasons"] == {"empty_text": 1, "missing_label": 1, "unknown_label": 1}
    quarantined = ray.data.read_parquet(str(tmp_path / "ds" / "quarantine")).to_pandas()
    assert sorted(quarantined["reason"]) == ["empty_text", "missing_label", "unknown_label"]
    raw = [json.loads(r) for r in quarantined["raw"]]
    assert {"title": "t2", "description": "d", "tag": "zzz"} in raw  # the original row, as it came in


def test_missing_column_fails_naming_file_and_column(ray_session, smoke_cfg_factory, tmp_path):
    pd.DataFrame({"title": ["a"], "label": ["x"]}).to_csv(tmp_path / "t.csv", index=False)
    cfg = smoke_cfg_factory(f"data.source={tmp_path}/t.csv", "data.test_source=''", out=tmp_path / "out")
    with pytest.raises(IngestError, match=r"t\.csv: required column 'description'"):
        ingest(cfg, tmp_path / "ds")
