"""Training images in the formats users have, and the order the original's data loader feeds them.

Sources (:func:`load_images`, each as uint8 ``[N, H, W, 3]``):

* CIFAR-10's *binary* version: a ``.bin`` file or a folder of them (``data_batch_1.bin`` ...
  ``data_batch_5.bin`` for training, ``test_batch.bin``), each record one label byte and 3072 bytes
  of red, green, blue planes, read with NumPy (no pickle). The *python* version (``data_batch_1``
  pickles, ``batches.meta``) is refused with a pointer to the binary one;
* ``.npz`` files with ``x`` uint8 ``[N, H, W, 3]``, or ``data`` uint8 ``[N, 3 H W]`` in red, green,
  blue planes (the downsampled ImageNet 32x32 / 64x64 files);
* a folder of PNG files, in name order, of one size (decoded by Pillow: ``pip install pillow``, or this
  package's ``png`` extra): gray and palette images as RGB, alpha dropped, 16-bit images refused.

Labels (:func:`load_labels`, for class-conditional training): CIFAR-10 binary's label byte, an
``.npz``'s ``y`` (integers ``[N]``); :func:`one_hot` makes them the network's ``h`` as the original's
``train.py --class_conditional`` does (``tf.one_hot(y, num_labels)``, ``num_labels`` the largest
training label + 1).

Order (:class:`Batches`), as PixelCNN++'s ``DataLoader`` with ``shuffle``: one ``RandomState(seed)``
whose permutations compose (each epoch permutes the previous epoch's order); the data-dependent
init takes the first ``init_batch_size`` images of the first permutation, then the loader rewinds
and training starts a new permutation; an epoch's last incomplete batch is dropped. Without
shuffling the images come in file order, the init batch being the first ones. The order is a
function of the seed and the step, so a resumed run replays it.
"""

from __future__ import annotations

import glob
import os
import zipfile
import zlib

import numpy as np

CIFAR_SIDE = 32
CIFAR_RECORD = 1 + 3 * CIFAR_SIDE * CIFAR_SIDE  # label byte, then R, G, B planes


def read_cifar_bin(path: str) -> np.ndarray:
    """Images ``[N, 32, 32, 3]`` of one CIFAR-10 binary batch file."""
    size = os.path.getsize(path)
    if size == 0 or size % CIFAR_RECORD:
        raise ValueError(f"{path}: expected CIFAR-10 binary records of {CIFAR_RECORD} bytes; the file has {size} bytes")
    records = np.fromfile(path, np.uint8).reshape(-1, CIFAR_RECORD)
    return np.ascontiguousarray(records[:, 1:].reshape(-1, 3, CIFAR_SIDE, CIFAR_SIDE).transpose(0, 2, 3, 1))


def read_cifar_bin_labels(path: str) -> np.ndarray:
    """Labels ``[N]`` (int64, the record's first byte) of one CIFAR-10 binary batch file."""
    read_cifar_bin(path)  # the same size check, one message
    return np.fromfile(path, np.uint8).reshape(-1, CIFAR_RECORD)[:, 0].astype(np.int64)


def _refuse_cifar_python(path: str) -> None:
    with open(path, "rb") as f:
        head = f.read(2)
    if head[:1] == b"\x80":
        raise ValueError(f"{path}: this is CIFAR-10's python version (pickles, never unpickled here); use the binary "
                         "version, cifar-10-binary.tar.gz (data_batch_1.bin ... test_batch.bin)")


def read_npz_arrays(path: str, names: tuple[str, ...], what: str, others: bool = False) -> dict[str, np.ndarray]:
    """The named arrays of an ``.npz`` (any of ``names``; ``what`` says what the caller expects, for
    messages). Its members' names come from the zip's listing and are checked before any member is
    read: other names are refused, or with ``others`` left unread (a 4 GiB member of another name
    costs nothing either way); a single ``.npy``, a text file, an empty or a truncated archive are
    one-line errors (never unpickled: ``allow_pickle=False``)."""
    expected = f"an .npz archive of named arrays ({what})"
    with open(path, "rb") as f:
        head = f.read(6)
    if head == b"\x93NUMPY":
        try:
            shape = np.load(path, mmap_mode="r", allow_pickle=False).shape  # mapped: the header only is read
        except (OSError, ValueError, EOFError) as exc:
            raise ValueError(f"{path}: expected {expected}; received a damaged single array ({exc})") from None
        raise ValueError(f"{path}: expected {expected}; received a single array of shape {shape}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: expected {expected}; received {'an empty file' if not head else 'a file that is not a zip archive'}")
    try:
        with zipfile.ZipFile(path) as z:
            members = [n[: -len(".npy")] if n.endswith(".npy") else n for n in z.namelist()]
        unknown = sorted(set(members) - set(names))
        if others:
            members = [m for m in members if m in names]
        elif unknown:
            raise ValueError(f"{path}: expected {expected}; received also {unknown}")
        with np.load(path, allow_pickle=False) as archive:
            return {k: archive[k] for k in members}
    except (OSError, EOFError, zipfile.BadZipFile, ValueError) as exc:
        if str(exc).startswith(str(path)):
            raise
        raise ValueError(f"{path}: expected {expected}; could not read it ({type(exc).__name__}: {exc})") from None


