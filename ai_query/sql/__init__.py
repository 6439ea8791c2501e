"""The SQL layer of ai_query: bind ``ai_query(...)`` calls, parse ``returnType`` DDL, transpile.

Only sqlglot is used here; nothing in this package touches an engine, Arrow or a database.
"""

from __future__ import annotations

from ai_query.sql.calls import AIQueryCall, bind_call, find_calls
from ai_query.sql.catalog_protocol import EndpointCatalog
from ai_query.sql.response_format import (
    OutputSpec,
    ResponseFormat,
    parse_response_format,
    resolve_output,
)
from ai_query.sql.transpile import transpile
from ai_query.sql.types import SQLType, embedding_type, error_struct, parse_return_type

__all__ = [
    "AIQueryCall",
    "EndpointCatalog",
    "OutputSpec",
    "ResponseFormat",
    "SQLType",
    "bind_call",
    "embedding_type",
    "error_struct",
    "find_calls",
    "parse_response_format",
    "parse_return_type",
    "resolve_output",
    "transpile",
]
