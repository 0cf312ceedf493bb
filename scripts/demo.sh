#!/usr/bin/env bash
# Install everything (into .venv) and run the main job.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python examples/toy_lstm.py "$@"
