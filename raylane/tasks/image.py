"""Image inputs (image_classification): an image per row, from an image folder
(`<label>/<name>.png|jpg`), a Parquet column of image bytes, or a column of paths (relative to the
file that names them) or base64 `data:` URIs. Ingest decodes each one (PIL) to validate it and
keeps its bytes, size and brightness; training and serving resize and normalise it with the
model's image processor (PIL backend: no torchvision)."""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from pydantic import Field

from raylane.hashing import stable_hash
from raylane.images import decode_all
from raylane.tasks.base import RequestProblem, ScoredInputs
from raylane.tasks.text import StrictBody

# Base64 of the largest image a request may carry, whatever the settings (serve.max_image_bytes
# is checked on the way in, with a message that names it).
BASE64_CEILING = 64 * 2**20


class ImagesRequest(StrictBody):
    images: list[Annotated[str, Field(max_length=BASE64_CEILING)]] = Field(
        min_length=1, max_length=1_000, description="Images, base64 (or data: URIs)"
    )
    top_k: int = Field(1, ge=1, le=100, description="Labels returned per image, best first")


def read_image_bytes(value: str, source: str) -> tuple[bytes | None, str]:
    """The bytes a field names: a base64 `data:` URI, or a path or URI (relative to the source
    file's directory). (None, why) when it cannot be read."""
    from raylane.images import from_base64
    from raylane.sources import filesystem

    if value.startswith("data:"):
        data = from_base64(value)
        return (data, "") if data is not None else (None, "the data: URI is not base64")
    target = value if "://" in value or value.startswith("/") else f"{source.rsplit('/', 1)[0]}/{value}"
    try:
        fs, path = filesystem(target)
        with fs.open_input_stream(path) as stream:
            return stream.read(), ""
    except (OSError, ValueError) as err:
        return None, f"cannot read {value} ({type(err).__name__})"


