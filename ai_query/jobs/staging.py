"""The staging area: batches of the run in progress, committed one by one, durable on disk.

Layout under ``<state_dir>/staging``::

    manifest.json               run id, job fingerprint, run kind, start time
    batch-000001.out.parquet    the batch's output rows (+ the hidden ``__aiq_fp`` column)
    batch-000001.err.parquet    its failed rows: key, __aiq_fp, column, endpoint, message, failed_at
    batch-000001.keys.parquet   the batch's driving rows: key columns and ``__aiq_fp``

Every file is written to a temporary name, fsynced, and renamed into place; the keys file is
renamed last and is the batch's commit point. On resume, data files without a keys file are
leftovers of a batch killed half-way and are removed; committed batches are kept and their rows
skipped. A manifest from another job definition or run kind is discarded.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_BATCH = re.compile(r"^batch-(\d{6})\.(out|err|keys)\.parquet$")


@dataclass(frozen=True)
class StagedBatch:
    """The files of one committed batch."""

    number: int
    """Batch number, from 1."""
    output: Path
    """Output rows."""
    errors: Path
    """Failed rows."""
    keys: Path
    """Driving rows (the commit marker)."""


class Staging:
    """Committed batches of one run of a job, in ``root``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.manifest: dict[str, object] = {}

    @property
    def run_id(self) -> str:
        """The id of the run the staged batches belong to."""
        return str(self.manifest.get("run_id", ""))

    def open(self, job_fingerprint: str, kind: str) -> bool:
        """Resume the staged run when it matches, else start a new one.

        Args:
            job_fingerprint: :meth:`JobSpec.fingerprint` of the job now.
            kind: ``full``, ``incremental`` or ``retry``: how rows were chosen.

        Returns:
            True when committed batches of an interrupted run are kept (resume).
        """
        found = self._read_manifest()
        if found and found.get("job") == job_fingerprint and found.get("kind") == kind:
            self.manifest = found
            self._drop_uncommitted()
            return bool(self.batches())
        self.discard()
        self.root.mkdir(parents=True, exist_ok=True)
        self.manifest = {
            "run_id": time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8],
            "job": job_fingerprint,
            "kind": kind,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        write_durably(
            self.root / "manifest.json", lambda p: p.write_text(json.dumps(self.manifest))
        )
        return False

    def _read_manifest(self) -> dict[str, object] | None:
        try:
            data = json.loads((self.root / "manifest.json").read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _drop_uncommitted(self) -> None:
        committed = {b.number for b in self.batches()}
        for path in self.root.iterdir():
            match = _BATCH.match(path.name)
            if path.name.endswith(".tmp") or (match and int(match.group(1)) not in committed):
                path.unlink(missing_ok=True)

    def batches(self) -> list[StagedBatch]:
        """The committed batches, in order."""
        if not self.root.is_dir():
            return []
        numbers = sorted(
            int(m.group(1))
            for m in (_BATCH.match(p.name) for p in self.root.iterdir())
            if m and m.group(2) == "keys"
        )
        return [self.batch(n) for n in numbers]

    def batch(self, number: int) -> StagedBatch:
        """The file names of batch ``number``."""
        stem = self.root / f"batch-{number:06d}"
        return StagedBatch(
            number,
            Path(f"{stem}.out.parquet"),
            Path(f"{stem}.err.parquet"),
            Path(f"{stem}.keys.parquet"),
        )

    def next_batch(self) -> StagedBatch:
        """File names for the next batch to commit."""
        numbers = [
            int(m.group(1)) for m in (_BATCH.match(p.name) for p in self.root.iterdir()) if m
        ]
        return self.batch(max(numbers, default=0) + 1)

    def commit(self, batch: StagedBatch, writers: dict[str, Callable[[Path], object]]) -> None:
        """Write a batch: ``writers`` maps ``out``/``err``/``keys`` to a function writing a path.

        The keys file is written last; once it is in place the batch is committed.
        """
        write_durably(batch.output, writers["out"])
        write_durably(batch.errors, writers["err"])
        write_durably(batch.keys, writers["keys"])
        fsync_dir(self.root)

    def discard(self) -> None:
        """Remove every staged file (after a publish, or when the staged run is stale)."""
        shutil.rmtree(self.root, ignore_errors=True)
        self.manifest = {}


def write_durably(path: Path, write: Callable[[Path], object]) -> None:
    """Write ``path`` through a temporary file: written, fsynced, then renamed into place."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    write(tmp)
    fsync_file(tmp)
    os.replace(tmp, path)


def fsync_file(path: Path) -> None:
    """Flush a file's data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries (renames) to disk, where the platform allows it."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
