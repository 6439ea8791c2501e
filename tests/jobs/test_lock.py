"""One run per job: the flock lock, released by the OS when its holder dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ai_query.errors import JobLockedError
from ai_query.jobs.lock import JobLock, is_locked, read_holder


def test_second_holder_is_refused_with_the_first_ones_pid(tmp_path: Path) -> None:
    path = tmp_path / "state" / "job.lock"
    with JobLock(path, "nightly") as held:
        assert held.held and is_locked(path)
        assert read_holder(path)["pid"] == os.getpid()
        with pytest.raises(
            JobLockedError, match=rf"job 'nightly' is already running \(pid {os.getpid()}"
        ):
            JobLock(path, "nightly").acquire()
    assert not is_locked(path)
    with JobLock(path):  # free again
        pass


def test_a_killed_holder_does_not_leave_the_lock_stuck(tmp_path: Path) -> None:
    path = tmp_path / "job.lock"
    code = (
        "import sys, time; from ai_query.jobs.lock import JobLock;"
        f"JobLock({str(path)!r}).acquire(); print('held', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        with pytest.raises(JobLockedError):
            JobLock(path).acquire()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.monotonic() + 5
    while is_locked(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    with JobLock(path):
        assert read_holder(path)["pid"] == os.getpid()
