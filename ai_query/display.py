"""Readable terminal output: Arrow tables as rich tables, and a rows/tokens progress bar."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from ai_query.errors import ConfigError

MAX_CELL = 80


def arrow_table(table: Any, *, title: str | None = None, max_rows: int = 20) -> Table:
    """A rich table of the first ``max_rows`` rows of a ``pyarrow.Table``."""
    out = Table(title=title, show_lines=False, header_style="bold")
    for name in table.column_names:
        out.add_column(name, overflow="fold")
    for row in table.slice(0, max_rows).to_pylist():
        out.add_row(*(_cell(v) for v in row.values()))
    if table.num_rows > max_rows:
        out.caption = f"{max_rows} of {table.num_rows} rows shown"
    return out


def _cell(value: Any) -> str:
    if value is None:
        return "[dim]NULL[/dim]"
    if isinstance(value, list) and value and isinstance(value[0], float):
        head = ", ".join(f"{v:.3f}" for v in value[:3])
        return f"[{head}, ...] ({len(value)} floats)"
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value).replace("\n", " ")
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def write_table(table: Any, path: Path) -> None:
    """Write a ``pyarrow.Table`` to ``.parquet``, ``.csv`` or ``.json`` (JSON lines)."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, path)
    elif suffix == ".csv":
        import pyarrow.csv as pcsv

        pcsv.write_csv(_flatten_for_csv(table), path)
    elif suffix in (".json", ".jsonl"):
        import json

        with path.open("w") as fh:
            for row in table.to_pylist():
                fh.write(json.dumps(row, default=str, ensure_ascii=False) + "\n")
    else:
        raise ConfigError(f"--output must end in .parquet, .csv or .json, got {path.name!r}")


def _flatten_for_csv(table: Any) -> Any:
    import json

    import pyarrow as pa

    columns = []
    for col in table.columns:
        if pa.types.is_nested(col.type):
            col = pa.array(
                [None if v is None else json.dumps(v, default=str) for v in col.to_pylist()]
            )
        columns.append(col)
    return pa.table(columns, names=table.column_names)


class RowProgress:
    """A progress bar fed with (rows, prompt_tokens, completion_tokens) increments."""

    def __init__(self, progress: Progress, task: Any) -> None:
        self._progress = progress
        self._task = task
        self.rows = 0
        """Rows answered."""
        self.prompt_tokens = 0
        """Tokens read."""
        self.completion_tokens = 0
        """Tokens generated."""
        self.started = time.perf_counter()
        """When the bar started."""

    def __call__(self, rows: int, prompt_tokens: int, completion_tokens: int) -> None:
        self.rows += rows
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        self._progress.update(
            self._task,
            advance=rows,
            rate=f"{self.rows / elapsed:.1f} rows/s, {self.completion_tokens / elapsed:.0f} tok/s",
        )


@contextmanager
def row_progress(console: Console, label: str, total: int | None) -> Iterator[RowProgress]:
    """Show a progress bar for rows answered while the block runs."""
    progress = Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} rows" if total else "{task.completed} rows"),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    with progress:
        task = progress.add_task(label, total=total, rate="")
        yield RowProgress(progress, task)
