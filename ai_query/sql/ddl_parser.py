"""A small, strict recursive-descent parser for type DDL strings (Spark and DuckDB spellings).

sqlglot's ``DataType.build`` is lenient (it accepts ``ARRAY<STRING`` and ignores trailing
words), so ``returnType`` strings are parsed here instead, with exact error positions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from ai_query.errors import SQLParseError

T = TypeVar("T")


class TypeBuilder(Protocol[T]):
    """Builds the parsed types (:class:`ai_query.sql.types.SQLType` is one): the parser does
    not import the type model, the type model imports the parser."""

    def __call__(self, kind: str) -> T: ...

    def array(self, element: T) -> T: ...

    def struct(self, fields: list[tuple[str, T]]) -> T: ...

    def map(self, key: T, value: T) -> T: ...

    def decimal(self, precision: int = 10, scale: int = 0) -> T: ...

#: Scalar type names (upper case) and the canonical kind each one means.
SCALAR_ALIASES: dict[str, str] = {
    "STRING": "STRING", "VARCHAR": "STRING", "TEXT": "STRING", "CHAR": "STRING",
    "NVARCHAR": "STRING", "BPCHAR": "STRING",
    "BOOLEAN": "BOOLEAN", "BOOL": "BOOLEAN", "LOGICAL": "BOOLEAN",
    "TINYINT": "TINYINT", "BYTE": "TINYINT", "INT1": "TINYINT",
    "SMALLINT": "SMALLINT", "SHORT": "SMALLINT", "INT2": "SMALLINT",
    "INT": "INT", "INTEGER": "INT", "INT4": "INT", "SIGNED": "INT",
    "BIGINT": "BIGINT", "LONG": "BIGINT", "INT8": "BIGINT",
    "FLOAT": "FLOAT", "REAL": "FLOAT", "FLOAT4": "FLOAT",
    "DOUBLE": "DOUBLE", "FLOAT8": "DOUBLE",
    "DECIMAL": "DECIMAL", "DEC": "DECIMAL", "NUMERIC": "DECIMAL",
    "DATE": "DATE",
    "TIMESTAMP": "TIMESTAMP", "TIMESTAMP_NTZ": "TIMESTAMP", "TIMESTAMP_LTZ": "TIMESTAMP",
    "TIMESTAMPTZ": "TIMESTAMP", "DATETIME": "TIMESTAMP",
    "BINARY": "BINARY", "BLOB": "BINARY", "BYTEA": "BINARY", "VARBINARY": "BINARY",
}  # fmt: skip
_LENGTH_PARAM_KINDS = frozenset({"STRING", "BINARY"})
_NESTED_NAMES = frozenset({"ARRAY", "STRUCT", "ROW", "MAP"})

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<word>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<num>\d+)
      | `(?P<bq>(?:[^`]|``)*)`
      | "(?P<dq>(?:[^"]|"")*)"
      | '(?P<sq>(?:[^'\\]|\\.|'')*)'
      | (?P<punct>[<>(),:\[\]])
    )""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class _Token:
    kind: str  # word, num, name (quoted identifier), str, punct, end
    text: str
    pos: int


class _Fail(Exception):
    """Internal: a parse failure at a position (turned into SQLParseError at the boundary)."""

    def __init__(self, message: str, pos: int) -> None:
        super().__init__(message)
        self.message = message
        self.pos = pos


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            start = len(text) - len(text[pos:].lstrip())
            raise _Fail(f"unexpected character {text[start]!r}", start)
        kind = match.lastgroup or ""
        value = match.group(kind)
        start = match.start(kind) - (1 if kind in ("bq", "dq", "sq") else 0)
        if kind == "bq":
            tokens.append(_Token("name", value.replace("``", "`"), start))
        elif kind == "dq":
            tokens.append(_Token("name", value.replace('""', '"'), start))
        elif kind == "sq":
            tokens.append(_Token("str", value, start))
        else:
            tokens.append(_Token(kind, value, start))
        pos = match.end()
    tokens.append(_Token("end", "", len(text)))
    return tokens


class _Parser(Generic[T]):
    def __init__(self, tokens: list[_Token], make: TypeBuilder[T]) -> None:
        self.tokens = tokens
        self.i = 0
        self.make = make

    @property
    def tok(self) -> _Token:
        return self.tokens[self.i]

    def take(self) -> _Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def accept(self, text: str) -> bool:
        tok = self.tok
        if tok.kind in ("punct", "word") and tok.text.upper() == text:
            self.i += 1
            return True
        return False

    def expect(self, text: str) -> None:
        if not self.accept(text):
            raise _Fail(f"expected {text!r} but found {self._describe()}", self.tok.pos)

    def _describe(self) -> str:
        return "end of input" if self.tok.kind == "end" else repr(self.tok.text)

    def parse_type(self) -> T:
        tok = self.tok
        if tok.kind != "word":
            raise _Fail(f"expected a type name but found {self._describe()}", tok.pos)
        self.take()
        name = tok.text.upper()
        if name == "ARRAY":
            typ = self._array()
        elif name in ("STRUCT", "ROW"):  # ROW: DuckDB's older name for STRUCT
            typ = self._struct(tok.pos)
        elif name == "MAP":
            typ = self._map()
        elif name in SCALAR_ALIASES:
            typ = self._scalar(SCALAR_ALIASES[name], tok.pos)
        else:
            raise _Fail(f"unknown type {tok.text!r}", tok.pos)
        while self.accept("["):  # DuckDB list syntax: VARCHAR[], INT[3]
            if self.tok.kind == "num":
                self.take()
            self.expect("]")
            typ = self.make.array(typ)
        return typ

    def _array(self) -> T:
        self.expect("<")
        element = self.parse_type()
        self.expect(">")
        return self.make.array(element)

    def _map(self) -> T:
        close = ">" if self.accept("<") else None
        if close is None:
            self.expect("(")
            close = ")"
        key = self.parse_type()
        self.expect(",")
        value = self.parse_type()
        self.expect(close)
        return self.make.map(key, value)

    def _struct(self, pos: int) -> T:
        close = ">" if self.accept("<") else None
        if close is None:
            self.expect("(")
            close = ")"
        fields = self.parse_fields(close)
        self.expect(close)
        if not fields:
            raise _Fail("STRUCT needs at least one field", pos)
        return self.make.struct(fields)

    def parse_fields(self, close: str) -> list[tuple[str, T]]:
        fields: list[tuple[str, T]] = []
        seen: set[str] = set()
        if self.tok.kind == "punct" and self.tok.text == close:
            return fields
        while True:
            tok = self.tok
            if tok.kind not in ("word", "name"):
                raise _Fail(f"expected a field name but found {self._describe()}", tok.pos)
            self.take()
            if tok.text.lower() in seen:
                raise _Fail(f"duplicate field name {tok.text!r}", tok.pos)
            seen.add(tok.text.lower())
            self.accept(":")
            fields.append((tok.text, self.parse_type()))
            if self.accept("NOT"):
                self.expect("NULL")
            if self.accept("COMMENT"):
                if self.tok.kind != "str":
                    raise _Fail("expected a string after COMMENT", self.tok.pos)
                self.take()
            if not self.accept(","):
                return fields

    def _scalar(self, kind: str, pos: int) -> T:
        if kind == "DOUBLE":
            self.accept("PRECISION")
        params: list[int] = []
        if self.accept("("):
            while True:
                if self.tok.kind != "num":
                    raise _Fail(f"expected a number but found {self._describe()}", self.tok.pos)
                params.append(int(self.take().text))
                if not self.accept(","):
                    break
            self.expect(")")
        if kind == "DECIMAL":
            return self._decimal(params, pos)
        if params and (kind not in _LENGTH_PARAM_KINDS or len(params) > 1):
            raise _Fail(f"type {kind} takes no parameters {tuple(params)}", pos)
        return self.make(kind)

    def _decimal(self, params: list[int], pos: int) -> T:
        if len(params) > 2:
            raise _Fail("DECIMAL takes at most (precision, scale)", pos)
        precision = params[0] if params else 10
        scale = params[1] if len(params) > 1 else 0
        if not 1 <= precision <= 38 or not 0 <= scale <= precision:
            raise _Fail(f"bad DECIMAL({precision}, {scale}): need 1 <= p <= 38, 0 <= s <= p", pos)
        return self.make.decimal(precision, scale)


def _line_col(text: str, pos: int) -> tuple[int, int]:
    before = text[:pos]
    return before.count("\n") + 1, pos - (before.rfind("\n") + 1) + 1


def parse_ddl(text: str, make: TypeBuilder[T]) -> T:
    """Parse a type DDL string, building types with ``make`` (the SQLType class).

    A whole-string type is tried first, then a bare Spark schema (``a INT, b STRING``).

    Raises:
        SQLParseError: ``bad returnType '<text>': <reason>`` with line and column.
    """
    if not text.strip():
        raise SQLParseError(f"bad returnType {text!r}: empty type string")
    try:
        tokens = _tokenize(text)
    except _Fail as exc:
        line, col = _line_col(text, exc.pos)
        raise SQLParseError(f"bad returnType {text!r}: {exc.message}", line, col) from None
    failures: list[_Fail] = []
    for schema in (False, True):
        parser = _Parser(tokens, make)
        try:
            if schema:
                typ = make.struct(parser.parse_fields("end"))
            else:
                typ = parser.parse_type()
            if parser.tok.kind != "end":
                raise _Fail(f"unexpected {parser.tok.text!r} after the type", parser.tok.pos)
            return typ
        except _Fail as exc:
            failures.append(exc)
    # Report the reading the author most likely meant: a type when the text starts with a type
    # name (or is one unknown word), else a schema.
    first = tokens[0]
    type_like = first.kind == "word" and (
        first.text.upper() in SCALAR_ALIASES or first.text.upper() in _NESTED_NAMES
    )
    best = failures[0] if type_like or tokens[1].kind == "end" else failures[1]
    raise SQLParseError(f"bad returnType {text!r}: {best.message}", *_line_col(text, best.pos))