class ImageInputs(ScoredInputs):
    kind = "image"
    modality = "image"
    column = "image"
    drift_feature = "brightness"

    def example(self) -> dict[str, list]:
        import io

        from PIL import Image

        buffer = io.BytesIO()
        Image.new("L", (8, 8), 128).save(buffer, "PNG")
        return {"image": [buffer.getvalue()]}

    def fields(self, data) -> list[str]:
        return [data.image_field]

    def describe(self, data) -> str:
        return f"`{data.image_field}`"

    def prepare(
        self, columns: list, spec, errors: list[str], sources: list[str], blobs: list[bytes | None] | None = None
    ) -> dict[str, Any]:
        from raylane.images import UNDECODABLE_IMAGE, decode

        values = columns[0].to_pylist()
        blobs = blobs or [None] * len(values)
        out: dict[str, Any] = {
            "text": [],
            "hash": [],
            "n_chars": [],
            "reason": [],
            "detail": [],
            "pii": {},
            "image": [],
            "width": [],
            "height": [],
            "brightness": [],
        }
        for error, value, blob, source in zip(errors, values, blobs, sources):
            data, why = blob, ""
            if data is None and value and not error:
                data, why = read_image_bytes(value, source)
            if error or (data is None and not value):
                decoded, reason, detail = None, ("" if error else "missing_field"), "no image in the row"
            elif data is None:
                decoded, reason, detail = None, UNDECODABLE_IMAGE, why
            else:
                decoded = decode(data, spec.max_image_pixels)
                reason, detail = decoded.reason, decoded.detail
            ok = decoded is not None and not reason
            out["text"].append((value or "").rsplit("/", 1)[-1][:200])  # the image's name, to find it again
            out["hash"].append(stable_hash(data) if data else 0)
            out["n_chars"].append(0)
            out["reason"].append(reason)
            out["detail"].append(detail if reason else "")
            out["image"].append(data if ok else None)
            out["width"].append(decoded.width if ok else 0)
            out["height"].append(decoded.height if ok else 0)
            out["brightness"].append(decoded.brightness if ok else 0.0)
        return out

    def request_model(self):
        return ImagesRequest

    def upload_request(self, blobs: list[bytes]):
        return ImagesRequest.model_construct(images=blobs, top_k=1)  # bytes, as uploaded: checked by items()

    def items(self, request, limits) -> list:
        """Each image decoded from base64 (or taken as uploaded bytes), within the byte and pixel
        limits and readable, or the request is refused before anything is scored."""
        from raylane.images import IMAGE_TOO_LARGE, decode, from_base64

        images = request.images
        if len(images) > limits.max_texts:
            raise RequestProblem(413, f"{len(images)} images in one request; the limit is {limits.max_texts}")
        blobs = []
        for i, image in enumerate(images):
            data = image if isinstance(image, bytes) else from_base64(image)
            if data is None:
                raise RequestProblem(422, f"images[{i}] is not base64")
            if len(data) > limits.max_image_bytes:
                raise RequestProblem(413, f"images[{i}] is {len(data)} bytes; the limit is {limits.max_image_bytes}")
            decoded = decode(data, limits.max_image_pixels)
            if decoded.reason:
                status = 422
                detail = f"images[{i}]: {decoded.detail}" + (
                    " (serve.max_image_pixels)" if decoded.reason == IMAGE_TOO_LARGE else ""
                )
                raise RequestProblem(status, detail)
            blobs.append(data)
        return blobs

    def encoder(self, name_or_path: str, max_length: int):
        """Nothing to encode at ingest: the bytes are kept; resizing waits for the model's processor."""
        return None

    def shard_columns(self, batch) -> dict[str, Any]:
        return {name: batch.column(name) for name in ("image", "width", "height", "brightness")}

    columns = {
        "text": "string (the image's name)",
        "label": "the target's encoding",
        "image": "binary",
        "width": "int64",
        "height": "int64",
        "brightness": "float64 (mean grey level)",
    }

    def split_stats(self, scan, max_length: int) -> tuple[str, Any]:
        """The manifest's account of a split's images: sizes and brightness (binned for drift)."""
        from raylane.drift import BRIGHTNESS_EDGES, histogram
        from raylane.manifest import ImageStats

        widths, heights, brightness = [], [], []
        for batch in scan(["width", "height", "brightness"]):
            widths += batch.column("width").to_pylist()
            heights += batch.column("height").to_pylist()
            brightness += batch.column("brightness").to_pylist()
        return "image_stats", ImageStats(
            rows=len(widths),
            width_p50=int(np.median(widths)) if widths else 0,
            height_p50=int(np.median(heights)) if heights else 0,
            max_pixels=max((w * h for w, h in zip(widths, heights)), default=0),
            brightness_mean=round(float(np.mean(brightness)), 2) if brightness else 0.0,
            brightness_histogram=histogram(brightness, BRIGHTNESS_EDGES),
        )

    # --- model --------------------------------------------------------------------------------
    def load_model(self, name_or_path: str, labels: list[str], target, init: str = "pretrained"):
        from transformers import AutoConfig, AutoModelForImageClassification

        from raylane.models import load_pretrained, resolve_model_source

        source = resolve_model_source(name_or_path)
        head = {
            "num_labels": target.num_outputs(labels),
            "problem_type": target.problem_type(),
            "id2label": dict(enumerate(labels)),
            "label2id": {name: i for i, name in enumerate(labels)},
        }
        if init == "config":
            return AutoModelForImageClassification.from_config(AutoConfig.from_pretrained(source, **head))
        # A pretrained classifier comes with a head for its own classes: replace it.
        return load_pretrained(AutoModelForImageClassification, source, ignore_mismatched_sizes=True, **head)

    def load_processor(self, name_or_path: str):
        from transformers import AutoImageProcessor

        from raylane.models import resolve_model_source

        # The PIL backend explicitly: with torchvision installed the default switches to it, and
        # its resize differs from PIL's, so training and serving could see different pixels.
        return AutoImageProcessor.from_pretrained(resolve_model_source(name_or_path), backend="pil")

    def collate(self, processor, target, n_labels: int, extras: dict[str, Any], pack_width: int = 0):
        from raylane.tasks.collate import ImageCollate

        return ImageCollate(processor, target, n_labels, extras)

    # --- inference ----------------------------------------------------------------------------
    def encode(self, processor, items: list, device) -> tuple[dict[str, Any], np.ndarray]:
        """Image bytes -> pixel values, and each image's brightness (for drift)."""
        images, brightness = decode_all(items)
        pixels = processor(images, return_tensors="pt")["pixel_values"].to(device)
        return {"pixel_values": pixels}, np.asarray(brightness)

    def sort_key(self, item) -> int:
        return 0
