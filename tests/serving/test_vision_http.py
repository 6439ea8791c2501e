"""Images over HTTP: the official ``openai`` client and Databricks' invocations route send
``image_url`` parts (data URLs) to ``ai-query serve`` for an external vision endpoint, whose
provider decodes the image it receives; remote image URLs are refused unless allow-listed, and
a bad image is a 400 naming the part."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.images import image_bytes
from tests.serving.http_servers import HTTPServer
from tests.vision_provider import VisionProvider, seen

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HTTPServer, VisionProvider]]:
    provider = VisionProvider()
    work = tmp_path_factory.mktemp("vision")
    catalog = work / "catalog.json"
    catalog.write_text(json.dumps(
        [{"name": "ext-vision", "config": {"served_entities": [provider.entity()]}}]
    ))
    server = HTTPServer(work, "--engine", "deterministic", "--catalog", str(catalog),
                        "--database", str(work / "db.sqlite"),
                        "--allow-image-base", "https://images.example.com/public/")
    server.start()
    yield server, provider
    server.stop()
    provider.close()


def _image_message(url: str, text: str = "What is in the image?") -> list[dict[str, object]]:
    return [{"role": "user", "content": [
        {"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": url}},
    ]}]


def _data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def test_the_openai_client_sends_an_image_to_an_external_endpoint(
    served: tuple[HTTPServer, VisionProvider],
) -> None:
    server, provider = served
    before = provider.images
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused")
    data = image_bytes(5)
    answer = client.chat.completions.create(
        model="ext-vision", messages=_image_message(_data_url(data)),  # type: ignore[arg-type]
    )
    assert answer.choices[0].message.content == f"What is in the image? | {seen(data)}"
    assert provider.images == before + 1
    with server.client() as http:
        raw = http.post("/serving-endpoints/ext-vision/invocations",
                        json={"messages": _image_message(_data_url(image_bytes(6)), "Caption.")})
    assert raw.status_code == 200, raw.text
    assert raw.json()["choices"][0]["message"]["content"] == f"Caption. | {seen(image_bytes(6))}"


def test_remote_image_urls_need_the_allow_list(served: tuple[HTTPServer, VisionProvider]) -> None:
    server, provider = served
    before = provider.requests
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused")
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model="ext-vision",
            messages=_image_message("http://169.254.169.254/latest/meta-data?token=s3cr3t"),  # type: ignore[arg-type]
        )
    message = str(refused.value)
    assert "messages[0].content[1]: image URLs from http://169.254.169.254 are not allowed" in message
    assert "s3cr3t" not in message
    assert provider.requests == before  # nothing reached the provider
    with pytest.raises(openai.BadRequestError, match="is corrupt"):
        client.chat.completions.create(
            model="ext-vision", messages=_image_message(_data_url(image_bytes(1)[:50])),  # type: ignore[arg-type]
        )
    with pytest.raises(openai.BadRequestError, match="not valid base64"):
        client.chat.completions.create(
            model="ext-vision", messages=_image_message("data:image/png;base64,@@@"),  # type: ignore[arg-type]
        )
    # An allowed prefix passes on to the provider (this one reads data URLs only: its error).
    with pytest.raises(openai.APIStatusError, match="HTTP 400: Invalid image"):
        client.chat.completions.create(
            model="ext-vision",
            messages=_image_message("https://images.example.com/public/cat.png"),  # type: ignore[arg-type]
        )


def test_the_openai_client_sends_an_image_to_the_local_tiny_vlm(tmp_path: Path) -> None:
    """``ai-query serve`` with a local vision-language model run by vLLM (the tiny VLM); a
    text-only local model answers an image with a 400."""
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps([
        {"name": "tiny-vlm", "config": {"served_entities": [{"entity_name": "tiny-vlm-smollm2"}]}},
        {"name": "text-only", "config": {"served_entities": [
            {"entity_name": "smollm2-135m-instruct"}]}},
    ]))
    server = HTTPServer(tmp_path, "--catalog", str(catalog), "--database",
                        str(tmp_path / "db.sqlite"))
    server.start()
    try:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", timeout=300)
        with_image = client.chat.completions.create(
            model="tiny-vlm", max_tokens=8, temperature=0,
            messages=_image_message(_data_url(image_bytes(4))),  # type: ignore[arg-type]
        )
        text_only = client.chat.completions.create(
            model="tiny-vlm", max_tokens=8, temperature=0,
            messages=[{"role": "user", "content": "What is in the image?"}],
        )
        with pytest.raises(openai.BadRequestError, match="text-only model: it takes no images"):
            client.chat.completions.create(
                model="text-only", max_tokens=8,
                messages=_image_message(_data_url(image_bytes(4))),  # type: ignore[arg-type]
            )
    finally:
        server.stop()
    assert with_image.choices[0].message.content
    assert with_image.usage is not None and text_only.usage is not None
    assert with_image.usage.prompt_tokens > text_only.usage.prompt_tokens  # the image's tokens
