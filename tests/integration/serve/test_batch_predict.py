"""`predict`: files scored by Ray Data actors into Parquet, every input row answered, for text and
for images (a folder, and a column of bytes); a rerun replaces what the last one wrote."""

import io

import pandas as pd
import pyarrow.parquet as pq

from raylane.serve.batch import MARKER, predict_files
from raylane.tasks import get_task
from raylane.tasks.saved import SavedTask
from tests.paths import REPO_ROOT


def _png(shade: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (12, 12), shade).save(buffer, "PNG")
    return buffer.getvalue()


def _image_model(tiny_image_model, directory):
    """The tiny ResNet, untrained, exported as training exports a model (with its task)."""
    task = get_task("image_classification")
    model = task.inputs.load_model(str(tiny_image_model), ["dark", "bright"], task.target, init="config")
    model.save_pretrained(directory)
    task.inputs.load_processor(str(tiny_image_model)).save_pretrained(directory)
    SavedTask("image_classification", ["dark", "bright"]).write(directory)
    return str(directory)


def test_text_files_are_scored_row_for_row_and_a_rerun_replaces(
    smoke_dataset, smoke_cfg_factory, trained_classifier, tmp_path
):
    cfg = smoke_cfg_factory()
    model_dir = trained_classifier.model_dir
    holdout = REPO_ROOT / "data" / "made-with-ml" / "holdout.csv"
    out = tmp_path / "predictions"
    out.mkdir()
    (out / MARKER).write_text("")  # what an earlier `raylane predict` left: it may be replaced
    (out / "stale.parquet").write_bytes(b"left by an earlier run")
    rows = predict_files(cfg, model_dir, str(holdout), out)
    scored = pq.read_table(out).to_pandas()
    assert rows == len(scored) == len(pd.read_csv(holdout))
    assert not (out / "stale.parquet").exists()
    assert set(scored["pred_label"]) <= set(smoke_dataset.label_names)
    assert scored["score"].between(0, 1).all()


def test_images_from_a_folder_and_from_a_column(ray_session, smoke_cfg_factory, tiny_image_model, tmp_path):
    cfg = smoke_cfg_factory("task=image_classification", "data.image_field=image")
    model_dir = _image_model(tiny_image_model, tmp_path / "model")
    folder = tmp_path / "images"
    for label, shade in (("dark", 10), ("bright", 240)):
        (folder / label).mkdir(parents=True)
        for i in range(3):
            (folder / label / f"{i}.png").write_bytes(_png(shade))
    rows = predict_files(cfg, model_dir, str(folder), tmp_path / "from-folder")
    scored = pq.read_table(tmp_path / "from-folder").to_pandas()
    assert rows == 6 and set(scored["pred_label"]) <= {"dark", "bright"}
    assert sorted(p.rsplit("/", 1)[-1] for p in scored["path"]) == sorted(["0.png", "1.png", "2.png"] * 2)

    table = tmp_path / "images.parquet"
    pd.DataFrame({"name": ["a", "b"], "image": [_png(10), _png(240)]}).to_parquet(table)
    assert predict_files(cfg, model_dir, str(table), tmp_path / "from-column") == 2
