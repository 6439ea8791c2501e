"""A fake OpenAI-compatible vision provider for the tests: it decodes each ``image_url`` data URL
it receives (Pillow) and answers with what it saw, so a test can tell which image reached which
row. A request with a part it cannot read gets the provider's 400, as a real one answers."""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import json
import threading
from typing import Any

from tests.servers import reply_json


def seen(data: bytes) -> str:
    """What the provider answers for image ``data``: its format, size and digest."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return f"{image.format} {image.width}x{image.height} {hashlib.sha256(data).hexdigest()[:8]}"


class VisionProvider(http.server.ThreadingHTTPServer):
    """Serves ``/v1/chat/completions`` on 127.0.0.1 in a daemon thread; counts its images.
    ``max_side``: larger images get the provider's 400, as a provider's own limits answer."""

    def __init__(self, max_side: int | None = None) -> None:
        self.max_side = max_side
        self.images = 0
        """Images received."""
        self.requests = 0
        """Chat requests received."""
        self._lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def api_base(self) -> str:
        """The provider's OpenAI API base URL."""
        return f"http://127.0.0.1:{self.server_port}/v1"

    def entity(self, name: str = "vision-model") -> dict[str, Any]:
        """A catalog served entity that reaches this provider."""
        return {"external_model": {
            "name": name, "provider": "openai-compatible", "task": "llm/v1/chat",
            "openai_config": {"openai_api_base": self.api_base,
                              "openai_api_key_plaintext": "sk-vision-test"},
        }}

    def close(self) -> None:
        """Stop serving."""
        self.shutdown()
        self.server_close()


class _Handler(http.server.BaseHTTPRequestHandler):
    server: VisionProvider

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
        answers: list[str] = []
        try:
            for message in body["messages"]:
                content = message.get("content")
                for part in content if isinstance(content, list) else []:
                    if part.get("type") == "text":
                        answers.append(part["text"])
                    elif part.get("type") == "image_url":
                        data = _data_url_bytes(part["image_url"]["url"])
                        _check_side(data, self.server.max_side)
                        answers.append(seen(data))
                        with self.server._lock:
                            self.server.images += 1
                if isinstance(content, str):
                    answers.append(content)
        except Exception as exc:
            error = {"error": {"message": f"Invalid image: {exc}", "type": "invalid_request"}}
            reply_json(self, 400, json.dumps(error).encode())
            return
        with self.server._lock:
            self.server.requests += 1
        answer = " | ".join(answers)
        if "response_format" in body:
            answer = json.dumps({"caption": answer})
        payload = json.dumps({
            "id": "v", "object": "chat.completion", "created": 0, "model": body.get("model"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": answer}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14},
        }).encode()
        reply_json(self, 200, payload)

    def log_message(self, *args: Any) -> None:
        pass


def _check_side(data: bytes, max_side: int | None) -> None:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        if max_side is not None and max(image.size) > max_side:
            raise ValueError(f"image is {image.width}x{image.height}; the most is {max_side} px")


def _data_url_bytes(url: str) -> bytes:
    if not url.startswith("data:image/") or ";base64," not in url:
        raise ValueError(f"not an image data URL: {url[:40]!r}")
    return base64.b64decode(url.split(";base64,", 1)[1], validate=True)
