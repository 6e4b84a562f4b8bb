"""The lock on a sweep's ``out`` directory: one writer at a time, stale locks taken over.

While a sweep writes to ``out``, ``out/sweep.lock`` holds ``{"pid", "host", "started"}`` of the
writer. The file is created atomically (a complete temporary file hard-linked into place; ``O_EXCL``
on file systems without hard links), so a reader never sees half a lock. A second writer is refused
with :class:`OutDirInUse`, naming the lock and the pid; a lock whose process is dead (same host) is
stale and taken over with a warning (renamed aside first, so of two processes taking over one stale
lock only the first removes it).

Example::

    >>> import tempfile
    >>> from pathlib import Path
    >>> from interp.sweep.lock import DirLock
    >>> lock = DirLock(Path(tempfile.mkdtemp()))
    >>> lock.acquire(); lock.path.is_file()
    True
    >>> lock.release(); lock.path.exists()
    False
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

__all__ = ["DirLock", "LOCK_NAME", "OutDirInUse", "pid_alive"]

log = logging.getLogger(__name__)

#: the out directory's lock file
LOCK_NAME = "sweep.lock"


class OutDirInUse(ValueError):
    """Another live process is writing a sweep into this ``out`` directory."""


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (a live process of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


class DirLock:
    """An exclusive lock on a directory: a file created atomically (hard link of a complete file)."""

    def __init__(self, directory: Path):
        self.path = directory / LOCK_NAME
        self.owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        self.held = False

    def acquire(self) -> None:
        for _ in range(3):
            if self._create():
                self.held = True
                return
            holder = self._holder()
            if holder is None:
                continue  # it vanished (released, or taken over and released): try again
            pid, host = holder.get("pid"), holder.get("host")
            same_host = host == self.owner["host"]
            if same_host and isinstance(pid, int) and not pid_alive(pid):
                log.warning("Taking over the stale lock %s of process %s on %s, which is no longer running "
                            "(killed mid-sweep); resuming its sweep.", self.path, pid, host)
                self._remove_if(holder)
                continue
            raise OutDirInUse(
                f"{self.path.parent} is in use by another sweep: the lock {self.path} is held by process "
                f"{pid} on {host}. Wait for it to finish (the same sweep then resumes from its rows), use "
                f"another out directory, or, if process {pid} is gone" + ("" if same_host else f" on {host}")
                + f", delete {self.path}."
            )
        raise OutDirInUse(f"Could not take the lock {self.path}: other processes keep taking it. Retry.")

    def _create(self) -> bool:
        tmp = self.path.with_name(f"{LOCK_NAME}.{self.owner['pid']}.tmp")
        try:
            tmp.write_text(json.dumps(self.owner))
            try:
                os.link(tmp, self.path)  # atomic; fails when the lock exists
            except FileExistsError:
                return False
            except OSError:  # a file system without hard links
                try:
                    fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                except FileExistsError:
                    return False
                with os.fdopen(fd, "w") as f:
                    f.write(json.dumps(self.owner))
            return True
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def _holder(self) -> dict[str, Any] | None:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        try:
            holder = json.loads(text)
            return holder if isinstance(holder, dict) else {"pid": None, "host": None}
        except json.JSONDecodeError:
            return {"pid": None, "host": f"unknown (unreadable lock file: {text[:40]!r})"}

    def _remove_if(self, holder: dict[str, Any]) -> None:
        """Remove the lock if it is still ``holder``'s (two processes taking over one stale lock:
        only the first removes it)."""
        aside = self.path.with_name(f"{LOCK_NAME}.stale.{self.owner['pid']}")
        try:
            os.replace(self.path, aside)
        except FileNotFoundError:
            return
        try:
            if json.loads(aside.read_text()) != holder:  # someone else's fresh lock: put it back
                with contextlib.suppress(FileExistsError):
                    os.link(aside, self.path)
        except (OSError, json.JSONDecodeError):
            pass
        finally:
            with contextlib.suppress(FileNotFoundError):
                aside.unlink()

    def release(self) -> None:
        if self.held:
            self.held = False
            if self._holder() == self.owner:
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
