"""Start-up timings: where the seconds before the first answer go.

With ``AI_QUERY_TIMINGS=FILE`` set, :func:`mark` appends one JSON line per step to ``FILE``
(``{"t": unix time, "pid": ..., "step": ..., ...}``). A private engine server inherits the
variable, so the CLI's steps and its server's land in one file on one clock;
``bench/cold_start.py`` reads it. Unset (the default), :func:`mark` does nothing.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from ai_query.config import settings


def mark(step: str, **details: Any) -> None:
    """Record that ``step`` ended now (when ``AI_QUERY_TIMINGS`` names a file)."""
    path = settings().timings_file
    if path is None:
        return
    line = json.dumps({"t": time.time(), "pid": os.getpid(), "step": step, **details})
    try:
        with open(path, "a") as out:  # one short append per line: lines of processes never mix
            out.write(line + "\n")
    except OSError:  # a debugging aid must never fail the work it measures
        pass
