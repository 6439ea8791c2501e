"""The engine through real vLLM with the bundled models (started once per session)."""

from __future__ import annotations

import threading

import numpy as np
import pyarrow as pa
import pytest

from ai_query.engine.core.batch import align_results, request_batch
from ai_query.options import CallOptions, ModelParameters

pytestmark = pytest.mark.slow

CHAT = "smollm2-135m-instruct"


def run(engine, requests, **opts):  # type: ignore[no-untyped-def]
    batch = request_batch(requests, CallOptions(**opts))
    return align_results(engine.run(batch), len(requests))


def test_chat_answers_are_text(real_engine) -> None:
    out = run(
        real_engine,
        ["What is 2+2?", None, "Name a colour."],
        endpoint=CHAT,
        model_parameters=ModelParameters(max_tokens=16),
    )
    results = out.column("result").to_pylist()
    assert results[1] is None
    assert all(isinstance(r, str) and r.strip() for r in (results[0], results[2]))
    assert out.column("completion_tokens").to_pylist()[0] > 0
    # A model that does not reason: its chat template ignores reasoning_effort.
    effort = run(
        real_engine, ["What is 2+2?"], endpoint=CHAT,
        model_parameters=ModelParameters(max_tokens=16, reasoning_effort="low"),
    )
    assert effort.column("result").to_pylist() == results[:1]


def test_completions_endpoint(real_engine) -> None:
    from ai_query.catalog import Catalog, local_endpoint
    from ai_query.engine.local import LocalEngine

    catalog = Catalog(
        [local_endpoint("smol-complete", "smollm2-135m-instruct", "llm/v1/completions")]
    )
    engine = LocalEngine(
        catalog
    )  # shares the chat model's vLLM engine? no: task differs, same model
    out = run(
        engine,
        ["The capital of France is"],
        endpoint="smol-complete",
        model_parameters=ModelParameters(max_tokens=6),
    )
    assert "Paris" in out.column("result")[0].as_py()


