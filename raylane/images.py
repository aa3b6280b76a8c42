"""Decoding images safely: a file that is empty, not an image, truncated, corrupt or too large
gets a reason instead of an exception (or, worse, a silently grey-filled picture).

PIL decodes lazily: `Image.open` reads the header, `.load()` the pixels, and truncation or
corruption surfaces only there (PIL 13: "image file is truncated", "unrecognized data stream").
`LOAD_TRUNCATED_IMAGES` stays False: set, a half JPEG loads as a grey picture. PIL's own bomb
check only warns up to twice its limit, so the pixel cap here is checked before `.load()`.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

EMPTY_IMAGE = "empty_image"
UNDECODABLE_IMAGE = "undecodable_image"
IMAGE_TOO_LARGE = "image_too_large"


@dataclass(frozen=True)
class Decoded:
    """An image (RGB, PIL) and its statistics, or why there is none."""

    image: object | None
    reason: str = ""
    detail: str = ""
    width: int = 0
    height: int = 0
    brightness: float = 0.0  # mean of the grey levels, 0-255


def decode(data: bytes | None, max_pixels: int) -> Decoded:
    from PIL import Image, UnidentifiedImageError

    if not data:
        return Decoded(None, EMPTY_IMAGE, "the image file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > max_pixels:
                return Decoded(None, IMAGE_TOO_LARGE, f"{image.width}x{image.height} pixels > {max_pixels}")
            image.load()
            grey = image.convert("L")
            brightness = float(sum(i * n for i, n in enumerate(grey.histogram())) / max(1, image.width * image.height))
            return Decoded(image.convert("RGB"), width=image.width, height=image.height, brightness=brightness)
    except UnidentifiedImageError:
        return Decoded(None, UNDECODABLE_IMAGE, "not an image PIL can read")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        return Decoded(None, IMAGE_TOO_LARGE, str(err)[:200])
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as err:
        kind = "truncated" if "truncated" in str(err).lower() else "corrupt"
        return Decoded(None, UNDECODABLE_IMAGE, f"{kind}: {str(err)[:160]}")


def from_base64(text: str) -> bytes | None:
    """The bytes of `data:image/...;base64,...` or of plain base64; None if it is neither."""
    import base64
    import binascii

    payload = text.split(",", 1)[1] if text.startswith("data:") and "," in text else text
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return None


def decode_all(blobs: list[bytes], max_pixels: int = 2**28) -> tuple[list, list[float]]:
    """Images already checked (at ingest, or by the server's limits) -> RGB images and brightness."""
    decoded = [decode(blob, max_pixels) for blob in blobs]
    bad = [d.detail for d in decoded if d.image is None]
    if bad:
        raise ValueError(f"{len(bad)} image(s) could not be decoded: {bad[0]}")
    return [d.image for d in decoded], [d.brightness for d in decoded]
