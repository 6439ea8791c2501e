"""What this machine is: its CPU and the flags that choose vLLM's CPU kernels, the cores this
process may use, its memory, its GPU, and its tcmalloc. Read from ``/proc``, ``/sys``, ``/dev``
and the library directories, once per process (:func:`this_machine`).

The engine's settings follow from it by one rule (``engine_defaults`` in
:mod:`ai_query.engine.vllm.model`, and :func:`kv_cache_gib` here); a catalog's ``engine_args``
still override any of them. ``ai-query machine`` prints the machine and what it chose, and the
benchmarks print the same beside their figures.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

#: Where an NVIDIA driver is, vLLM runs on the GPU.
NVIDIA_DEVICE = Path("/dev/nvidiactl")
#: CPU flags of native bfloat16 arithmetic.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
#: The CPU flags that choose vLLM's CPU kernels (shown beside benchmark figures).
KERNEL_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16")
#: Where Linux distributions keep shared libraries (Debian's multiarch directories first).
LIBRARY_DIRS = (
    "usr/lib/x86_64-linux-gnu", "usr/lib/aarch64-linux-gnu", "usr/lib64", "usr/lib",
    "usr/local/lib",
)
#: tcmalloc's libraries, the minimal one first (the one vLLM's CPU wheels bundle).
TCMALLOC_NAMES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4")


@dataclass(frozen=True)
class Machine:
    """This machine, as far as the engine's settings depend on it."""

    cpu: str
    """The CPU's model name."""
    flags: frozenset[str]
    """The CPU's flags (``/proc/cpuinfo``); empty where they could not be read."""
    cores: int
    """Cores this process may run on (its CPU affinity)."""
    memory_gib: float
    """Memory this process may use: the machine's, or its control group's limit if lower."""
    gpu: str | None
    """The GPU's model (``NVIDIA ...``), or None without one."""
    tcmalloc: str | None = None
    """The machine's tcmalloc library (Debian's ``libtcmalloc-minimal4``), or None: vLLM's CPU
    engine processes run with it preloaded (:func:`ai_query.config.vllm_environment`)."""

    @classmethod
    def read(cls, root: Path = Path("/"), gpu_device: Path = NVIDIA_DEVICE) -> Machine:
        """Read the machine under ``root`` (``/`` but in tests)."""
        cpu, flags = "unknown CPU", frozenset[str]()
        for line in _lines(root / "proc/cpuinfo"):
            key, _, value = line.partition(":")
            if key.strip() == "model name" and cpu == "unknown CPU":
                cpu = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = frozenset(value.split())
        return cls(
            cpu=cpu,
            flags=flags,
            cores=len(os.sched_getaffinity(0)),
            memory_gib=_memory_gib(root),
            gpu=_gpu(root, gpu_device),
            tcmalloc=next((str(root / d / name) for d in LIBRARY_DIRS for name in TCMALLOC_NAMES
                           if (root / d / name).is_file()), None),
        )

    @property
    def native_bf16(self) -> bool:
        """Whether it computes bfloat16 natively: a GPU; a CPU with AVX512-BF16 or AMX; any CPU
        that is not an AVX2 x86 one (ARM's vLLM kernels have their own bf16). An x86 CPU with
        AVX2 only emulates it (measured: 32 chats x 16 tokens 72.7 s in bf16, 26.8 s in
        float32, the same answers)."""
        if self.gpu is not None:
            return True
        return "avx2" not in self.flags or bool(NATIVE_BF16_FLAGS & self.flags)

    def describe(self) -> str:
        """One line: the CPU with its kernel flags, cores, memory and GPU."""
        flags = " ".join(f for f in KERNEL_FLAGS if f in self.flags) or "none of " + "/".join(
            KERNEL_FLAGS
        )
        gpu = f", GPU {self.gpu}" if self.gpu else ", no GPU"
        malloc = "tcmalloc" if self.tcmalloc else "no tcmalloc"
        return (
            f"{self.cpu} (flags {flags}), {self.cores} cores usable, "
            f"{self.memory_gib:.1f} GiB{gpu}, {malloc}"
        )


def kv_cache_gib(machine: Machine) -> int:
    """GiB of memory vLLM's CPU build keeps for its KV cache (``VLLM_CPU_KVCACHE_SPACE``): a
    sixteenth of the memory, at least 1 (each engine process holds its own; 1 GiB holds ~45k
    tokens of the bundled 135M model in bf16, and a 24 GiB machine runs several engines at
    once in the tests)."""
    return max(1, int(machine.memory_gib // 16))


@functools.cache
def this_machine() -> Machine:
    """The machine this process runs on (read once)."""
    return Machine.read()


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except OSError:
        return []


def _memory_gib(root: Path) -> float:
    total = next(
        (int(line.split()[1]) * 1024 for line in _lines(root / "proc/meminfo")
         if line.startswith("MemTotal:")),
        0,
    )  # fmt: skip
    limit = next(iter(_lines(root / "sys/fs/cgroup/memory.max")), "max").strip()
    if limit.isdigit() and (not total or int(limit) < total):
        total = int(limit)
    return total / 2**30


def _gpu(root: Path, device: Path) -> str | None:
    if not device.exists():
        return None
    for info in sorted((root / "proc/driver/nvidia/gpus").glob("*/information")):
        for line in _lines(info):
            key, _, value = line.partition(":")
            if key.strip() == "Model":
                return value.strip()
    return "NVIDIA GPU"
