"""Files sent with a request (``files =>``): checked before any call, carried as an Arrow
binary column, and part of what identifies a request (dedup, memo, result cache)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pyarrow as pa
import pytest

from ai_query.catalog import Catalog, local_endpoint
from ai_query.engine.backends.backend import ChoiceScores, GenerationRequest
from ai_query.engine.backends.deterministic import DeterministicBackend
from ai_query.engine.core.batch import align_results, read_request_files, request_batch
from ai_query.engine.core.files import (
    MAX_FILE_BYTES,
    check_image,
    file_digest,
    image_part,
    media_type,
)
from ai_query.engine.local import LocalEngine
from ai_query.errors import RowFailure
from ai_query.jobs.cache import CachingEngine, ResultCache
from ai_query.options import CallOptions, ModelParameters
from ai_query.tasks import Task
from tests.images import image_bytes

CHAT = "smollm2-135m-instruct"


def test_images_are_told_by_their_bytes_and_decoded() -> None:
    import io

    from PIL import Image

    for kind, media in (("PNG", "image/png"), ("JPEG", "image/jpeg"), ("GIF", "image/gif"),
                        ("WEBP", "image/webp")):
        out = io.BytesIO()
        Image.new("RGB", (8, 8), (1, 2, 3)).save(out, kind)
        assert media_type(out.getvalue()) == media
        assert check_image(out.getvalue()) == media
    with pytest.raises(RowFailure, match="not an image ai_query can send"):
        check_image(b"%PDF-1.7 hello")
    with pytest.raises(RowFailure, match="image/png file is corrupt"):
        check_image(image_bytes(1)[:40])
    with pytest.raises(RowFailure, match=r"over the 20.0 MiB limit"):
        check_image(image_bytes(1) + b"\0" * MAX_FILE_BYTES)


def test_an_image_reaches_a_provider_as_a_data_url_part() -> None:
    data = image_bytes(3)
    request = GenerationRequest(task=Task.CHAT, params=ModelParameters(), files=(data,))
    [message] = request.conversation("What is this?")
    text, image = message["content"]
    assert text == {"type": "text", "text": "What is this?"}
    assert image == image_part(data)
    assert image["image_url"]["url"].startswith("data:image/png;base64,")
    plain = GenerationRequest(task=Task.CHAT, params=ModelParameters())
    assert plain.conversation("hi") == [{"role": "user", "content": "hi"}]


def test_files_travel_as_a_binary_column_and_only_when_given() -> None:
    options = CallOptions(endpoint=CHAT)
    batch = request_batch(["a", "b", None], options, [image_bytes(1), None, None])
    assert batch.schema.field("files").type == pa.binary()
    assert read_request_files(batch) == [image_bytes(1), None, None]
    assert read_request_files(request_batch(["a"], options)) is None
    assert request_batch(["a"], options).schema.names == ["request"]


def _engine(memo: int = 20_000) -> LocalEngine:
    return LocalEngine(Catalog.default(), backend_factory=DeterministicBackend, memo_entries=memo)


def test_rows_keep_their_own_image_and_duplicates_run_once() -> None:
    engine = _engine()
    a, b = image_bytes(1), image_bytes(2)
    texts = ["Describe.", "Describe.", "Describe.", "Describe.", None, "Describe."]
    files = [a, b, a, None, a, b"junk"]
    result = align_results(engine.run(request_batch(
        texts, CallOptions(endpoint=CHAT, fail_on_error=False), files,
    )), 6)
    answers = result.column("result").to_pylist()
    errors = result.column("error").to_pylist()
    assert answers[0] == answers[2] and answers[0].endswith(f"[image/png {file_digest(a)[:8]}]")
    assert answers[1].endswith(f"[image/png {file_digest(b)[:8]}]")
    assert answers[3] == f"{CHAT} says: Describe."  # no file: a text request
    assert answers[4] is None and errors[4] is None  # a NULL request stays NULL
    assert answers[5] is None and "not an image" in errors[5]
    assert engine.model_calls == 3  # a, b and the text row; the repeat of a coalesced
    options = CallOptions(endpoint=CHAT, fail_on_error=False)
    again = align_results(engine.run(request_batch(["Describe."], options, [b])), 1)
    assert again.column("result").to_pylist() == [answers[1]]
    assert engine.model_calls == 3  # remembered by image digest


def test_embeddings_and_completions_endpoints_refuse_files_per_row() -> None:
    result = align_results(_engine().run(request_batch(
        ["x", "y"], CallOptions(endpoint="all-minilm-l6-v2", fail_on_error=False),
        [image_bytes(1), None],
    )), 2)
    assert result.column("error").to_pylist()[0] == (
        "endpoint 'all-minilm-l6-v2' embeds text: it takes no files"
    )
    assert result.column("error").to_pylist()[1] is None
    catalog = Catalog([local_endpoint("complete", CHAT, "llm/v1/completions")])
    engine = LocalEngine(catalog, backend_factory=DeterministicBackend)
    result = align_results(engine.run(request_batch(
        ["x", "y"], CallOptions(endpoint="complete", fail_on_error=False), [image_bytes(1), None],
    )), 2)
    assert result.column("error").to_pylist() == [
        "endpoint 'complete' completes raw prompts: images go to chat endpoints", None,
    ]


class _NoScoring(DeterministicBackend):
    async def score_choices(self, text: str, request: GenerationRequest) -> ChoiceScores:
        raise AssertionError("scored a row with an image")


def test_choices_with_an_image_are_generated_not_scored() -> None:
    engine = LocalEngine(Catalog.default(), backend_factory=_NoScoring)
    options = CallOptions(endpoint=CHAT, response_format='{"type": "text"}')
    plan = engine.plan(options)
    assert plan.generation is not None
    plan = dataclasses.replace(
        plan,
        output=dataclasses.replace(plan.output, choice=("cat", "dog"), scoring="logprobs"),
        generation=dataclasses.replace(plan.generation, choice=("cat", "dog")),
    )
    [outcome] = engine.loop.run(engine.run_rows(["Which?"], plan, [image_bytes(1)]))
    assert outcome is not None and outcome.value in ("cat", "dog")


def test_the_result_cache_keys_on_the_image(tmp_path: Path) -> None:
    inner = _engine(memo=0)
    cached = CachingEngine(inner, ResultCache(tmp_path / "cache.sqlite"))
    options = CallOptions(endpoint=CHAT)
    a, b = image_bytes(1), image_bytes(2)
    first = align_results(cached.run(request_batch(["Describe."] * 2, options, [a, b])), 2)
    assert inner.model_calls == 2
    again = align_results(cached.run(request_batch(["Describe."] * 3, options, [b, a, None])), 3)
    assert inner.model_calls == 3  # only the text row is new
    assert again.column("result").to_pylist()[:2] == first.column("result").to_pylist()[::-1]
    assert cached.hits == 2
