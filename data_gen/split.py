"""Train/(val/)test split by image: a difference hash (dHash) of the pixels when images exist, the filename otherwise.

Two files with the same picture (a re-upload, a resized copy) get the same dHash and so the same
split; every record of an image lands in that image's split.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from PIL import Image, UnidentifiedImageError


def stable_unit(*parts) -> float:
    """A number in [0, 1) fixed by the parts (same on every machine and Python run)."""
    h = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64


def stable_int(*parts) -> int:
    return int.from_bytes(hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest(), "big")


def dhash(path: str | Path, size: int = 8) -> str:
    """64-bit difference hash: grey 9x8 thumbnail, one bit per left>right neighbour pair, as hex.
    Raises ValueError naming the file if it is not a readable image."""
    try:
        with Image.open(path) as im:
            im.draft("L", (size * 4, size * 4))  # JPEG: decode at reduced size, much faster
            small = im.convert("L").resize((size + 1, size), Image.Resampling.BILINEAR)
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as e:
        raise ValueError(f"{path}: not a readable image ({e.__class__.__name__}: {e})") from e
    px = small.tobytes()
    bits = 0
    for y in range(size):
        row = px[y * (size + 1):(y + 1) * (size + 1)]
        for x in range(size):
            bits = (bits << 1) | (row[x] > row[x + 1])
    return f"{bits:0{size * size // 4}x}"


def check_fractions(test_fraction: float, val_fraction: float) -> None:
    if not (0 <= test_fraction and 0 <= val_fraction and test_fraction + val_fraction < 1):
        raise ValueError(f"the test fraction ({test_fraction}) and val fraction ({val_fraction}) must be >= 0 "
                         f"and sum below 1 (some images must train)")


def assign_split(group_key: str, seed: int, test_fraction: float, val_fraction: float = 0.0) -> str:
    """test below `test_fraction`, val in the next `val_fraction`, train above: adding a validation split
    takes its images from train only, so the test split stays the same images."""
    u = stable_unit("split", seed, group_key)
    return "test" if u < test_fraction else "val" if u < test_fraction + val_fraction else "train"
