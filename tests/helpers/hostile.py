"""Hostile inputs the hardening tests share: image files that lie about their size."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import tifffile


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG header declaring ``width`` x ``height`` 8-bit grey pixels, whose data is a
    few bytes of zlib zeros: decoding it would allocate width x height bytes."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\0" * (width + 1) * 4)  # four rows; the rest is missing
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", rows)
        + _chunk(b"IEND", b"")
    )


def zlib_tiff(height: int, width: int, rows: int = 8) -> bytes:
    """A zlib TIFF of ``rows`` x ``width`` zeros whose header then claims ``height`` rows:
    megabytes on disk can claim gigapixels."""
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.zeros((rows, width), np.uint8), compression="zlib",
                     rowsperstrip=rows)  # fmt: skip
    data = bytearray(buffer.getvalue())
    with tifffile.TiffFile(io.BytesIO(bytes(data))) as tif:
        tag = tif.pages[0].tags["ImageLength"]
        size = 2 if tag.dtype == 3 else 4
        order = "little" if tif.byteorder == "<" else "big"
        data[tag.valueoffset : tag.valueoffset + size] = height.to_bytes(size, order)
    return bytes(data)
