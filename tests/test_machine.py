"""The machine as read from /proc, /sys and /dev, and the engine settings its rule picks."""

from __future__ import annotations

from pathlib import Path

import pytest

from ai_query.config import effective_vllm_environment, vllm_environment
from ai_query.engine.vllm.model import engine_defaults
from ai_query.machine import Machine, kv_cache_gib, this_machine


def _root(tmp_path: Path, flags: str, mem_kib: int = 24 * 2**20, cgroup: str | None = None,
          gpu_model: str | None = None) -> Path:
    root = tmp_path / f"root-{abs(hash((flags, mem_kib, cgroup, gpu_model)))}"
    (root / "proc").mkdir(parents=True)
    (root / "proc/cpuinfo").write_text(
        f"processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu sse2 {flags}\n"
        f"processor\t: 1\nmodel name\t: Test CPU 9000\nflags\t\t: fpu sse2 {flags}\n"
    )
    (root / "proc/meminfo").write_text(f"MemTotal:       {mem_kib} kB\nMemFree: 1 kB\n")
    if cgroup is not None:
        (root / "sys/fs/cgroup").mkdir(parents=True)
        (root / "sys/fs/cgroup/memory.max").write_text(cgroup + "\n")
    if gpu_model is not None:
        info = root / "proc/driver/nvidia/gpus/0000:01:00.0"
        info.mkdir(parents=True)
        (info / "information").write_text(f"Model: \t\t {gpu_model}\nIRQ: 1\n")
    return root


def test_the_machine_is_read_from_proc_sys_and_dev(tmp_path: Path) -> None:
    no_gpu = tmp_path / "no-nvidiactl"
    m = Machine.read(_root(tmp_path, "avx2 avx512f avx512_bf16"), no_gpu)
    assert (m.cpu, m.gpu, m.memory_gib) == ("Test CPU 9000", None, 24.0)
    assert {"avx2", "avx512_bf16"} <= m.flags and m.cores >= 1
    assert m.describe().startswith("Test CPU 9000 (flags avx2 avx512f avx512_bf16), ")
    assert m.describe().endswith("24.0 GiB, no GPU, no tcmalloc")
    assert m.tcmalloc is None
    limited = Machine.read(_root(tmp_path, "avx2", cgroup=str(6 * 2**30)), no_gpu)
    assert limited.memory_gib == 6.0, "a control group's lower limit is the memory"
    assert Machine.read(_root(tmp_path, "avx2", cgroup="max"), no_gpu).memory_gib == 24.0
    gpu_dev = tmp_path / "nvidiactl"
    gpu_dev.touch()
    gpu = Machine.read(_root(tmp_path, "avx2", gpu_model="NVIDIA H100 80GB HBM3"), gpu_dev)
    assert gpu.gpu == "NVIDIA H100 80GB HBM3"
    unread = Machine.read(tmp_path / "nothing-here", no_gpu)
    assert (unread.cpu, unread.flags, unread.memory_gib) == ("unknown CPU", frozenset(), 0.0)


def _machine(flags: str, memory_gib: float = 24.0, gpu: str | None = None,
             tcmalloc: str | None = None) -> Machine:
    return Machine("CPU", frozenset(flags.split()), 2, memory_gib, gpu, tcmalloc)


def test_the_machines_tcmalloc_is_found_where_distributions_keep_libraries(tmp_path: Path) -> None:
    root = _root(tmp_path, "avx2")
    (root / "usr/lib64").mkdir(parents=True)
    (root / "usr/lib64/libtcmalloc.so.4").write_bytes(b"")  # the full one, as Fedora has it
    m = Machine.read(root, tmp_path / "no-nvidiactl")
    assert m.tcmalloc == str(root / "usr/lib64/libtcmalloc.so.4")
    (root / "usr/lib/x86_64-linux-gnu").mkdir(parents=True)
    (root / "usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4").write_bytes(b"")  # Debian's
    m = Machine.read(root, tmp_path / "no-nvidiactl")
    assert m.tcmalloc == str(root / "usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4")
    assert m.describe().endswith(", tcmalloc")


