"""Caps on what a client may send (request, image bytes and pixels, prompt, tokens) and safe image decoding.

Images are identified from their header first; the pixel count is checked before any pixel is decoded, so a
small file that claims 20000x20000 pixels (a decompression bomb) is refused without allocating its memory.
"""
from __future__ import annotations

import base64
import binascii
import hmac
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP")
MiB = 2**20


class ImageRejected(ValueError):
    """The upload is not an image we accept; the message says why and is safe to show to the client."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    max_request_bytes: int = 32 * MiB    # whole HTTP body (a base64 image is 4/3 of its file size)
    max_image_bytes: int = 20 * MiB      # one encoded image file
    max_image_pixels: int = 40_000_000   # width x height; a 6000x6000 clinical photo still fits
    max_prompt_chars: int = 16_000       # all message text together, checked before tokenising
    max_new_tokens: int = 1024           # largest max_tokens a client may ask for


def decode_image(data: bytes, limits: Limits = Limits(), name: str = "image") -> Image.Image:
    """Bytes -> RGB image, or ImageRejected naming `name` and the problem."""
    if len(data) > limits.max_image_bytes:
        raise ImageRejected(f"{name} is {len(data)} bytes; the limit is {limits.max_image_bytes}", 413)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)  # reads the header only
    except Image.DecompressionBombError as e:
        raise ImageRejected(f"{name} is too large: over {2 * Image.MAX_IMAGE_PIXELS} pixels; the limit is "
                            f"{limits.max_image_pixels} pixels in total", 413) from e
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ImageRejected(f"{name} is not a readable image (accepted: {', '.join(ALLOWED_FORMATS)})") from e
    width, height = img.size
    if width * height > limits.max_image_pixels:
        raise ImageRejected(f"{name} is {width}x{height} pixels; the limit is {limits.max_image_pixels} pixels "
                            "in total", 413)
    if width < 1 or height < 1:
        raise ImageRejected(f"{name} has an empty size {width}x{height}")
    try:
        img.load()
        return img.convert("RGB")
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageRejected(f"{name} is a damaged or truncated {img.format} file: {e}") from e


def decode_data_uri(uri: str, limits: Limits = Limits()) -> Image.Image:
    """`data:image/png;base64,...` -> RGB image."""
    header, sep, payload = uri.partition(",")
    if not sep or not header.startswith("data:") or not header.endswith(";base64"):
        raise ImageRejected("image_url data URI must look like data:image/<type>;base64,<data>")
    if len(payload) > limits.max_image_bytes * 4 // 3 + 4:
        raise ImageRejected(f"image in the data URI is over the {limits.max_image_bytes}-byte limit", 413)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ImageRejected(f"image_url data URI is not valid base64: {e}") from e
    return decode_image(data, limits, "image in the data URI")


def load_image_file(path: str | Path, limits: Limits = Limits(), allow_dir: str | Path | None = None) -> Image.Image:
    """A local image file -> RGB image. With `allow_dir`, the resolved path must lie inside it (no ../ or links out)."""
    path = Path(path)
    if allow_dir is not None:
        root = Path(allow_dir).resolve()
        resolved = path.resolve()
        if not resolved.is_relative_to(root):
            raise ImageRejected(f"{path} is outside the directory this server may read ({root})", 403)
        path = resolved
    if not path.is_file():
        raise ImageRejected(f"image file not found: {path}", 404 if allow_dir is not None else 400)
    size = path.stat().st_size
    if size > limits.max_image_bytes:
        raise ImageRejected(f"{path} is {size} bytes; the limit is {limits.max_image_bytes}", 413)
    return decode_image(path.read_bytes(), limits, str(path))


def api_key_matches(authorization: str | None, api_key: str) -> bool:
    """Check an `Authorization: Bearer KEY` header in constant time."""
    scheme, _, given = (authorization or "").partition(" ")
    ok_scheme = scheme.lower() == "bearer"
    return hmac.compare_digest(given.strip().encode(), api_key.encode()) and ok_scheme
