"""One run of a job at a time: an exclusive ``flock`` on a lock file in the job's state dir.

The operating system drops the lock when the holding process dies (even under ``kill -9``),
so a crashed run never leaves the job stuck. The file holds the holder's pid and start time
for messages; the file itself stays (removing a lock file that others may have open is racy).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from types import TracebackType

from ai_query.errors import JobLockedError


class JobLock:
    """An exclusive, non-blocking, process-death-safe lock on ``path``.

    Use as a context manager; :meth:`acquire` raises :class:`JobLockedError` when another
    run (in this or another process) holds it.
    """

    def __init__(self, path: str | Path, job_name: str = "job") -> None:
        self.path = Path(path)
        self.job_name = job_name
        self._fd: int | None = None

    def acquire(self) -> JobLock:
        """Take the lock now or fail.

        Raises:
            JobLockedError: naming the pid and start time of the run holding it.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = read_holder(self.path)
            who = f" (pid {holder.get('pid')}, started {holder.get('started')})" if holder else ""
            raise JobLockedError(
                f"job {self.job_name!r} is already running{who}; lock {self.path}"
            ) from None
        os.ftruncate(fd, 0)
        info = {"pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Let go of the lock (closing the file releases the flock)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._fd is not None

    def __enter__(self) -> JobLock:
        return self.acquire()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def read_holder(path: str | Path) -> dict[str, object]:
    """The pid/start time written by the current holder, or {} when unknown."""
    try:
        text = Path(path).read_text()
        data = json.loads(text) if text.strip() else {}
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def is_locked(path: str | Path) -> bool:
    """True when some process holds the lock at ``path`` right now."""
    if not Path(path).exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
