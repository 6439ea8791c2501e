"""Run a benchmark on an AVX-512 CPU as if it had AVX2 only (every Python process it starts).

    PYTHONPATH=bench/emulate_avx2 .venv/bin/python bench/shared_prefix.py ...

Python imports this module at start-up in each process that has this folder on its path (the
benchmark, ai_query's engine server, vLLM's engine processes). It makes torch's ATen and oneDNN
kernels AVX2 ones (``ATEN_CPU_CAPABILITY``, ``ONEDNN_MAX_CPU_ISA``), makes torch answer that
the CPU has no AVX-512, AVX512-BF16 or AMX (so vLLM loads its AVX2 kernel library and AVX2
attention), and hides those flags from ai_query's machine reading (so its rule picks what it
picks on an AVX2-only CPU). The memory system, clock and core are still this CPU's: figures
from it are labelled "emulated AVX2", not taken for a real AVX2-only machine's.
"""

import dataclasses
import os

os.environ.setdefault("ATEN_CPU_CAPABILITY", "avx2")
os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")

import torch

for _name in ("_is_avx512_supported", "_is_avx512_bf16_supported", "_is_avx512_vnni_supported",
              "_is_amx_tile_supported", "_is_amx_fp16_supported"):
    if hasattr(torch.cpu, _name):
        setattr(torch.cpu, _name, lambda: False)

import ai_query.machine as _machine  # noqa: E402

_read = _machine.Machine.read.__func__  # type: ignore[attr-defined]


def _read_avx2(cls, *args, **kwargs):  # type: ignore[no-untyped-def]
    found = _read(cls, *args, **kwargs)
    flags = frozenset(f for f in found.flags if not f.startswith(("avx512", "amx")))
    return dataclasses.replace(found, flags=flags)


_machine.Machine.read = classmethod(_read_avx2)  # type: ignore[method-assign]
