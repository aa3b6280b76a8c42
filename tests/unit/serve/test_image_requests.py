"""What an image request may carry, checked before any model work: every image decodes, within
serve.max_image_bytes (413) and serve.max_image_pixels (422), or the request is refused."""

import base64
import io

import pytest
from PIL import Image

from raylane.serve.app import ServeArgs
from raylane.tasks import get_task
from raylane.tasks.base import RequestProblem

INPUTS = get_task("image_classification").inputs
LIMITS = ServeArgs(model_uri="unused", task="image_classification", max_image_bytes=4096, max_image_pixels=2500)


def png(width: int, height: int, noise: bool = False) -> bytes:
    import numpy as np

    pixels = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8) if noise else None
    image = Image.fromarray(pixels) if noise else Image.new("RGB", (width, height), (90, 90, 90))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def request(*images):
    return INPUTS.request_model()(images=[base64.b64encode(i).decode() if isinstance(i, bytes) else i for i in images])


def test_images_within_the_limits_pass_as_bytes():
    assert INPUTS.items(request(png(8, 8), png(40, 40)), LIMITS) == [png(8, 8), png(40, 40)]


@pytest.mark.parametrize(
    "image, status, says",
    [
        (png(40, 40, noise=True), 413, "bytes; the limit is 4096"),  # 40x40 of noise: over 4 KiB
        (png(60, 60), 422, "serve.max_image_pixels"),  # 3,600 pixels, yet a few hundred bytes
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, 422, "images[1]"),  # a PNG header and nothing after
        (b"", 422, "empty"),
        ("not base64 at all!", 422, "not base64"),
    ],
)
def test_a_bad_image_refuses_the_whole_request_naming_it(image, status, says):
    with pytest.raises(RequestProblem) as refused:
        INPUTS.items(request(png(8, 8), image), LIMITS)
    assert refused.value.status == status and says in refused.value.detail, refused.value.detail


def test_uploaded_bytes_meet_the_same_limits():
    upload = INPUTS.upload_request([png(8, 8), png(40, 40, noise=True)])
    with pytest.raises(RequestProblem) as refused:
        INPUTS.items(upload, LIMITS)
    assert refused.value.status == 413
