"""Images in [-1, 1] to an 8-bit PNG grid, and line plots of a run's curves, with NumPy and the standard
library only (no PIL)."""

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
    save_png(grid(images, columns), path)


def png_bytes(pixels: np.ndarray) -> bytes:
    """An (H, W, 3) uint8 image as the bytes of an 8-bit RGB PNG (uint16: a 16-bit one, big-endian
    samples as PNG stores them)."""
    h, w, _ = pixels.shape
    depth = 16 if pixels.dtype == np.uint16 else 8
    rows = pixels.astype(">u2") if depth == 16 else pixels
    raw = b"".join(b"\x00" + rows[y].tobytes() for y in range(h))  # filter type 0 per scanline

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def save_png(pixels: np.ndarray, path: str | os.PathLike) -> None:
    """Write an (H, W, 3) uint8 image as an 8-bit RGB PNG; the file appears whole or not at all."""
    png = png_bytes(pixels)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(png)


CURVE_COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40))  # one per series, in order


def plot_curves(series: list[tuple[np.ndarray, np.ndarray]], size: tuple[int, int] = (480, 300), margin: int = 12) -> np.ndarray:
    """Line plots of ``(x, y)`` series on shared linear axes, as an (H, W, 3) uint8 image: a grey frame,
    each series a polyline in ``CURVE_COLOURS``' colour of its place, its points as 3x3 dots where it
    has fewer than 50. No text (no font without Pillow): the caller says what the axes are."""
    height, width = size[1], size[0]
    out = np.full((height, width, 3), 255, np.uint8)
    out[margin - 1, margin - 1: width - margin + 1] = out[height - margin, margin - 1: width - margin + 1] = 160
    out[margin - 1: height - margin + 1, margin - 1] = out[margin - 1: height - margin + 1, width - margin] = 160
    finite = [(np.asarray(x, np.float64), np.asarray(y, np.float64)) for x, y in series]
    finite = [(x[np.isfinite(y)], y[np.isfinite(y)]) for x, y in finite]
    xs = np.concatenate([x for x, _ in finite] or [np.zeros(1)])
    ys = np.concatenate([y for _, y in finite] or [np.zeros(1)])
    if not xs.size:
        return out
    x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)

    def to_px(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        col = margin + (x - x0) / (x1 - x0) * (width - 2 * margin - 1)
        row = height - margin - 1 - (y - y0) / (y1 - y0) * (height - 2 * margin - 1)
        return np.round(row).astype(int), np.round(col).astype(int)

    for (x, y), colour in zip(finite, CURVE_COLOURS * (1 + len(finite) // len(CURVE_COLOURS))):
        if not x.size:
            continue
        if x.size > 1:  # each segment sampled densely enough to leave no gap
            n = int(np.abs(np.diff(np.stack(to_px(x, y)), axis=1)).max(axis=0).sum()) + x.size
            t = np.linspace(0, x.size - 1, 2 * n)
            r, c = to_px(np.interp(t, np.arange(x.size), x), np.interp(t, np.arange(x.size), y))
            out[r, c] = colour
        if x.size < 50:
            r, c = to_px(x, y)
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    out[np.clip(r + dr, 0, height - 1), np.clip(c + dc, 0, width - 1)] = colour
    return out
