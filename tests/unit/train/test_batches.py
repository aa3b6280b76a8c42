import numpy as np

from raylane.train.batches import PadCollate


def test_pads_each_batch_to_its_longest_row():
    batch = {
        "input_ids": np.array([np.array([101, 5, 102]), np.array([101, 102])], dtype=object),
        "label": np.array([1, 0]),
    }
    out = PadCollate(pad_id=0)(batch)
    assert out["input_ids"].tolist() == [[101, 5, 102], [101, 102, 0]]
    assert out["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert out["labels"].tolist() == [1, 0]