def test_cpu_engines_get_tcmalloc_preloaded_a_gpu_or_a_machine_without_it_does_not() -> None:
    lib = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"
    assert vllm_environment(_machine("avx2", tcmalloc=lib))["LD_PRELOAD"] == lib
    assert "LD_PRELOAD" not in vllm_environment(_machine("avx2"))
    assert "LD_PRELOAD" not in vllm_environment(_machine("avx2", gpu="NVIDIA L4", tcmalloc=lib))


def test_tcmalloc_goes_before_the_users_preload_unless_they_chose_an_allocator_or_turned_it_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import ai_query.config as config

    lib = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"
    monkeypatch.setattr(config, "this_machine", lambda: _machine("avx2", tcmalloc=lib))
    monkeypatch.delenv("AI_QUERY_TCMALLOC", raising=False)
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    assert effective_vllm_environment()["LD_PRELOAD"] == lib
    monkeypatch.setenv("LD_PRELOAD", "/opt/libmine.so")
    assert effective_vllm_environment()["LD_PRELOAD"] == f"{lib}:/opt/libmine.so"
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
    assert effective_vllm_environment()["LD_PRELOAD"] == "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
    monkeypatch.setenv("LD_PRELOAD", f"{lib}:/opt/libmine.so")  # applied before: not twice
    assert effective_vllm_environment()["LD_PRELOAD"] == f"{lib}:/opt/libmine.so"
    monkeypatch.setenv("AI_QUERY_TCMALLOC", "0")
    monkeypatch.setenv("LD_PRELOAD", "/opt/libmine.so")
    assert effective_vllm_environment()["LD_PRELOAD"] == "/opt/libmine.so"
    monkeypatch.delenv("LD_PRELOAD")
    assert "LD_PRELOAD" not in effective_vllm_environment()


def test_bf16_only_where_the_machine_computes_it_natively() -> None:
    def dtype(m: Machine) -> str:
        return str(engine_defaults("generate", m)["dtype"])

    assert dtype(_machine("avx avx2 fma")) == "float32", "AVX2 only emulates bf16"
    assert dtype(_machine("avx2 avx512f avx512_bf16")) == "bfloat16"
    assert dtype(_machine("avx2 amx_bf16 amx_tile")) == "bfloat16"
    assert dtype(_machine("avx2", gpu="NVIDIA L4")) == "bfloat16", "a GPU computes bf16"
    assert dtype(_machine("")) == "bfloat16", "flags unread or not x86 (ARM has its own)"
    assert engine_defaults("pooling", _machine("avx512_bf16"))["dtype"] == "float32"


def test_a_cpu_gets_small_kv_blocks_eager_mode_cpu_scheduler_limits_and_shared_tails_a_gpu_vllms_own() -> None:
    cpu = engine_defaults("generate", _machine("avx2"))
    assert (cpu["block_size"], cpu["enforce_eager"]) == (32, True)
    assert (cpu["max_num_seqs"], cpu["max_num_batched_tokens"]) == (256, 4096)
    assert cpu["kv_transfer_config"]["kv_connector"] == "SharedTailConnector"
    gpu = engine_defaults("generate", _machine("avx2", gpu="NVIDIA H100"))
    assert not {"block_size", "enforce_eager", "max_num_seqs", "max_num_batched_tokens",
                "kv_transfer_config"} & set(gpu)
    assert gpu["max_model_len"] == cpu["max_model_len"] == 2048


def test_the_kv_cache_and_threads_follow_the_machine() -> None:
    assert [kv_cache_gib(_machine("", g)) for g in (4, 24, 64, 512)] == [1, 1, 4, 32]
    env = vllm_environment(_machine("avx2", 64))
    assert (env["VLLM_CPU_KVCACHE_SPACE"], env["OMP_NUM_THREADS"]) == ("4", "2")


def test_this_machine_is_read_once() -> None:
    assert this_machine() is this_machine()
    assert this_machine().cores >= 1
