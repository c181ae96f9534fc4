"""The run directory's lock: one ``ssm-metarl run`` writes a run directory at a time.

``RunLock(run_dir)`` holds ``<run_dir>/run.lock`` for as long as a run uses the directory: an
exclusive ``flock`` on the file (the kernel drops it when the holding process dies, however it
dies) and, in the file, the holder's pid, host, start time and command, so that a second run is
refused with a message that names who holds the directory. A lock file whose flock is free was
left by a process that died without releasing it (kill -9, a power cut): it is taken over with a
warning. A lock file written on another host is never taken over, since that host's processes
cannot be checked from here; the message says to delete the file if that run is gone. Where the
file system has no flock, the pid alone decides (alive on this host: held; else stale).

Released (the file removed) on exit from the ``with`` block, errors and KeyboardInterrupt
included.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
import platform
import sys
from pathlib import Path
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)
LOCK_NAME = "run.lock"


class RunLockedError(OSError):
    """Another run holds the run directory (or may: a lock written on another host)."""


def this_host() -> str:
    return platform.node()


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a running process on this host (an exited, unreaped zombie is not)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (not Linux): existence is all we know
    return stat.rsplit(")", 1)[-1].split()[:1] != ["Z"]


def describe(holder: dict[str, Any]) -> str:
    """``pid 123 on host h (since 2024-...)``, or what is known of a lock file's holder."""
    if not holder.get("pid"):
        return "a run that has not written its pid yet"
    text = f"pid {holder['pid']} on host {holder.get('host', '?')}"
    return text + (f" (since {holder['started']})" if holder.get("started") else "")


def _read(fd: int) -> dict[str, Any]:
    """The lock file's content as a dict ({} when empty or unreadable)."""
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    try:
        holder = json.loads(b"".join(chunks).decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return holder if isinstance(holder, dict) else {}


class RunLock:
    """Exclusive use of a run directory by this process (a context manager).

    Args:
        run_dir: an existing run directory; the lock file is ``run_dir / "run.lock"``.

    Raises (on entry):
        RunLockedError: a live run holds the directory, or a lock file from another host does.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None
        self._flock = True

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    @property
    def held(self) -> bool:
        return self._fd is not None

    def _same_file(self, fd: int) -> bool:
        """Whether ``fd`` is still the file at ``self.path`` (a releasing holder removes it)."""
        try:
            here, mine = os.stat(self.path), os.fstat(fd)
        except FileNotFoundError:
            return False
        return (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino)

    def _refuse(self, fd: int, message: str) -> RunLockedError:
        os.close(fd)
        return RunLockedError(message)

    def acquire(self) -> None:
        """Take the lock, or raise ``RunLockedError`` naming its holder; takes over a stale one."""
        if self._fd is not None:
            return
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise self._refuse(
                    fd, f"--out {self.run_dir}: expected a directory no other run is using, but "
                    f"{describe(_read(fd))} holds {self.path}; wait for it to finish or use another --out"
                ) from None  # fmt: skip
            except OSError:  # no flock on this file system: the pid alone decides below
                self._flock = False
            if self._same_file(fd):
                break
            os.close(fd)  # its holder released and removed it meanwhile: lock the new file
        holder = _read(fd)
        if holder.get("pid") or holder.get("host"):
            self._take_over(fd, holder)
        mine = {
            "pid": os.getpid(),
            "host": this_host(),
            "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "command": " ".join(sys.argv),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(mine, indent=2).encode() + b"\n", 0)
        os.fsync(fd)
        self._fd = fd

    def _take_over(self, fd: int, holder: dict[str, Any]) -> None:
        """The file names a holder although its flock was free (or there is no flock): take it
        over if that holder is gone, else raise."""
        host, pid = holder.get("host"), holder.get("pid")
        if host != this_host():
            raise self._refuse(
                fd, f"--out {self.run_dir}: {self.path} names {describe(holder)}, which cannot be "
                f"checked from host {this_host()}; if that run has ended, delete {self.path}"
            )  # fmt: skip
        if not self._flock and isinstance(pid, int) and (pid == os.getpid() or pid_alive(pid)):
            raise self._refuse(
                fd, f"--out {self.run_dir}: expected a directory no other run is using, but "
                f"{describe(holder)} holds {self.path}; wait for it to finish or use another --out"
            )  # fmt: skip
        log.warning("%s: stale lock of %s (that run ended without releasing it); taking it over",
                    self.path, describe(holder))  # fmt: skip

    def release(self) -> None:
        """Remove the lock file and drop the lock (a no-op when not held)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if self._same_file(fd) and (self._flock or _read(fd).get("pid") == os.getpid()):
                self.path.unlink()
        except OSError:
            pass  # the directory went away: nothing left to release but the flock
        finally:
            os.close(fd)
