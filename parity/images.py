"""Images in [-1, 1] to an 8-bit PNG grid, with NumPy and the standard library only (no PIL)."""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np

from parity.atomic import atomic_path


def to_uint8(x: np.ndarray) -> np.ndarray:
    """[-1, 1] -> {0, ..., 255}, the inverse of the data pipelines' ``x / 127.5 - 1``."""
    return np.clip(np.round((np.asarray(x, np.float64) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def grid(images: np.ndarray, columns: int | None = None, pad: int = 1) -> np.ndarray:
    """NHWC images (B, H, W, 3) in [-1, 1] as one (rows*(H+pad)-pad, cols*(W+pad)-pad, 3) uint8 image."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected images of shape (B, H, W, 3), NHWC; received shape {images.shape}")
    B, H, W, _ = images.shape
    cols = columns or int(np.ceil(np.sqrt(B)))
    rows = -(-B // cols)
    out = np.full((rows * (H + pad) - pad, cols * (W + pad) - pad, 3), 255, np.uint8)
    for k, img in enumerate(to_uint8(images)):
        r, c = divmod(k, cols)
        out[r * (H + pad): r * (H + pad) + H, c * (W + pad): c * (W + pad) + W] = img
    return out


def save_png_grid(images: np.ndarray, path: str | os.PathLike, columns: int | None = None) -> None:
    """Write NHWC images in [-1, 1] as a PNG grid (8-bit RGB); the file appears whole or not at all."""
    pixels = grid(images, columns)
    h, w, _ = pixels.shape
    raw = b"".join(b"\x00" + pixels[y].tobytes() for y in range(h))  # filter type 0 per scanline

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(png)