def _reference_embeddings(texts: list[str]) -> np.ndarray:
    """all-MiniLM-L6-v2 as sentence-transformers computes it: mean pooling, L2 norm."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from ai_query.engine.backends.bundled import minilm_dir

    tok = AutoTokenizer.from_pretrained(str(minilm_dir()))
    model = AutoModel.from_pretrained(str(minilm_dir())).eval()
    enc = tok(texts, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=1).numpy()


def test_embeddings_match_reference(real_engine) -> None:
    texts = ["A cat sits on the mat.", "Quarterly revenue grew 12%.", "Ünïcödé text ✓"]
    out = run(real_engine, texts, endpoint="databricks-gte-large-en")
    assert out.schema.field("result").type == pa.list_(pa.float32())
    got = np.array(out.column("result").to_pylist())
    assert got.shape == (3, 384)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)
    ref = _reference_embeddings(texts)
    cosine = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    assert cosine.min() >= 0.999, cosine


def test_structured_output_gives_typed_structs(real_engine) -> None:
    prompts = [
        f"Classify the sentiment of: {t}"
        for t in ("I love it", "It is ok", "Great value for money")
    ]
    out = run(
        real_engine,
        prompts,
        endpoint=CHAT,
        return_type="STRUCT<label: STRING, score: DOUBLE>",
        model_parameters=ModelParameters(max_tokens=128),
    )
    assert out.schema.field("result").type == pa.struct(
        [("label", pa.string()), ("score", pa.float64())]
    )
    for row, err in zip(out.column("result").to_pylist(), out.column("error").to_pylist()):
        assert err is None
        assert isinstance(row["label"], str) and isinstance(row["score"], float)


def test_array_return_type(real_engine) -> None:
    out = run(
        real_engine,
        ["List three fruits."],
        endpoint=CHAT,
        return_type="ARRAY<STRING>",
        model_parameters=ModelParameters(max_tokens=48),
    )
    value = out.column("result")[0].as_py()
    assert isinstance(value, list) and all(isinstance(v, str) for v in value)


def test_prompt_over_context_is_a_row_error_in_place(real_engine) -> None:
    prompts = ["Say hi.", "word " * 3000, "Say bye.", None]
    out = run(real_engine, prompts, endpoint=CHAT, model_parameters=ModelParameters(max_tokens=8))
    results, errors = out.column("result").to_pylist(), out.column("error").to_pylist()
    assert results[0] and results[2] and results[1] is None and results[3] is None
    assert errors[0] is None and errors[2] is None and errors[3] is None
    assert "maximum context length" in errors[1]
    # The good rows are the same answers they get alone: nothing shifted.
    alone = run(
        real_engine, ["Say bye."], endpoint=CHAT, model_parameters=ModelParameters(max_tokens=8)
    )
    assert alone.column("result")[0].as_py() == results[2]


def test_concurrent_batches_match_serial_answers(real_engine) -> None:
    prompts = [[f"Give one word for the number {k * 10 + i}." for i in range(10)] for k in range(4)]
    serial = [
        run(real_engine, p, endpoint=CHAT, model_parameters=ModelParameters(max_tokens=8))
        .column("result")
        .to_pylist()
        for p in prompts
    ]
    parallel: dict[int, list[str]] = {}

    def caller(k: int) -> None:
        parallel[k] = (
            run(
                real_engine,
                prompts[k],
                endpoint=CHAT,
                model_parameters=ModelParameters(max_tokens=8),
            )
            .column("result")
            .to_pylist()
        )

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [parallel[k] for k in range(4)] == serial


def _backend(engine, endpoint):  # type: ignore[no-untyped-def]
    from ai_query.engine.backends.registry import shared_backend

    return shared_backend(engine.catalog.get(endpoint).config.served_entities[0])


def test_an_embeddings_batch_is_one_engine_call_and_a_bad_text_fails_alone(real_engine) -> None:
    backend = _backend(real_engine, "all-minilm-l6-v2")
    run(real_engine, ["warm"], endpoint="all-minilm-l6-v2")
    calls = backend.engine_calls
    texts = [f"note {i} about topic {i % 7}" for i in range(300)]
    out = run(real_engine, texts, endpoint="all-minilm-l6-v2")
    assert backend.engine_calls == calls + 1, "300 texts should be one LLM.embed call"
    assert out.column("error").null_count == 300
    too_long = "word " * 2000  # over MiniLM's 256-token context
    out = run(real_engine, ["first", too_long, "third"], endpoint="all-minilm-l6-v2")
    errors = out.column("error").to_pylist()
    vectors = out.column("result").to_pylist()
    assert errors[0] is None and errors[2] is None and vectors[1] is None
    assert "maximum context length" in errors[1], errors[1]
    assert len(vectors[0]) == len(vectors[2]) == 384
    alone = run(real_engine, ["third"], endpoint="all-minilm-l6-v2").column("result").to_pylist()
    assert np.allclose(alone[0], vectors[2], atol=1e-5), "a neighbour's failure shifts nothing"


def test_rows_behind_a_long_instruction_run_on_the_settings_chosen_for_this_machine(
    real_engine,
) -> None:
    from ai_query.engine.vllm.model import engine_defaults

    backend = _backend(real_engine, CHAT)
    instruction = " ".join(
        f"Rule {i}: answer in one short sentence and mention the topic." for i in range(40)
    )
    prompts = [f"{instruction}\n\nTopic: item {i}" for i in range(12)]
    out = run(real_engine, prompts, endpoint=CHAT, model_parameters=ModelParameters(max_tokens=4))
    assert out.column("error").null_count == len(prompts)
    assert all(out.column("result").to_pylist())
    config = backend._engine.vllm_config
    chosen = engine_defaults("generate")  # this machine's settings are what vLLM runs with
    assert config.cache_config.enable_prefix_caching
    assert config.cache_config.block_size == chosen["block_size"] == 32
    assert config.scheduler_config.max_num_seqs == chosen["max_num_seqs"]
    assert config.scheduler_config.max_num_batched_tokens == chosen["max_num_batched_tokens"]
    assert str(config.model_config.dtype) == f"torch.{chosen['dtype']}"


def test_preview_counts_the_prompt_tokens_the_engine_then_reports(real_engine) -> None:
    """Counted with the model's tokenizer and chat template (schema instruction included),
    before any model call, equal to what the engine reports after answering."""
    from ai_query.engine.core.preview import preview

    texts = ["I love it, great quality", None, "It broke after a day. Never again!"]
    for options in (
        CallOptions(endpoint="smollm2-135m-instruct", return_type="STRUCT<label: STRING>",
                    model_parameters=ModelParameters(max_tokens=8)),
        CallOptions(endpoint="smollm2-135m-instruct", model_parameters=ModelParameters(max_tokens=4)),
        CallOptions(endpoint="all-minilm-l6-v2"),
    ):
        counted = preview(real_engine, request_batch(texts, options))
        assert counted.column("exact").to_pylist() == [True] * 3
        answered = real_engine.run(request_batch(texts, options))
        expected = [n if t is not None else None
                    for n, t in zip(answered.column("prompt_tokens").to_pylist(), texts)]
        assert counted.column("prompt_tokens").to_pylist() == expected
        assert all(n > 5 for n in expected if n is not None)


def test_rows_rendered_together_enter_the_engine_together(real_engine, monkeypatch) -> None:
    """Rows of concurrent batches are all rendered before the first of them is submitted
    (``VLLMBackend._render_together``), as ``LLM.chat`` submits them."""
    from ai_query.engine.backends.registry import existing_backend

    real_engine.run(request_batch(["warm up"], CallOptions(endpoint=CHAT)))
    backend = existing_backend(real_engine.catalog.get(CHAT).config.served_entities[0])
    events: list[str] = []
    render, generate = backend._render, backend._engine.generate

    async def logged_render(*args, **kwargs):  # type: ignore[no-untyped-def]
        prompt = await render(*args, **kwargs)
        events.append("rendered")
        return prompt

    def logged_generate(*args, **kwargs):  # type: ignore[no-untyped-def]
        events.append("submitted")
        return generate(*args, **kwargs)

    monkeypatch.setattr(backend, "_render", logged_render)
    monkeypatch.setattr(backend._engine, "generate", logged_generate)
    texts = [f"Say the number {i}." for i in range(24)]
    threads = [
        threading.Thread(target=run, args=(real_engine, texts[i : i + 8]),
                         kwargs={"endpoint": CHAT,
                                 "model_parameters": ModelParameters(max_tokens=2)})
        for i in (0, 8, 16)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert events.count("rendered") == events.count("submitted") == 24
    assert events.index("submitted") >= 8  # the first batch's rows wait for one another
    assert events[:8] == ["rendered"] * 8
