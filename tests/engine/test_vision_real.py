"""A local vision-language model through the real vLLM engine: the tiny VLM built from the
bundled SmolLM2 (real text weights and tokenizer, a random vision encoder) answers each row
about its own image, whatever the order of the rows; a text-only model refuses images per row.

The tiny VLM's answers about images mean nothing; these tests prove the path: bytes -> Arrow ->
vLLM's image processor -> answer, row by row."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ai_query.catalog import Catalog
from ai_query.engine.core.batch import align_results, request_batch
from ai_query.engine.local import LocalEngine
from ai_query.options import CallOptions, ModelParameters
from tests.images import image_bytes

pytestmark = pytest.mark.slow
VLM = "tiny-vlm"


def vision_catalog() -> Catalog:
    """The default catalog plus ``tiny-vlm``, served by the built tiny VLM."""
    default = Catalog.default()
    vision = Catalog.from_data(
        [{"name": VLM, "config": {"served_entities": [{"entity_name": "tiny-vlm-smollm2"}]}}]
    )
    return Catalog([*default.endpoints(), *vision.endpoints()], default.aliases())


@pytest.fixture(scope="module")
def vlm_engine() -> Iterator[LocalEngine]:
    """An engine over :func:`vision_catalog`; the VLM's vLLM engine stops after the module (the
    bundled models' engines stay for the session's other tests)."""
    from ai_query.engine.backends.registry import existing_backend

    engine = LocalEngine(vision_catalog(), memo_entries=0)
    yield engine
    backend = existing_backend(engine.catalog.get(VLM).config.served_entities[0])
    if backend is not None:
        engine.loop.run(backend.close(), timeout=120)


def _run(engine: LocalEngine, texts: list[Any], files: list[Any], **options: Any) -> Any:
    options = {"endpoint": VLM, "fail_on_error": False,
               "model_parameters": ModelParameters(max_tokens=12), **options}
    batch = request_batch(texts, CallOptions(**options), files)
    return align_results(engine.run(batch), len(texts))


def test_each_row_is_answered_about_its_own_image(vlm_engine: LocalEngine) -> None:
    images = [image_bytes(i * 37, "JPEG" if i % 3 == 2 else "PNG") for i in range(12)]
    forward = _run(vlm_engine, ["Describe the image."] * 12, images)
    assert forward.column("error").to_pylist() == [None] * 12
    answers = forward.column("result").to_pylist()
    assert all(isinstance(a, str) for a in answers)
    backward = _run(vlm_engine, ["Describe the image."] * 12, images[::-1])
    assert backward.column("result").to_pylist() == answers[::-1]  # no memo: run again
    assert len(set(answers)) > 1, "the image must change the answer"
    tokens = forward.column("prompt_tokens").to_pylist()
    text_only = _run(vlm_engine, ["Describe the image."], [None])
    assert text_only.column("error").to_pylist() == [None]
    assert min(tokens) > text_only.column("prompt_tokens")[0].as_py()  # the image's tokens


def test_bad_images_are_row_errors_and_the_engine_goes_on(vlm_engine: LocalEngine) -> None:
    result = _run(vlm_engine, ["What is it?"] * 3, [image_bytes(1)[:60], image_bytes(2), b"GIF89a"])
    errors = result.column("error").to_pylist()
    assert "image/png file is corrupt" in errors[0]
    assert errors[1] is None and isinstance(result.column("result")[1].as_py(), str)
    assert "image/gif file is corrupt" in errors[2]


def test_a_text_only_model_refuses_images_per_row(real_engine: Any) -> None:
    batch = request_batch(
        ["What is it?", "Say hi."],
        CallOptions(endpoint="smollm2-135m-instruct", fail_on_error=False,
                    model_parameters=ModelParameters(max_tokens=4)),
        [image_bytes(1), None],
    )
    result = align_results(real_engine.run(batch), 2)
    assert result.column("error").to_pylist()[0] == (
        "smollm2-135m-instruct is a text-only model: it takes no images"
    )
    assert result.column("error").to_pylist()[1] is None
