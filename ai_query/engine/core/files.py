"""Files sent with a request (``ai_query(endpoint, prompt, files => content)``): images.

A row's file travels as raw bytes in the request batch's binary ``files`` column (never base64
inside Arrow). Before any model call the engine checks it with :func:`check_image`: at most
:data:`MAX_FILE_BYTES`, one of the image formats vision models take (PNG, JPEG, GIF, WebP, told
by their first bytes), and decodable (Pillow opens it and reads its pixels). A file that fails is
that row's error; nothing is sent for it. Duplicate rows and the caches key on the text and
:func:`file_digest` (SHA-256 of the bytes), so the same text with another image is another
request. Providers receive an image as an OpenAI ``image_url`` part holding a data URL
(:func:`image_part`).
"""

from __future__ import annotations

import base64
import hashlib
import io
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

from ai_query.errors import RowFailure
from ai_query.text import one_line

#: The request batch's optional column of file bytes, one (or NULL) per row.
FILES_COLUMN = "files"
#: The largest file a row may carry (OpenAI's and Databricks' per-image limit is 20 MB).
MAX_FILE_BYTES = 20 * 1024 * 1024
#: The largest image, in pixels, that is decoded (a larger one is refused, not decoded).
MAX_IMAGE_PIXELS = 64_000_000

_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)
SUPPORTED_FORMATS = "PNG, JPEG, GIF or WebP"


def file_digest(data: bytes) -> str:
    """The SHA-256 of a file's bytes, in hex: what dedup and the caches key a file on."""
    return hashlib.sha256(data).hexdigest()


def media_type(data: bytes) -> str | None:
    """The image type ``data`` starts as (``image/png``, ...), or None when not one we take."""
    for signature, kind in _SIGNATURES:
        if data.startswith(signature):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def check_image(data: bytes, limit: int = MAX_FILE_BYTES) -> str:
    """Check one row's file before any call; returns its media type.

    Raises:
        RowFailure: saying why the file cannot be sent: over ``limit`` bytes, not an image
            format vision models take, or an image that does not decode (corrupt, truncated,
            or too many pixels).
    """
    if len(data) > limit:
        raise RowFailure(
            f"the file is {_size(len(data))}, over the {_size(limit)} limit for one file"
        )
    kind = media_type(data)
    if kind is None:
        raise RowFailure(f"the file is not an image ai_query can send ({SUPPORTED_FORMATS})")
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise RowFailure(
                    f"the image is {width}x{height} pixels, over {MAX_IMAGE_PIXELS:,} pixels"
                )
            image.load()
    except RowFailure:
        raise
    except UnidentifiedImageError:
        raise RowFailure(f"the {kind} file is corrupt: it does not decode as an image") from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds for a bad image
        raise RowFailure(f"the {kind} file is corrupt or truncated ({one_line(exc)})") from None
    return kind


def image_parts(messages: list[dict[str, Any]]) -> Iterator[tuple[str, Any]]:
    """(where, url) of each ``image_url`` part of OpenAI chat ``messages``: where is
    ``messages[i].content[j]``, url the part's URL as given (None when it has none)."""
    for i, message in enumerate(messages):
        content = message.get("content")
        for j, part in enumerate(content if isinstance(content, list) else []):
            if isinstance(part, dict) and part.get("type") == "image_url":
                image = part.get("image_url")
                url = image.get("url") if isinstance(image, dict) else image
                yield f"messages[{i}].content[{j}]", url


def has_images(messages: list[dict[str, Any]]) -> bool:
    """Whether any of OpenAI chat ``messages`` holds an ``image_url`` part."""
    return any(True for _ in image_parts(messages))


def check_image_parts(messages: list[dict[str, Any]], allowed: Callable[[str], bool]) -> None:
    """Check the ``image_url`` parts of OpenAI chat ``messages`` before any call: a data URL
    must hold an image :func:`check_image` accepts; any other URL must be one ``allowed``
    takes (the server's allow-list: the model's server would fetch it).

    Raises:
        RowFailure: naming the part (``messages[i].content[j]``) and what is wrong; a refused
            URL is named by its scheme and host only (its path may hold a signed token).
    """
    for where, url in image_parts(messages):
        if not isinstance(url, str) or not url:
            raise RowFailure(f"{where}: an image_url part needs a url")
        if url.startswith("data:"):
            try:
                check_image(data_url_bytes(url))
            except RowFailure as exc:
                raise RowFailure(f"{where}: {exc}") from None
        elif not allowed(url):
            parts = urllib.parse.urlsplit(url)
            raise RowFailure(
                f"{where}: image URLs from {parts.scheme}://{parts.hostname} are not allowed "
                "on this server; send the image as a data URL (data:image/png;base64,...) or "
                "start the server with --allow-image-base"
            )


def data_url_bytes(url: str) -> bytes:
    """The bytes a base64 ``data:`` URL holds.

    Raises:
        RowFailure: when it is not base64 or does not decode.
    """
    header, sep, payload = url.partition(",")
    if not sep or not header.endswith(";base64"):
        raise RowFailure("an image data URL must be base64 (data:image/png;base64,...)")
    try:
        return base64.b64decode(payload, validate=True)
    except ValueError:
        raise RowFailure("the image data URL is not valid base64") from None


def data_url(data: bytes, kind: str) -> str:
    """``data`` as a ``data:`` URL of media type ``kind``."""
    return f"data:{kind};base64,{base64.b64encode(data).decode('ascii')}"


def image_part(data: bytes) -> dict[str, object]:
    """An OpenAI chat content part carrying the image ``data`` as a data URL."""
    kind = media_type(data) or "application/octet-stream"
    return {"type": "image_url", "image_url": {"url": data_url(data, kind)}}


def _size(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB" if n >= 1024 * 1024 else f"{n} bytes"
