"""Pillow's decompression-bomb limit stays on: nothing radgen imports turns it off or raises it.

Radiographs tempt one to write `Image.MAX_IMAGE_PIXELS = None` (a large scan trips the warning); that
would let an upload declaring gigapixels allocate gigabytes. The server relies on the limit (see
tests/serve/test_upload_limits.py).
"""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib

import pytest

from radgen.data.images import decode_image
from radgen.errors import DataError

# Pillow's documented default: a quarter of a gigabyte of 3-byte pixels, int(1024 * 1024 * 1024 // 4 // 3)
PIL_DEFAULT_LIMIT = 89_478_485

MODULES = ["radgen.data.images", "radgen.data.dataset", "radgen.data.phantom", "radgen.serve.inference", "radgen.serve.app",
           "radgen.explain.attention", "radgen.explain.pipeline", "radgen.train.feature_cache", "radgen.cli", "radgen.demo"]


def png_declaring(width: int, height: int) -> bytes:
    """A valid-looking 1-bit grayscale PNG header for width x height pixels with an empty body (~60 bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_importing_radgen_leaves_the_pixel_limit_at_pillows_default():
    assert 1024 * 1024 * 1024 // 4 // 3 == PIL_DEFAULT_LIMIT
    # a fresh interpreter: this test process may have imported (or patched) things already
    code = ("import PIL.Image as I; before = I.MAX_IMAGE_PIXELS; import importlib; "
            f"[importlib.import_module(m) for m in {MODULES!r}]; print(before, I.MAX_IMAGE_PIXELS)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    before, after = out.stdout.split()[-2:]
    assert before == after == str(PIL_DEFAULT_LIMIT)


def test_a_declared_gigapixel_png_is_refused_before_decoding():
    bomb = png_declaring(20_000, 20_000)  # 400 M pixels > 2 x the limit: Pillow refuses at open
    assert len(bomb) < 100
    # refused from the header, before any pixel is allocated, as a one-line DataError naming the file
    with pytest.raises(DataError, match=r"bomb.png: image declares more than .* pixels, over the limit"):
        decode_image(bomb, "bomb.png")


def test_a_png_within_the_limit_decodes():
    # the helper itself makes a readable PNG header: a small declared size passes the check and
    # fails only on its empty body, as a truncated file (DataError), not as a bomb
    from radgen.errors import DataError

    with pytest.raises(DataError, match="corrupt or unsupported"):
        decode_image(png_declaring(64, 64), "small.png")
