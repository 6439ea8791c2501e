"""Transport-neutral parts of the serving stack: rate limiter, token auth, endpoint store,
forced tool calls, inference-table files."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from pathlib import Path

import duckdb
import pytest

from ai_query.catalog import Endpoint
from ai_query.engine.backends.tool_calls import tool_call_schema, tool_calls_from_output
from ai_query.errors import AuthenticationError, ConfigError, RateLimitExceededError
from ai_query.serving.auth import ANONYMOUS, TokenAuth
from ai_query.serving.inference_table import InferenceRecord, InferenceTable
from ai_query.serving.ratelimit import RateLimiter
from ai_query.serving.store import EndpointRecord, EndpointStore


def _endpoint(*limits: dict) -> Endpoint:
    return Endpoint.model_validate(
        {
            "name": "ep",
            "config": {"served_entities": [{"entity_name": "smollm2-135m-instruct"}]},
            "rate_limits": list(limits),
        }
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_calls_per_minute_per_user() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    ep = _endpoint({"calls": 2, "key": "user", "renewal_period": "minute"})
    assert limiter.acquire(ep, "alice") == 0.0
    clock.now += 10
    assert limiter.acquire(ep, "alice") == 0.0
    wait = limiter.acquire(ep, "alice")
    assert wait == pytest.approx(50.0)
    assert limiter.acquire(ep, "bob") == 0.0  # bob has a window of his own
    with pytest.raises(RateLimitExceededError) as info:
        limiter.check(ep, "alice")
    assert info.value.retry_after == pytest.approx(50.0)
    clock.now += 50
    assert limiter.acquire(ep, "alice") == 0.0


def test_endpoint_key_is_shared_and_acquire_some_admits_part() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    ep = _endpoint({"calls": 5, "key": "endpoint"})
    assert limiter.acquire_some(ep, "alice", 3) == (3, 0.0)
    granted, wait = limiter.acquire_some(ep, "bob", 4)
    assert granted == 2 and wait == pytest.approx(60.0)
    assert limiter.acquire(ep, "carol") > 0


def test_wait_admits_a_batch_over_several_windows() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    ep = _endpoint({"calls": 4, "key": "user"})
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.now += seconds

    limiter.wait(ep, "etl", 10, sleep=sleep)
    assert sleeps == [pytest.approx(60.0), pytest.approx(60.0)]


def test_tokens_per_minute() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    ep = _endpoint({"tokens": 100, "key": "endpoint"})
    assert limiter.acquire(ep, "a") == 0.0
    limiter.record_tokens(ep, "a", 120)
    assert limiter.acquire(ep, "a") > 0
    clock.now += 60
    assert limiter.acquire(ep, "a") == 0.0


def test_no_limits_no_waiting() -> None:
    limiter = RateLimiter()
    ep = _endpoint()
    assert all(limiter.acquire(ep, "x") == 0.0 for _ in range(1000))


def test_token_auth_from_file_and_reload(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"tok-a": "alice"}))
    auth = TokenAuth.from_file(path)
    assert auth.enabled
    assert auth.authenticate_header("Bearer tok-a") == "alice"
    for bad in (None, "", "Bearer nope", "Basic tok-a"):
        with pytest.raises(AuthenticationError):
            auth.authenticate_header(bad)
    path.write_text(json.dumps({"tok-b": "bob"}))
    later = time.time() + 5
    import os

    os.utime(path, (later, later))
    auth._checked = 0.0  # skip the once-a-second throttle
    assert auth.authenticate("tok-b") == "bob"
    with pytest.raises(AuthenticationError):
        auth.authenticate("tok-a")


def test_token_auth_off_and_bad_files(tmp_path: Path) -> None:
    assert TokenAuth.from_file(None).authenticate(None) == ANONYMOUS
    bad = tmp_path / "tokens.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="map bearer tokens"):
        TokenAuth.from_file(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        TokenAuth.from_file(tmp_path / "missing.json")


def test_store_round_trip(tmp_path: Path) -> None:
    db = tmp_path / "endpoints.sqlite"
    ep = _endpoint({"calls": 3})
    store = EndpointStore(db)
    record = EndpointRecord(
        name="ep", id="abc", creator="alice", creation_timestamp=1, last_updated_timestamp=2,
        config_version=1, served=ep, pending=ep, ready="READY", config_update="IN_PROGRESS",
    )
    store.put(record)
    store.close()
    again = EndpointStore(db).load()
    assert again == [record]


def test_forced_tool_calls() -> None:
    tools = [
        {"type": "function", "function": {"name": "f", "parameters": {"type": "object",
         "properties": {"x": {"type": "integer"}}}}},
        {"type": "function", "function": {"name": "g"}},
    ]
    assert tool_call_schema(tools, "auto") is None and tool_call_schema(tools, "none") is None
    required = tool_call_schema(tools, "required")
    assert required is not None and required["type"] == "array"
    named = tool_call_schema(tools, {"type": "function", "function": {"name": "g"}})
    assert named == {"type": "object", "properties": {}}
    with pytest.raises(ConfigError, match="'h'"):
        tool_call_schema(tools, {"type": "function", "function": {"name": "h"}})
    calls = tool_calls_from_output('[{"name": "f", "parameters": {"x": 1}}]', tools, "required")
    assert calls[0]["function"] == {"name": "f", "arguments": '{"x": 1}'}
    assert calls[0]["id"].startswith("call_")


def test_inference_table_files_read_from_duckdb(tmp_path: Path) -> None:
    async def main() -> None:
        table = InferenceTable(tmp_path / "t", flush_seconds=0.05, max_queue=3)
        await table.start()
        for i in range(5):  # two beyond the queue bound are dropped
            table.append(
                InferenceRecord(
                    endpoint_name="ep", databricks_request_id=f"r{i}", client_request_id=None,
                    request_time=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc),
                    status_code=200, execution_duration_ms=7, request="{}", response="{}",
                    served_entity_id="a", requester="alice", input_token_count=3,
                    output_token_count=4,
                )
            )
        await table.stop()
        assert table.dropped == 2

    asyncio.run(main())
    rows = duckdb.sql(
        f"SELECT endpoint_name, databricks_request_id, request_date, output_token_count "
        f"FROM read_parquet('{tmp_path}/t/*/*.parquet', hive_partitioning = true) ORDER BY 2"
    ).fetchall()
    assert rows == [("ep", f"r{i}", dt.date(2026, 1, 2), 4) for i in range(3)]


def test_secret_values_are_masked_in_log_lines() -> None:
    import logging

    from ai_query.serving.logs import JSONFormatter, Redactor

    redactor = Redactor()
    redactor.add("sk-live-123456")
    redactor.add("ab")  # too short to mask safely: ignored
    record = logging.makeLogRecord(
        {"msg": "provider said: bad key %s", "args": ("sk-live-123456",), "levelname": "WARNING",
         "name": "x", "endpoint": "ab-chat"})
    line = json.loads(JSONFormatter(redactor).format(record))
    assert line["message"] == "provider said: bad key [REDACTED]"
    assert line["endpoint"] == "ab-chat" and line["level"] == "warning"


def test_chat_routes_take_vllms_repetition_penalty_and_add_no_default() -> None:
    from ai_query.serving.http.schemas import ChatRequest

    messages = [{"role": "user", "content": "hi"}]
    assert ChatRequest(messages=messages).parameters().repetition_penalty is None
    given = ChatRequest(messages=messages, repetition_penalty=1.1).parameters()
    assert given.repetition_penalty == 1.1


def test_chat_routes_take_reasoning_effort_and_name_a_bad_one() -> None:
    from ai_query.serving.http.problems import APIError
    from ai_query.serving.http.schemas import ChatRequest

    messages = [{"role": "user", "content": "hi"}]
    assert ChatRequest(messages=messages, reasoning_effort="high").parameters().reasoning_effort == "high"
    with pytest.raises(APIError, match="reasoning_effort must be one of minimal, low"):
        ChatRequest(messages=messages, reasoning_effort="max").parameters()
