import base64
import io
import struct
import zlib

import pytest
from PIL import Image, ImageFile

from dermvqa.serve import limits as limits_mod
from dermvqa.serve.limits import (ImageRejected, Limits, api_key_matches, decode_data_uri, decode_image,
                                  load_image_file)
from tests.conftest import PAD_PHOTO


def bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A valid 1-bit PNG of width x height zeros: about 50 KB on disk, 400 MB once decoded by PIL."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + (width + 7) // 8)
    z = zlib.compressobj(9)
    body = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def png_bytes(size=(40, 30), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, 128).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("side, message", [(20000, "too large: over"), (8000, "8000x8000 pixels")])
def test_decompression_bomb_is_refused_before_any_pixel_is_decoded(monkeypatch, side, message):
    data = bomb_png(side, side)
    assert len(data) < 200_000

    def no_decode(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decode)
    with pytest.raises(ImageRejected, match=message + ".*the limit is 40000000 pixels") as err:
        decode_image(data)
    assert err.value.status == 413


def test_pixel_cap_is_the_configured_one():
    data = png_bytes((100, 100))
    assert decode_image(data, Limits(max_image_pixels=10_000)).size == (100, 100)
    with pytest.raises(ImageRejected, match="100x100 pixels; the limit is 9999 pixels"):
        decode_image(data, Limits(max_image_pixels=9_999))


def test_real_rgba_photo_decodes_to_rgb():
    img = decode_image(PAD_PHOTO.read_bytes())
    assert img.mode == "RGB" and img.size == Image.open(PAD_PHOTO).size


def test_text_file_named_png_is_not_an_image(tmp_path):
    fake = tmp_path / "lesion.png"
    fake.write_text("this is not a picture\n")
    with pytest.raises(ImageRejected, match="lesion.png is not a readable image"):
        load_image_file(fake)


def test_truncated_png_is_reported_as_damaged():
    data = png_bytes((64, 64))
    with pytest.raises(ImageRejected, match="damaged or truncated PNG"):
        decode_image(data[: len(data) // 2] + b"\x00" * 10)


def test_byte_cap():
    with pytest.raises(ImageRejected, match="the limit is 10$") as err:
        decode_image(png_bytes(), Limits(max_image_bytes=10))
    assert err.value.status == 413


def test_data_uri_forms():
    ok = "data:image/png;base64," + base64.b64encode(png_bytes()).decode()
    assert decode_data_uri(ok).size == (40, 30)
    with pytest.raises(ImageRejected, match="must look like data:image"):
        decode_data_uri("data:image/png," + "abc")
    with pytest.raises(ImageRejected, match="not valid base64"):
        decode_data_uri("data:image/png;base64,@@@@")


def test_allow_dir_blocks_escapes_and_links(tmp_path):
    inside, outside = tmp_path / "allowed", tmp_path / "secret"
    inside.mkdir(), outside.mkdir()
    (inside / "a.png").write_bytes(png_bytes())
    (outside / "b.png").write_bytes(png_bytes())
    (inside / "link.png").symlink_to(outside / "b.png")
    assert load_image_file(inside / "a.png", allow_dir=inside).size == (40, 30)
    for path in (inside / ".." / "secret" / "b.png", inside / "link.png", outside / "b.png"):
        with pytest.raises(ImageRejected, match="outside the directory") as err:
            load_image_file(path, allow_dir=inside)
        assert err.value.status == 403


def test_api_key_check_is_constant_time(monkeypatch):
    calls = []
    real = limits_mod.hmac.compare_digest
    monkeypatch.setattr(limits_mod.hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    assert api_key_matches("Bearer s3cret", "s3cret")
    assert api_key_matches("bearer s3cret", "s3cret")
    assert not api_key_matches("Bearer s3cre", "s3cret")
    assert not api_key_matches("Basic s3cret", "s3cret")
    assert not api_key_matches(None, "s3cret")
    assert len(calls) == 5