def read_npz(path: str) -> np.ndarray:
    """``x`` ``[N, H, W, 3]`` or ``data`` ``[N, 3 H W]`` (planes) of an ``.npz``, uint8; nothing else is read."""
    arrays = read_npz_arrays(path, ("x", "data"), "x [N, H, W, 3] uint8, or data [N, 3 H W]", others=True)
    if "x" in arrays:
        x = arrays["x"]
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"{path}: expected x uint8 [N, H, W, 3]; received {x.dtype} {x.shape}")
        return x
    if "data" in arrays:
        d = arrays["data"]
        side = int(round((d.shape[-1] / 3) ** 0.5)) if d.ndim == 2 else 0
        if d.dtype != np.uint8 or d.ndim != 2 or 3 * side * side != d.shape[1]:
            raise ValueError(f"{path}: expected data uint8 [N, 3 H W] (square images); received {d.dtype} {d.shape}")
        return np.ascontiguousarray(d.reshape(-1, 3, side, side).transpose(0, 2, 3, 1))
    raise ValueError(f"{path}: expected an array x [N, H, W, 3] or data [N, 3 H W]; the archive holds none")


PNG_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA")  # Pillow's modes of PNGs of up to 8 bits a sample
PNG_BIT_DEPTH = 24  # offset of the bit depth in a PNG file: the 8-byte signature, IHDR's length and type, width, height


def read_png_folder(path: str, files: list[str]) -> np.ndarray:
    """uint8 ``[N, H, W, 3]`` from ``files`` (PNGs of one size, in the order given), decoded by Pillow:
    gray and palette images as RGB, an alpha channel dropped; 16-bit images are refused (their values
    are not on the 8-bit grid the loss models; Pillow opens 16-bit RGB as 8-bit ``RGB``, so the depth
    is read from the file's header)."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise ImportError(f"{path}: reading a folder of PNG files needs Pillow: pip install pillow") from None
    images = []
    for name in files:
        try:
            with Image.open(name) as im:
                with open(name, "rb") as f:
                    depth = f.read(PNG_BIT_DEPTH + 1)[PNG_BIT_DEPTH:]
                if im.format != "PNG" or im.mode not in PNG_MODES or depth > b"\x08":
                    raise ValueError(f"{name}: expected a PNG of 8 bits a sample at most (gray, palette or RGB, alpha "
                                     f"allowed); received {im.format} in mode {im.mode}"
                                     + (f", {depth[0]} bits a sample" if im.format == "PNG" and depth else ""))
                a = np.asarray(im.convert("RGB"), np.uint8)
        except (UnidentifiedImageError, Image.DecompressionBombError, SyntaxError, EOFError, OSError, zlib.error) as exc:
            raise ValueError(f"{name}: expected a PNG image; it could not be read ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
        if images and a.shape != images[0].shape:
            raise ValueError(f"{name}: expected every image {images[0].shape[:2]} like the first; received {a.shape[:2]}")
        images.append(a)
    return np.stack(images)


def _cifar_bins(folder: str, split: str) -> list[str]:
    """A CIFAR-10 binary folder's files of ``split``: ``data_batch_*.bin`` (train) or ``test_batch.bin``."""
    return sorted(glob.glob(os.path.join(folder, "data_batch_*.bin")) if split == "train" else
                  glob.glob(os.path.join(folder, "test_batch.bin")))


