"""The HTTP server on real vLLM with the bundled models, through the official ``openai`` client
and plain HTTP: chat, streaming, structured output, tool calls, embeddings, invocations, the
inference table, and an external model forwarded to this real server by another one."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import openai
import pytest

from ai_query.machine import this_machine
from tests.processes import engine_cores
from tests.serving.http_servers import HTTPServer

pytestmark = pytest.mark.slow

CHAT = "smollm2-135m-instruct"
EMBED = "all-minilm-l6-v2"


def _oai(server: HTTPServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", timeout=300)


def test_chat_and_streaming_agree(vllm_server: HTTPServer) -> None:
    client = _oai(vllm_server)
    ask: dict[str, Any] = {
        "model": CHAT, "temperature": 0, "max_tokens": 24,
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
    }
    answer = client.chat.completions.create(**ask)
    text = answer.choices[0].message.content or ""
    assert "Paris" in text
    assert answer.usage is not None and answer.usage.prompt_tokens > 10
    chunks = list(client.chat.completions.create(
        **ask, stream=True, stream_options={"include_usage": True}))
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert len([p for p in pieces if p]) > 3  # it really streamed, token by token
    assert "".join(pieces) == text
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == answer.usage.completion_tokens


def test_the_server_and_its_engines_run_on_the_machines_tcmalloc(vllm_server: HTTPServer) -> None:
    """``ai-query serve`` started from a shell without ``LD_PRELOAD`` runs itself again (the same
    PID) with the machine's tcmalloc (scripts/setup.sh installs it): its in-process embeddings
    engine and its chat engine's process both have it mapped."""
    assert this_machine().tcmalloc, "no tcmalloc on this machine: run scripts/setup.sh"
    pid = vllm_server.proc.pid
    environ = dict(
        item.split(b"=", 1) for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        if b"=" in item
    )
    assert b"libtcmalloc" in environ.get(b"LD_PRELOAD", b"")
    cores = engine_cores(pid)
    assert cores, "the server's chat engine process should be running"
    for each in [pid, *cores]:
        assert "libtcmalloc" in Path(f"/proc/{each}/maps").read_text(), each


def test_multi_turn_conversation_is_templated(vllm_server: HTTPServer) -> None:
    answer = _oai(vllm_server).chat.completions.create(
        model="databricks-meta-llama-3-3-70b-instruct", temperature=0, max_tokens=16,
        messages=[{"role": "user", "content": "My name is Ada."},
                  {"role": "assistant", "content": "Nice to meet you, Ada!"},
                  {"role": "user", "content": "What is my name?"}])
    assert "Ada" in (answer.choices[0].message.content or "")


def test_structured_output(vllm_server: HTTPServer) -> None:
    schema = {"type": "object", "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "negative"]},
        "stars": {"type": "integer"}}, "required": ["sentiment", "stars"]}
    answer = _oai(vllm_server).chat.completions.create(
        model=CHAT, temperature=0, max_tokens=64,
        messages=[{"role": "user", "content": "Review: I loved this film. Rate it."}],
        response_format={"type": "json_schema",
                         "json_schema": {"name": "review", "schema": schema, "strict": True}})
    data = json.loads(answer.choices[0].message.content or "")
    assert data["sentiment"] in ("positive", "negative") and isinstance(data["stars"], int)


def test_forced_tool_call(vllm_server: HTTPServer) -> None:
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "Current weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}}}]
    answer = _oai(vllm_server).chat.completions.create(
        model=CHAT, temperature=0, max_tokens=48, tools=tools, tool_choice="required",
        messages=[{"role": "user", "content": "What is the weather in Paris?"}])
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = (choice.message.tool_calls or [])[0]
    assert call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments)["city"], str)


def test_embeddings(vllm_server: HTTPServer) -> None:
    client = _oai(vllm_server)
    texts = ["A cat sits on the mat.", "A kitten rests on a rug.", "Stock markets fell today."]
    data = client.embeddings.create(model=EMBED, input=texts).data  # base64 on the wire
    vectors = np.array([d.embedding for d in data])
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2
    again = client.embeddings.create(model="databricks-gte-large-en", input=texts[0],
                                     encoding_format="float").data[0].embedding
    assert np.allclose(again, vectors[0], atol=1e-5)


def test_invocations_completions_and_inference_table(vllm_server: HTTPServer) -> None:
    made: dict[str, dict[str, Any]] = {}
    with vllm_server.client(timeout=300) as c:
        for path, body in [
            (f"/serving-endpoints/{CHAT}/invocations",
             {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 12,
              "temperature": 0, "client_request_id": "inv-chat"}),
            (f"/serving-endpoints/{EMBED}/invocations", {"input": ["one", "two"]}),
            ("/v1/completions", {"model": CHAT, "prompt": "The capital of France is",
                                 "max_tokens": 8, "temperature": 0}),
        ]:
            r = c.post(path, json=body)
            assert r.status_code == 200, r.text
            made[r.headers["x-request-id"]] = r.json()
    chat, emb, cmpl = made.values()
    assert chat["object"] == "chat.completion" and chat["choices"][0]["message"]["content"]
    assert [len(d["embedding"]) for d in emb["data"]] == [384, 384]
    assert "Paris" in cmpl["choices"][0]["text"]
    time.sleep(0.8)
    ids = "', '".join(made)
    rows = duckdb.sql(
        "SELECT databricks_request_id, endpoint_name, client_request_id, status_code, "
        "input_token_count, output_token_count, response FROM read_parquet("
        f"'{vllm_server.workdir}/inference/*/*.parquet', hive_partitioning = true) "
        f"WHERE databricks_request_id IN ('{ids}')").fetchall()
    assert len(rows) == 3
    for rid, endpoint, client_id, status, tokens_in, tokens_out, response in rows:
        body = made[rid]
        assert status == 200 and json.loads(response)["object"] == body["object"]
        assert tokens_in == body["usage"]["prompt_tokens"]
        assert tokens_out == body["usage"].get("completion_tokens", 0)
        assert endpoint == (EMBED if body["object"] == "list" else CHAT)
        assert client_id == ("inv-chat" if body["object"] == "chat.completion" else None)


