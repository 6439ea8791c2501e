"""Image files written by the tests with Pillow: a table of PNG and JPEG images, with a
duplicate, a corrupt file, a file that is no image and an oversized one."""

from __future__ import annotations

import io
from pathlib import Path

from ai_query.engine.core.files import MAX_FILE_BYTES


def image_bytes(i: int, kind: str = "PNG") -> bytes:
    """A small distinct image: size and colour from ``i``."""
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (16 + i % 23, 12 + i % 7), (i * 5 % 256, 80, 255 - i % 256)).save(out, kind)
    return out.getvalue()


def write_images(folder: Path, n: int = 50) -> list[Path]:
    """``n`` images (every third a JPEG), named so that their order is their index."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        kind = "JPEG" if i % 3 == 2 else "PNG"
        path = folder / f"img{i:03d}.{'jpg' if kind == 'JPEG' else 'png'}"
        path.write_bytes(image_bytes(i, kind))
        paths.append(path)
    return paths


def write_bad_files(folder: Path) -> dict[str, Path]:
    """A corrupt PNG, a text file named .png, and a PNG past the size limit."""
    folder.mkdir(parents=True, exist_ok=True)
    corrupt = folder / "bad1_corrupt.png"
    corrupt.write_bytes(image_bytes(1)[:40])
    text = folder / "bad2_text.png"
    text.write_bytes(b"not an image at all")
    big = folder / "bad3_big.png"
    big.write_bytes(image_bytes(2) + b"\0" * (MAX_FILE_BYTES + 1))
    return {"corrupt": corrupt, "text": text, "big": big}
