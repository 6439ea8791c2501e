"""Readable terminal output: Arrow tables as rich tables, and a rows/tokens progress bar."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ai_query.errors import ConfigError

MAX_CELL = 80
#: How many leading values of a vector a cell shows.
VECTOR_PREVIEW = 3


def explain_table(table: Any) -> Table:
    """EXPLAIN's rows (one per AI call) as a rich table with one column per call, so that its
    many figures stay readable on a narrow terminal."""
    out = Table(title="AI calls (EXPLAIN: no model was called)", header_style="bold")
    out.add_column("")
    calls = table.to_pylist()
    for call in calls:
        out.add_column(f"call {call['call']}", overflow="fold")
    for name in table.schema.names[1:]:
        out.add_row(name, *(_cell(call[name]) for call in calls))
    return out


def arrow_table(
    table: Any, *, title: str | None = None, max_rows: int = 20, wrap: bool = True
) -> Table:
    """A rich table of the first ``max_rows`` rows of a ``pyarrow.Table``.

    Args:
        table: the ``pyarrow.Table`` to show.
        title: shown above the table.
        max_rows: rows shown; a caption says how many there were.
        wrap: True wraps long cells over several lines; False keeps each row on one line and
            ends cells that do not fit the terminal with an ellipsis, so that narrow terminals
            get one readable line per row instead of tall, narrow columns.
    """
    import pyarrow as pa

    out = Table(title=title, show_lines=False, header_style="bold")
    for field in table.schema:
        # rich narrows only the "wrappable" columns to fit the terminal, widest first. Without
        # wrapping, text columns are the ones to narrow (their cells end in "…"); ids, numbers
        # and vector previews keep their width.
        is_text = pa.types.is_string(field.type) or pa.types.is_large_string(field.type)
        out.add_column(field.name, overflow="fold", no_wrap=not wrap and not is_text)
    for row in table.slice(0, max_rows).to_pylist():
        cells = [_cell(v) for v in row.values()]
        if not wrap:
            for cell in cells:
                cell.no_wrap = True
                cell.overflow = "ellipsis"
        out.add_row(*cells)
    if table.num_rows > max_rows:
        out.caption = f"{max_rows} of {table.num_rows} rows shown"
    return out


def _cell(value: Any) -> Text:
    # Text, not markup strings: a "[" in a model's answer must print as itself.
    if value is None:
        return Text("NULL", style="dim")
    if isinstance(value, list) and value and all(isinstance(v, float) for v in value):
        return Text(vector_preview(value))
    if isinstance(value, float):
        return Text(f"{value:.4g}")
    if isinstance(value, dict):
        text = ", ".join(f"{k}: {'NULL' if v is None else v}" for k, v in value.items())
    else:
        text = str(value)
    text = text.replace("\n", " ")
    return Text(text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…")


def vector_preview(values: list[float]) -> str:
    """A vector's first values and its length, e.g. ``[0.012, -0.034, 0.056, …] 384 dims``."""
    head = ", ".join(f"{v:.3f}" for v in values[:VECTOR_PREVIEW])
    more = ", …" if len(values) > VECTOR_PREVIEW else ""
    return f"[{head}{more}] {len(values)} dims"


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
    """A progress bar fed with (rows, prompt_tokens, completion_tokens, reasoning_tokens)
    increments."""

    def __init__(
        self, progress: Progress, task: Any, spent: Callable[[], Any] | None = None
    ) -> None:
        self._progress = progress
        self._task = task
        self._spent = spent
        self.rows = 0
        """Rows answered."""
        self.prompt_tokens = 0
        """Tokens read."""
        self.completion_tokens = 0
        """Tokens generated."""
        self.reasoning_tokens = 0
        """Of the tokens generated, those reasoning models spent reasoning."""
        self.started = time.perf_counter()
        """When the bar started."""

    def __call__(
        self, rows: int, prompt_tokens: int, completion_tokens: int, reasoning_tokens: int = 0
    ) -> None:
        self.rows += rows
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        self.reasoning_tokens += reasoning_tokens
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        rate = f"{self.rows / elapsed:.1f} rows/s, {self.completion_tokens / elapsed:.0f} tok/s"
        rate += f", {self.prompt_tokens + self.completion_tokens:,} tokens"
        if self.reasoning_tokens:
            rate += f" ({self.reasoning_tokens:,} reasoning)"
        spent = self._spent() if self._spent is not None else None
        if spent is not None and spent.cost:
            rate += f", cost {spent.cost:.4g}"
        self._progress.update(self._task, advance=rows, rate=rate)


@contextmanager
def row_progress(
    console: Console, label: str, total: int | None, spent: Callable[[], Any] | None = None
) -> Iterator[RowProgress]:
    """Show a progress bar for rows answered while the block runs: rows, rate, tokens so far,
    and the cost so far where ``spent()`` (an :class:`~ai_query.engine.core.budget.Allowance`
    or None) has one."""
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
        yield RowProgress(progress, task, spent)
