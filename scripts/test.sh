#!/usr/bin/env bash
# The test command the README names: the whole suite, real engines included.
#   bash scripts/test.sh              # everything (18-25 minutes on 2 cores)
#   bash scripts/test.sh -m "not slow"  # the fast tests only (no model; 1-3 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
exec .venv/bin/python -m pytest "$@"
