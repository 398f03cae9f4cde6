"""The folders commands write: checked before any work, one writer at a time, no stale temporaries.

- `ensure_out_dir`: an existing file at `--out`, or a place this process cannot write
  (read-only filesystem, no permission), fails at once, naming the path, instead of after
  the work whose results it would hold;
- `FolderLock`: an advisory `fcntl.flock` on FOLDER/.lock held while a process writes
  there. A second writer fails at once, naming the holder's PID (or waits, for a shared
  token cache). The kernel drops the lock when the holder's process ends, however it ends
  (kill -9 included), so no stale lock is ever left behind;
- `remove_stale`: everything is written under a temporary name and renamed when complete,
  so what a killed (or disk-full) writer leaves is only temporaries; the next start, holding
  the lock, removes them, so the disk space comes back before a resume needs it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import tempfile
from pathlib import Path

from .errors import UserError

LOCK_FILE = ".lock"
_PROBE = ".write-test-"
# Locks this process holds: path -> [fd, depth]. A study worker holds its run's lock and its
# fine-tuning session takes it again; a second flock on a new descriptor would block itself.
_HELD: dict[str, list[int]] = {}


def ensure_out_dir(path: str | Path, what: str = "--out") -> Path:
    """Create output folder `path` (and its parents) and prove it writable, before any work."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UserError(f"{what} is an existing file, not a folder", path=str(out))
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=_PROBE, dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"cannot write the {what} folder: {exc.strerror or exc}", path=str(out)) from None
    return out


class FolderLock:
    """`with FolderLock(folder, "run"):` one writer at a time (re-entrant within a process)."""

    def __init__(self, folder: str | Path, what: str = "run", wait: bool = False):
        self.folder, self.what, self.wait = Path(folder), what, wait
        self.key = str(self.folder.resolve())

    def __enter__(self) -> FolderLock:
        if self.key in _HELD:
            _HELD[self.key][1] += 1
            return self
        fd = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if self.wait else fcntl.LOCK_NB))
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise UserError(f"cannot lock the {self.what} folder: {exc.strerror}", path=str(self.folder)) from None
            raise UserError(f"another process (PID {holder}) is writing this {self.what}; wait for it to finish "
                            f"or stop it, then run again", path=str(self.folder)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        _HELD[self.key] = [fd, 1]
        return self

    def __exit__(self, *exc_info: object) -> None:
        entry = _HELD[self.key]
        entry[1] -= 1
        if entry[1] == 0:
            del _HELD[self.key]
            os.close(entry[0])  # closing the descriptor releases the lock


def lock_holder(folder: str | Path) -> int | None:
    """The PID recorded by the last process that locked `folder` (None if never locked)."""
    try:
        text = (Path(folder) / LOCK_FILE).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def remove_stale(folder: str | Path, patterns: tuple[str, ...]) -> list[str]:
    """Delete what matches `patterns` (globs relative to `folder`): temporaries of a killed
    writer. Call it holding the folder's lock, so no live writer owns them."""
    root, removed = Path(folder), []
    for pattern in (*patterns, _PROBE + "*"):
        for path in sorted(root.glob(pattern)):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
            removed.append(path.relative_to(root).as_posix())
    return removed
