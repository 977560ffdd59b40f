"""Every file the project writes goes through :func:`atomic_path`, and every command checks its
outputs first with :func:`check_outputs`: nothing is half-written, and nothing the command reads is
written over.

The content is written to a temporary file in the destination's directory (same file system), which
is renamed over the destination only once the write has finished (``os.replace``, atomic on POSIX and
Windows). A failed write (full disk, a crash, an exception) leaves the destination as it was and
removes the temporary file; two concurrent writers each rename a complete file, the last one wins.
A process killed mid-write (HDF5 can crash on a full disk while Keras writes ``.weights.h5``) leaves
the destination intact and a ``.tmp-*`` file beside it.

What a destination path may name (:func:`destination`), decided once for every writer:

* a regular file or nothing: replaced or created, as above;
* a symbolic link: followed, as ``open(path, "w")`` follows it: the file the link names is replaced
  and the link stays a link (renaming over the link itself would have replaced the link with a
  regular file); a dangling link or a loop is refused;
* a character device or a FIFO (``/dev/null``, ``/dev/stdout``, a named pipe): written *into*, as
  the operating system writes to one (the content is made in a temporary file first, then copied
  in); renaming over one would replace the system's node with a regular file;
* a directory, a block device or a socket: refused.

An output that names an input of the same command (the same file by any name: a link, a hard link,
a TF1 prefix and its ``.index``), or another output of it, is refused before any work
(:func:`check_outputs`): ``run --weights W --out W`` would have replaced the model by its outputs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from typing import Iterator, Mapping


def destination(path: str | os.PathLike, stream_ok: bool = True) -> tuple[str, bool]:
    """Where a write to ``path`` lands: the path to replace (a symbolic link followed) and whether it
    is a stream (a character device or a FIFO, written into); refuses what no write should touch
    (see the module's docstring). ``stream_ok=False`` refuses streams too (a format of several files)."""
    path = os.fspath(path)
    if os.path.islink(path):
        try:
            real = os.path.realpath(path, strict=True)
        except (OSError, RuntimeError) as exc:
            raise ValueError(f"expected {path!r} to be a file or a link to one; received a symbolic link that "
                             f"leads nowhere ({exc.__class__.__name__}: {exc})") from None
    else:
        real = path
    try:
        mode = os.stat(real).st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and (stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)):
        if not stream_ok:
            raise ValueError(f"expected a file path to write; received a {'FIFO' if stat.S_ISFIFO(mode) else 'character device'}: {path!r}")
        return real, True
    if mode is not None and stat.S_ISDIR(mode):
        raise IsADirectoryError(f"expected a file path to write; received a directory: {path!r}")
    if mode is not None and not stat.S_ISREG(mode):
        kind = "block device" if stat.S_ISBLK(mode) else "socket" if stat.S_ISSOCK(mode) else "special file"
        raise ValueError(f"expected a file path to write; received a {kind}: {path!r}")
    directory = os.path.dirname(os.path.abspath(real))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"expected an existing directory for {path!r}; received a missing one: {directory!r}")
    return real, False


def _names(path: str) -> set[str]:
    """The real paths a path may stand for: itself and, for a TF1 prefix, its ``.index`` (and back)."""
    forms = {path, path + ".index"}
    if path.endswith(".index"):
        forms.add(path[: -len(".index")])
    return {os.path.realpath(p) for p in forms}


def same_file(a: str, b: str) -> bool:
    """Whether two paths name the same file or folder: by name (links resolved, a TF1 prefix and its
    files) or by inode (hard links, bind mounts)."""
    if _names(a) & _names(b):
        return True
    with contextlib.suppress(OSError):
        return os.path.samefile(a, b)  # hard links, bind mounts
    return False


def check_outputs(outputs: Mapping[str, str | os.PathLike | None], inputs: Mapping[str, str | os.PathLike | None]) -> None:
    """Before a command does any work: each output (by option name, e.g. ``{"--out": path}``; ``None``
    for one not given) is a path a write may land on (:func:`destination`) and names neither an input
    (same form) nor another output. Outputs that are streams (``/dev/null``) are written into and may
    repeat."""
    given_in = {k: os.fspath(v) for k, v in inputs.items() if v is not None}
    seen: dict[str, str] = {}
    for name, path in outputs.items():
        if path is None:
            continue
        path = os.fspath(path)
        if destination(path)[1]:
            continue
        for other, p in (*given_in.items(), *seen.items()):
            if same_file(path, p):
                raise ValueError(f"{name} {path} names the same file as {other} {p}; expected an output that names no "
                                 f"input and no other output (nothing was written)")
        seen[name] = path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yields a temporary path that keeps ``path``'s name's ending (``.weights.h5``, ``.npz``); on a clean
    exit its content becomes ``path`` (renamed into place; copied into a stream), on an error it is
    removed. What ``path`` may name: :func:`destination`."""
    path = os.fspath(path)
    real, stream = destination(path)
    if stream:
        with tempfile.TemporaryDirectory(prefix=".tmp-") as folder:
            tmp = os.path.join(folder, os.path.basename(path) or "out")
            yield tmp
            with open(tmp, "rb") as src, open(real, "wb") as dst:
                shutil.copyfileobj(src, dst)
        return
    directory = os.path.dirname(os.path.abspath(real))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix="-" + os.path.basename(real), dir=directory)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~umask)  # the permissions a plain open() would give, not mkstemp's 0600
        os.replace(tmp, real)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
