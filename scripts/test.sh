#!/usr/bin/env bash
# The test command the README names: the whole suite, real engines included.
#   bash scripts/test.sh              # everything (about 20-30 minutes on 2 cores)
#   bash scripts/test.sh -m "not slow"  # fast unit tests only (seconds)
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
exec .venv/bin/python -m pytest "$@"
