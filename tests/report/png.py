"""Is a file a valid PNG? Signature and IHDR by hand, then decoded by matplotlib (and PIL when
installed), so a truncated or corrupt file fails."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    data = Path(path).read_bytes()
    assert data[:8] == SIGNATURE, f"{path}: not a PNG"
    length, ctype = struct.unpack(">I4s", data[8:16])
    assert ctype == b"IHDR" and length == 13, f"{path}: no IHDR chunk first"
    crc = struct.unpack(">I", data[29:33])[0]
    assert crc == zlib.crc32(data[12:29]), f"{path}: IHDR CRC mismatch"
    assert data.endswith(b"IEND\xaeB`\x82"), f"{path}: truncated (no IEND chunk)"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def assert_valid_png(path: Path) -> tuple[int, int]:
    width, height = png_size(path)
    assert width > 100 and height > 100
    import matplotlib.image

    pixels = matplotlib.image.imread(path)
    assert pixels.shape[:2] == (height, width)
    assert pixels.std() > 0, f"{path}: a blank image"
    try:
        from PIL import Image
    except ImportError:
        return width, height
    with Image.open(path) as im:
        im.verify()
    return width, height
