"""Atomic file writes, hashing and locks: a killed process or a full disk never leaves a half-written file in place,
and two processes never work on the same state at once."""
from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import hashlib
import json
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _naming(e: OSError, path: Path) -> OSError:
    """``e`` with a file name: an error of ``write``/``fsync`` (a full disk, ...) has none of its own."""
    if e.filename is not None:
        return e
    return OSError(e.errno, e.strerror or str(e), str(path))  # OSError picks the subclass of the errno


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Write through ``write(fileobj)`` into a temp file in the same directory, fsync, then rename over ``path``.

    An OSError (no space left, read-only file system, ...) names the file it concerns."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise _naming(e, path.parent) from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp creates 0600; results and weights are ordinary files
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise _naming(e, path) from None
        raise
    return path


def check_writable_directory(path: str | os.PathLike, what: str = "directory") -> None:
    """Raise OSError naming the path unless ``path`` is, or can be created as, a directory this process can
    write to. Nothing is created: the nearest existing ancestor is probed with a temporary file."""
    path = Path(path)
    existing = path
    while not existing.exists() and existing.parent != existing:
        if existing.is_symlink():  # a dangling link: mkdir would fail on it
            break
        existing = existing.parent
    if not existing.is_dir():
        why = "is not a directory" if existing == path else f"cannot be created: {existing} is not a directory"
        raise NotADirectoryError(errno.ENOTDIR, f"{what} {path} {why}", str(existing))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".lwta-write-test.", dir=existing)
    except OSError as e:
        raise OSError(e.errno, f"{what} {path} is not writable: {e.strerror or e}", str(existing)) from None
    os.close(fd)
    os.unlink(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def dumps_json(obj: Any) -> str:
    """Canonical JSON used for every result file (sorted keys, stable floats) so reruns are byte-identical."""
    return json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n"


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, dumps_json(obj))


@contextlib.contextmanager
def directory_lock(directory: str | os.PathLike) -> Iterator[None]:
    """An exclusive flock on ``directory`` itself (POSIX; no lock file to leave behind). Serialises writers of
    shared files in it (the weight manifest, evaluation entries assembled by concurrent shards)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: concurrent writers are not supported there
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


class LockHeldError(RuntimeError):
    """Another live process holds a :func:`run_lock`; the message names the lock file and its holder."""


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


LOCK_PATIENCE = 0.5  # seconds: a holder that is only releasing the lock (a moment of LOCK_EX) is waited for


def _open_locked(path: Path, flags: int, what: str) -> int:
    """Open ``path`` (created if needed) and flock it, waiting at most :data:`LOCK_PATIENCE`; LockHeldError naming
    its holder if that fails. Retries when the file was removed or replaced by its last holder in between."""
    import fcntl

    deadline = time.monotonic() + LOCK_PATIENCE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
        try:
            fcntl.flock(fd, flags | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            if time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            raise LockHeldError(f"{what} is in use: lock {path} is held by {holder}. Wait for that process to "
                                "finish or stop it, then rerun (a lock left by a process that died is taken over "
                                "automatically)") from None
        except BaseException:
            os.close(fd)
            raise
        if _same_file(fd, path):
            return fd
        os.close(fd)


@contextlib.contextmanager
def run_lock(path: str | os.PathLike, what: str, holder: str = "", shared: bool = False) -> Iterator[None]:
    """Hold the lock file ``path`` for the duration of a run (POSIX flock; elsewhere no lock).

    Exclusive, or ``shared`` with other shared holders (shards of one run). Another live holder in the way raises
    :class:`LockHeldError` at once, naming the file and the holder (pid, host, start, ``holder``) recorded in it.
    The kernel drops a flock with its process, so a lock file left by a process that died is simply taken over.
    The last holder removes the file."""
    try:
        import fcntl
    except ImportError:  # not POSIX: concurrent runs are not detected there
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _open_locked(path, fcntl.LOCK_SH if shared else fcntl.LOCK_EX, what)
    try:
        since = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        note = f"process {os.getpid()} on {socket.gethostname()} since {since}" + (f" ({holder})" if holder else "")
        with contextlib.suppress(OSError):  # the note only improves the message; the flock is the lock
            os.ftruncate(fd, 0)
            os.pwrite(fd, (note + "\n").encode(), 0)
        yield
    finally:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the last holder: nobody waits on this file
            if _same_file(fd, path):
                os.unlink(path)
        except OSError:
            pass  # another shard still holds it
        os.close(fd)
