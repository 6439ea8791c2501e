"""The result cache: identical requests, across rows and across runs, answered without the model.

:class:`CachingEngine` wraps any :class:`~ai_query.engine.core.protocol.Engine`. For each request
batch of a deterministic call (temperature 0) it looks every request up in a
:class:`ResultCache` (an SQLite file), sends only the misses to the inner engine, stores their
successful answers, and stitches hits and misses back together in row order. Sampling calls
pass straight through. A key is the SHA-256 of:

* the endpoint, resolved through the catalog (an alias and its target share entries);
* the identity of its served models: the served entity minus its route name (bundled model
  name or model directory, engine arguments, external model name and API base, never a key),
  plus the model directory's ``config.json`` modification time, and the traffic routes;
* the call's modelParameters, returnType and responseFormat (not failOnError: it does not
  change the answer);
* the request text, and the SHA-256 of the row's file where it has one (``files =>``).

Answers are stored typed: text as text, vectors as float32/float64 bytes, structured results
as JSON restored with :func:`ai_query.engine.core.arrow_types.coerce`. Failed rows are never stored.
Hits report zero tokens: no tokens were paid for them.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ai_query.catalog import Endpoint, ServedEntity
from ai_query.engine.core.arrow_types import coerce, json_default, to_arrow
from ai_query.engine.core.batch import (
    RowOutcome,
    align_results,
    read_request_batch,
    read_request_files,
    request_batch,
    result_batch,
    stitch_results,
)
from ai_query.engine.core.forwarding import ForwardingEngine
from ai_query.engine.core.memo import RowKey, row_keys
from ai_query.engine.core.protocol import Engine
from ai_query.options import CallOptions
from ai_query.sql.response_format import resolve_output
from ai_query.sql.types import SQLType

#: (kind, value, prompt_tokens, completion_tokens) of one stored answer.
CachedAnswer = tuple[str, bytes | None, int, int]
_LOOKUP_CHUNK = 500


class ResultCache:
    """A persistent map of request key -> typed answer, in one SQLite file (thread-safe)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=60
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL commits survive a killed process
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, kind TEXT NOT NULL, "
            "value BLOB, prompt_tokens INTEGER, completion_tokens INTEGER, created REAL) "
            "WITHOUT ROWID"
        )

    def get_many(self, keys: Iterable[str]) -> dict[str, CachedAnswer]:
        """The stored answers among ``keys``."""
        wanted = list(dict.fromkeys(keys))
        found: dict[str, CachedAnswer] = {}
        with self._lock:
            for start in range(0, len(wanted), _LOOKUP_CHUNK):
                chunk = wanted[start : start + _LOOKUP_CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    "SELECT key, kind, value, prompt_tokens, completion_tokens FROM results "
                    f"WHERE key IN ({marks})",
                    chunk,
                ).fetchall()
                for key, kind, value, pt, ct in rows:
                    found[key] = (kind, value, int(pt or 0), int(ct or 0))
        return found

    def put_many(self, entries: Sequence[tuple[str, CachedAnswer]]) -> None:
        """Store answers (one transaction)."""
        if not entries:
            return
        now = time.time()
        rows = [(k, kind, value, pt, ct, now) for k, (kind, value, pt, ct) in entries]
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(
                    "INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?)", rows
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM results").fetchone()[0])

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._db.close()


def entity_identity(entity: ServedEntity) -> dict[str, Any]:
    """What decides a served entity's answers (no route name, no API key)."""
    data = entity.model_dump(mode="json", exclude_none=True, exclude={"name"})
    external = data.get("external_model")
    if external:
        config = external.get("openai_config", {})
        for secret in ("openai_api_key", "openai_api_key_plaintext"):
            config.pop(secret, None)
    elif entity.entity_name is not None:
        config_file = Path(str(entity.entity_name)).expanduser() / "config.json"
        if config_file.is_file():
            data["config_mtime_ns"] = config_file.stat().st_mtime_ns
    return data


def call_identity(endpoint: Endpoint, options: CallOptions) -> str:
    """The part of a cache key shared by every request of one call."""
    routes = endpoint.config.traffic_config
    data = {
        "endpoint": endpoint.name,
        "entities": [entity_identity(e) for e in endpoint.config.served_entities],
        "routes": routes.model_dump(mode="json") if routes else None,
        "modelParameters": options.model_parameters.to_dict(),
        "returnType": options.return_type,
        "responseFormat": options.response_format,
    }
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def request_key(identity: str, row: RowKey) -> str:
    """The cache key of one request row (its text, and its file's digest) under a call
    identity."""
    text, digest = row
    suffix = "" if digest is None else f"\nfile:{digest}"
    return hashlib.sha256(f"{identity}\n{text}{suffix}".encode()).hexdigest()


class CachingEngine(ForwardingEngine):
    """An :class:`Engine` that answers repeated deterministic requests from a cache.

    Thread-safe like the engine it wraps. ``hits``/``misses`` count request rows answered
    from the cache and sent to the inner engine; ``bypassed`` counts rows of sampling calls.
    """

    def __init__(self, inner: Engine, cache: ResultCache) -> None:
        super().__init__(inner)
        self.cache = cache
        self._lock = threading.Lock()
        self._identities: dict[str, tuple[str, SQLType]] = {}
        self.hits = 0
        """Rows answered from the cache."""
        self.misses = 0
        """Rows sent to the inner engine (cacheable calls)."""
        self.bypassed = 0
        """Rows of sampling calls, sent to the inner engine uncached."""

    def _call(self, options: CallOptions) -> tuple[str, SQLType]:
        key = options.to_json()
        with self._lock:
            known = self._identities.get(key)
        if known is None:
            endpoint = self.catalog.get(options.endpoint)
            output = resolve_output(options.return_type, options.response_format, endpoint.task)
            known = (call_identity(endpoint, options), output.sql_type)
            with self._lock:
                self._identities[key] = known
        return known

    def run(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Answer a request batch, from the cache where possible."""
        requests, options = read_request_batch(batch)
        if not options.model_parameters.deterministic:
            with self._lock:
                self.bypassed += sum(r is not None for r in requests)
            return self.inner.run(batch)
        identity, sql_type = self._call(options)
        files = read_request_files(batch)
        rows = row_keys(requests, files)
        keys = [None if r is None else request_key(identity, r) for r in rows]
        found = self.cache.get_many(k for k in keys if k is not None)
        hits: dict[int, Any] = {}
        for i, key in enumerate(keys):
            if key is not None and key in found:
                try:
                    hits[i] = decode_answer(found[key], sql_type)
                except ValueError:  # stored under an older type: ask the model again
                    continue
        missing = [i for i, k in enumerate(keys) if k is not None and i not in hits]
        with self._lock:
            self.hits += len(hits)
            self.misses += len(missing)
        if not hits:  # nothing cached: the inner result as it comes
            result = align_results(self.inner.run(batch), len(requests))
            self._store(result, keys, range(len(requests)))
            return result
        missing_set = set(missing)
        known = [i for i in range(len(requests)) if i not in missing_set]
        answered_here = result_batch(
            [RowOutcome(hits[i], cached=True) if i in hits else None for i in known],
            to_arrow(sql_type),
        )
        if not missing:
            return answered_here
        sub = request_batch(
            [requests[i] for i in missing],
            options,
            None if files is None else [files[i] for i in missing],
        )
        answered = align_results(self.inner.run(sub), len(missing))
        self._store(answered, [keys[i] for i in missing], range(len(missing)))
        return stitch_results([(answered_here, known), (answered, missing)])

    def preview(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """The inner engine's preview, with the rows this cache would answer marked cached."""
        result = super().preview(batch)
        requests, options = read_request_batch(batch)
        if not options.model_parameters.deterministic:
            return result
        identity = self._call(options)[0]
        rows = row_keys(requests, read_request_files(batch))
        keys = [None if r is None else request_key(identity, r) for r in rows]
        found = self.cache.get_many(k for k in keys if k is not None)
        cached = pc.or_(result.column("cached"), pa.array([k in found for k in keys]))
        return result.set_column(result.schema.get_field_index("cached"), "cached", cached)

    def _store(
        self, result: pa.RecordBatch, keys: Sequence[str | None], rows: Iterable[int]
    ) -> None:
        errors = result.column("error").to_pylist()
        ok = [i for i in rows if keys[i] is not None and errors[i] is None]
        if not ok:
            return
        encoded = encode_answers(result.column("result"), ok)
        pt = result.column("prompt_tokens").to_pylist()
        ct = result.column("completion_tokens").to_pylist()
        self.cache.put_many(
            [
                (str(keys[i]), (kind, value, pt[i] or 0, ct[i] or 0))
                for i, (kind, value) in zip(ok, encoded, strict=True)
            ]
        )


def encode_answers(column: pa.Array, rows: Sequence[int]) -> list[tuple[str, bytes | None]]:
    """(kind, bytes) per chosen row of a result column (see the module docstring)."""
    kind_type = column.type
    if pa.types.is_list(kind_type) and pa.types.is_floating(kind_type.value_type):
        dtype = np.float32 if pa.types.is_float32(kind_type.value_type) else np.float64
        kind = "f32" if dtype is np.float32 else "f64"
        flat = column.flatten().to_numpy(zero_copy_only=False).astype(dtype)
        offsets = column.offsets.to_numpy()
        valid = column.is_valid().to_numpy(zero_copy_only=False)
        return [
            (kind, flat[offsets[i] : offsets[i + 1]].tobytes()) if valid[i] else ("null", None)
            for i in rows
        ]
    values = column.take(pa.array(list(rows), pa.int64())).to_pylist()
    if pa.types.is_map(kind_type):
        values = [None if v is None else dict(v) for v in values]
    if pa.types.is_string(kind_type) or pa.types.is_large_string(kind_type):
        return [("null", None) if v is None else ("text", v.encode()) for v in values]
    return [
        ("null", None) if v is None else ("json", json.dumps(v, default=_exact_json).encode())
        for v in values
    ]


def decode_answer(answer: CachedAnswer, sql_type: SQLType) -> Any:
    """The Python value of a stored answer, fitting ``sql_type``."""
    kind, value = answer[0], answer[1]
    if kind == "null" or value is None:
        return None
    if kind == "text":
        return bytes(value).decode()
    if kind in ("f32", "f64"):
        return np.frombuffer(value, dtype=np.float32 if kind == "f32" else np.float64)
    return coerce(json.loads(value), sql_type)


def _exact_json(value: Any) -> Any:
    """Stored answers keep decimals exact (as text), so a hit gives back the value stored."""
    return json_default(value, exact_decimals=True)
