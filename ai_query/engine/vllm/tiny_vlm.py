"""A tiny vision-language model built offline from the bundled SmolLM2 chat model.

It is an ``Idefics3ForConditionalGeneration`` (the SmolVLM layout): SmolLM2-135M-Instruct, with
its real weights and tokenizer (plus Idefics3's image tokens), behind a small SigLIP-style
vision encoder and connector that are randomly initialised with a fixed seed. Its answers
about images are meaningless; it exists so that the image path (image bytes -> vLLM's image
processor -> an answer) can be run and tested on a CPU without downloading anything.

Idefics3 rather than LLaVA: vLLM's ``llava`` module imports transformers' Pixtral image
processor, which needs torchvision (not installed with vLLM's CPU build); ``idefics3`` does not.

The processor resizes every image to ``IMAGE_SIZE`` x ``IMAGE_SIZE`` (no tiling), so one image
is ``IMAGE_TOKENS`` ``<image>`` tokens between ``<fake_token_around_image><global-img>`` and
``<fake_token_around_image>``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

#: Side of the square every image is resized to, in pixels.
IMAGE_SIZE = 128
#: Side of one vision patch, in pixels.
PATCH_SIZE = 16
#: The connector's pixel shuffle: it merges SCALE_FACTOR x SCALE_FACTOR patches into one token.
SCALE_FACTOR = 2
#: ``<image>`` tokens per image.
IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2 // SCALE_FACTOR**2
#: The tokens Idefics3's processor uses (besides those it adds itself).
_EXTRA_TOKENS = [
    "<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>",
    *(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)),
]
#: Written last: a directory holding it is a complete build.
_DONE = "tiny_vlm.json"
_DIR_NAME = "tiny-vlm-smollm2"

#: SmolLM2's ChatML template, which also takes OpenAI-style content lists: each image part
#: becomes ``<image>`` where it stands (vLLM expands it), text parts are kept.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
    "Hugging Face<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% elif part['type'] in ('image', 'image_url') %}{{ '<image>' }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _is_complete(path: Path) -> bool:
    return (path / _DONE).is_file() and (path / "config.json").is_file()


def build_tiny_vlm(out: Path, text_model: Path, *, seed: int = 0) -> Path:
    """Write the tiny VLM as a Hugging Face directory at ``out`` and return ``out``.

    Args:
        out: the directory to write (created; if it already holds a complete build, it is
            returned untouched).
        text_model: a SmolLM2 (``LlamaForCausalLM``) directory (the bundled one's).
        seed: seeds the random vision encoder and connector (same seed, same weights).
    """
    out = Path(out)
    if _is_complete(out):
        return out
    text_model = Path(text_model)
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3Processor,
        Idefics3VisionConfig,
    )
    from transformers.models.idefics3.image_processing_pil_idefics3 import (
        Idefics3ImageProcessorPil,
    )

    tokenizer = AutoTokenizer.from_pretrained(str(text_model))
    tokenizer.add_special_tokens({"additional_special_tokens": _EXTRA_TOKENS})
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    assert isinstance(image_token_id, int)
    text = AutoModelForCausalLM.from_pretrained(str(text_model), dtype=torch.float32)
    torch.manual_seed(seed)
    # New rows: the old embeddings' mean (and covariance), so no new token dominates the logits.
    text.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    text_config = text.config.to_dict()
    text_config.pop("_name_or_path", None)
    vision = Idefics3VisionConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
        image_size=IMAGE_SIZE, patch_size=PATCH_SIZE,
    )
    config = Idefics3Config(
        vision_config=vision.to_dict(), text_config=text_config, scale_factor=SCALE_FACTOR,
        image_token_id=image_token_id,
        pad_token_id=text.config.pad_token_id,
        tie_word_embeddings=bool(text.config.tie_word_embeddings),
    )
    config.architectures = ["Idefics3ForConditionalGeneration"]
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(config).eval()
    model.model.text_model.load_state_dict(text.model.state_dict())
    model.lm_head.weight = model.model.text_model.embed_tokens.weight
    image_processor = Idefics3ImageProcessorPil(
        size={"longest_edge": IMAGE_SIZE}, max_image_size={"longest_edge": IMAGE_SIZE},
        do_image_splitting=False, image_mean=[0.5] * 3, image_std=[0.5] * 3,
    )
    processor = Idefics3Processor(
        image_processor=image_processor, tokenizer=tokenizer, image_seq_len=IMAGE_TOKENS,
        chat_template=CHAT_TEMPLATE,
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    processor.save_pretrained(str(out))
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(str(out))
    if (text_model / "generation_config.json").is_file():
        shutil.copy(text_model / "generation_config.json", out / "generation_config.json")
    info = {"text_model": str(text_model), "seed": seed, "image_tokens": IMAGE_TOKENS,
            "image_token_id": config.image_token_id}
    (out / _DONE).write_text(json.dumps(info, indent=2) + "\n")
    return out


def tiny_vlm_dir(cache_dir: Path, text_model: Path) -> Path:
    """The tiny VLM's directory under the ai_query cache ``cache_dir``
    (``<cache>/models/tiny-vlm-smollm2``), built on first use from ``text_model`` (the
    converted bundled SmolLM2).

    The build goes into a temporary directory beside the target and is renamed into place,
    so a concurrent builder or a crash never leaves a half-written model where it is used.
    """
    from ai_query.config import apply_vllm_environment

    target = cache_dir / "models" / _DIR_NAME
    if _is_complete(target):
        return target
    apply_vllm_environment()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{_DIR_NAME}-", dir=target.parent))
    try:
        build_tiny_vlm(tmp, text_model)
        try:
            os.rename(tmp, target)
        except OSError:
            if not _is_complete(target):  # and no concurrent builder put one there
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