def load_images(path: str, split: str = "train") -> np.ndarray:
    """uint8 ``[N, H, W, 3]`` from a CIFAR-10 binary file or folder (``split``: ``train`` takes the
    ``data_batch_*.bin`` files, ``test`` ``test_batch.bin``), an ``.npz``, or a folder of PNGs."""
    if os.path.isdir(path):
        bins = _cifar_bins(path, split)
        if bins:
            return np.concatenate([read_cifar_bin(b) for b in bins])
        for name in ("data_batch_1", "test_batch", "batches.meta"):
            if os.path.isfile(os.path.join(path, name)):
                _refuse_cifar_python(os.path.join(path, name))
        pngs = sorted(glob.glob(os.path.join(path, "*.png")))
        if pngs:
            return read_png_folder(path, pngs)
        raise ValueError(f"{path}: expected CIFAR-10 binary batches (data_batch_*.bin, test_batch.bin) or PNG files; found neither")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.endswith(".bin"):
        return read_cifar_bin(path)
    if path.endswith(".npz"):
        return read_npz(path)
    _refuse_cifar_python(path)
    raise ValueError(f"{path}: expected a CIFAR-10 .bin file or folder, an .npz or a folder of PNGs")


def load_labels(path: str, split: str = "train") -> np.ndarray:
    """int64 labels ``[N]`` of the images :func:`load_images` reads from ``path``: CIFAR-10 binary's label
    byte, or an ``.npz``'s ``y`` (non-negative integers, one per image); a folder of PNGs has none."""
    if os.path.isdir(path):
        bins = _cifar_bins(path, split)
        if bins:
            return np.concatenate([read_cifar_bin_labels(b) for b in bins])
    elif path.endswith(".bin"):
        return read_cifar_bin_labels(path)
    elif path.endswith(".npz"):
        y = read_npz_arrays(path, ("y",), "y [N] integer labels", others=True).get("y")
        if y is None:
            raise ValueError(f"{path}: expected an array y [N] of integer labels for class-conditional training; the archive holds none")
        if y.ndim != 1 or y.dtype.kind not in "iu" or (y.size and y.min() < 0):
            raise ValueError(f"{path}: expected y [N] of non-negative integers; received {y.dtype} {y.shape}"
                             + (f" with minimum {y.min()}" if y.size and y.dtype.kind in "iu" else ""))
        return y.astype(np.int64)
    raise ValueError(f"{path}: class-conditional training needs labels: CIFAR-10 binary files or an .npz with y [N]; "
                     "a folder of PNGs carries none")


def one_hot(labels: np.ndarray, classes: int) -> np.ndarray:
    """float32 ``[N, classes]``, 1 at each label (the network's ``h``)."""
    return np.eye(classes, dtype=np.float32)[labels]


def to_model_range(x: np.ndarray, dtype: str = "float32") -> np.ndarray:
    """uint8 images to the network's [-1, 1]: ``(x - 127.5) / 127.5`` in double, then ``dtype`` (as train.py)."""
    return ((x.astype(np.float64) - 127.5) / 127.5).astype(dtype)


class Batches:
    """The original loader's order over ``n`` images: ``init()`` the init batch's indices, ``batch(s)``
    step s's (1-based) indices; a pure function of ``seed`` and ``s``."""

    def __init__(self, n: int, batch_size: int, seed: int, shuffle: bool = True, init_batch_size: int = 0) -> None:
        if batch_size < 1 or batch_size > n:
            raise ValueError(f"Expected a batch size in [1, {n}] (the number of images). Received: {batch_size}")
        if init_batch_size > n:
            raise ValueError(f"Expected an init batch size of at most {n} (the number of images). Received: {init_batch_size}")
        self.n, self.batch_size, self.seed, self.shuffle, self.init_batch_size = n, batch_size, seed, shuffle, init_batch_size
        self.per_epoch = n // batch_size
        self._orders: list[np.ndarray] = [np.arange(n)]
        self._rng = np.random.RandomState(seed)

    def _order(self, k: int) -> np.ndarray:
        """The order after ``k`` permutations (``k = 1``: the init's; ``k = e + 2``: training epoch e's)."""
        if not self.shuffle:
            return self._orders[0]
        while len(self._orders) <= k:
            self._orders.append(self._orders[-1][self._rng.permutation(self.n)])
            if len(self._orders) > 3:  # only the last two are ever asked for again
                self._orders[-3] = None  # type: ignore[call-overload]
        return self._orders[k]

    def init(self) -> np.ndarray:
        return self._order(1)[: self.init_batch_size]

    def epoch_of(self, step: int) -> int:
        return (step - 1) // self.per_epoch

    def batch(self, step: int) -> np.ndarray:
        epoch, i = divmod(step - 1, self.per_epoch)
        return self._order(epoch + 2)[i * self.batch_size:(i + 1) * self.batch_size]
