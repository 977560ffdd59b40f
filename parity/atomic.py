"""Every file the project writes goes through :func:`atomic_path`: nothing is half-written.

The content is written to a temporary file in the destination's directory (same file system), which
is renamed over the destination only once the write has finished (``os.replace``, atomic on POSIX and
Windows). A failed write (full disk, a crash, an exception) leaves the destination as it was and
removes the temporary file; two concurrent writers each rename a complete file, the last one wins;
writing over the file being read works, since the reader's file is replaced only at the end.
A process killed mid-write (HDF5 can crash on a full disk while Keras writes ``.weights.h5``) leaves
the destination intact and a ``.tmp-*`` file beside it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yields a temporary path next to ``path`` that keeps its name's ending (``.weights.h5``, ``.npz``);
    on a clean exit it becomes ``path``, on an error it is removed."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"expected an existing directory for {path!r}; received a missing one: {directory!r}")
    if os.path.isdir(path):
        raise IsADirectoryError(f"expected a file path to write; received a directory: {path!r}")
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix="-" + os.path.basename(path), dir=directory)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~umask)  # the permissions a plain open() would give, not mkstemp's 0600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