def test_external_model_served_by_this_real_server(
    vllm_server: HTTPServer, det_server: HTTPServer
) -> None:
    """det_server forwards an external-model endpoint to our real vLLM server."""
    external = {"name": CHAT, "provider": "openai-compatible", "task": "llm/v1/chat",
                "openai_config": {"openai_api_base": f"{vllm_server.url}/v1",
                                  "openai_api_key_plaintext": "not-checked-there"}}
    with det_server.client("tok-alice") as c:
        created = c.post("/api/2.0/serving-endpoints", json={
            "name": "real-external", "config": {"served_entities": [{"external_model": external}]}})
        assert created.status_code == 200, created.text
        for _ in range(100):
            state = c.get("/api/2.0/serving-endpoints/real-external").json()["state"]
            if state["ready"] == "READY":
                break
            time.sleep(0.05)
    question = [{"role": "user", "content": "What is the capital of France?"}]
    ask: dict[str, Any] = {"temperature": 0, "max_tokens": 16, "messages": question}
    direct = _oai(vllm_server).chat.completions.create(model=CHAT, **ask)
    forwarded = openai.OpenAI(base_url=f"{det_server.url}/v1", api_key="tok-alice",
                              timeout=300).chat.completions.create(model="real-external", **ask)
    assert forwarded.choices[0].message.content == direct.choices[0].message.content
    assert forwarded.usage is not None and direct.usage is not None
    assert forwarded.usage.completion_tokens == direct.usage.completion_tokens


def test_client_leaving_a_stream(vllm_server: HTTPServer) -> None:
    with vllm_server.client(timeout=300) as c:
        with c.stream("POST", "/v1/chat/completions", json={
                "model": CHAT, "max_tokens": 1500, "stream": True,
                "messages": [{"role": "user", "content": "Write a very long story."}]}) as r:
            request_id = r.headers["x-request-id"]
            lines = r.iter_lines()
            got = [next(lines) for _ in range(6)]
        assert any('"content"' in line for line in got)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if f'ai_query_queue_depth{{endpoint="{CHAT}"}} 0.0' in c.get("/metrics").text:
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the stream was not released")
    time.sleep(0.8)
    status = duckdb.sql(
        f"SELECT status_code FROM read_parquet('{vllm_server.workdir}/inference/*/*.parquet', "
        f"hive_partitioning = true) WHERE databricks_request_id = '{request_id}'").fetchall()
    assert status == [(499,)]


def test_sql_editor_runs_ai_functions_on_real_vllm_in_the_locked_workspace(
    vllm_server: HTTPServer,
) -> None:
    """The web SQL editor's locked DuckDB over an upload, with ai_query, a task function and
    embeddings answered by the real engines; the lock holds in the same query session."""
    import base64

    with vllm_server.client(timeout=300) as c:
        upload = c.post("/api/ui/sql/tables/reviews", json={"format": "csv", "data_base64":
                        base64.b64encode(b"id,body\n1,I love it\n2,It broke at once\n").decode()})
        assert upload.status_code == 200, upload.text
        answer = c.post("/api/ui/sql/query", json={"sql": (
            "SELECT id, ai_query('smollm2-135m-instruct', body, modelParameters => "
            "{'max_tokens': 8}) AS a, ai_classify(body, ARRAY['happy', 'angry']) AS c, "
            "len(ai_query('all-minilm-l6-v2', body)) AS dims FROM reviews ORDER BY id")})
        last = json.loads(answer.text.splitlines()[-1])
        refused = json.loads(c.post("/api/ui/sql/query", json={
            "sql": "SELECT * FROM read_text('/etc/passwd')"}).text.splitlines()[-1])
        indexed = c.post("/api/ui/sql/tables/notes", json={
            "format": "csv", "data_base64": base64.b64encode(
                b"id,body\n1,How do I reset my password?\n2,The invoice total is wrong\n"
                b"3,My parcel never arrived\n").decode(),
            "vector_index": {"name": "notes_idx", "key": "id", "text": "body",
                             "endpoint": "all-minilm-l6-v2"}})
        assert indexed.status_code == 200, indexed.text
        searched = json.loads(c.post("/api/ui/sql/query", json={"sql": (
            "SELECT id FROM vector_search(index => 'notes_idx', "
            "query_text => 'I was charged the wrong amount on my bill', num_results => 1)")}
        ).text.splitlines()[-1])
    assert [r[0] for r in last["rows"]] == [1, 2], last
    assert all(isinstance(r[1], str) and r[1] for r in last["rows"])
    assert all(r[2] in ("happy", "angry") for r in last["rows"])
    assert [r[3] for r in last["rows"]] == [384, 384]
    assert last["rows_answered"] == 6
    assert "disabled by configuration" in refused["error"]
    assert searched["rows"] == [[2]], searched  # the real embeddings find the billing note
