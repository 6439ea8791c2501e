"""The most tokens a call may generate per row: its ``max_tokens``, else the engine's default.

One rule for the engine that generates (:mod:`ai_query.engine.local`), for EXPLAIN's output
ceiling and for budgets, which reserve a row's ceiling before sending it.
"""

from __future__ import annotations

from ai_query.catalog import Endpoint
from ai_query.options import CallOptions
from ai_query.sql.response_format import OutputSpec, resolve_output
from ai_query.tasks import Task

DEFAULT_MAX_TOKENS = 256
"""Generated tokens per row when the call sets no ``max_tokens``."""
DEFAULT_MAX_TOKENS_STRUCTURED = 512
"""The same for structured answers (a JSON object or a ``returnType``/``responseFormat``)."""


def default_max_tokens(output: OutputSpec) -> int:
    """The engine's ``max_tokens`` for a call with this output when the call sets none."""
    structured = output.json_schema is not None or output.json_object
    return DEFAULT_MAX_TOKENS_STRUCTURED if structured else DEFAULT_MAX_TOKENS


def output_ceiling(endpoint: Endpoint, options: CallOptions) -> int:
    """Tokens one row of this call may generate at most (0 for embeddings)."""
    if endpoint.task == Task.EMBEDDINGS:
        return 0
    output = resolve_output(options.return_type, options.response_format, endpoint.task)
    return options.model_parameters.max_tokens or default_max_tokens(output)
