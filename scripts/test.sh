#!/usr/bin/env bash
# Install everything (into .venv) and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -z "${LSTMKIT_DATA:-}" ] && [ -d ../shared/data ]; then
    export LSTMKIT_DATA="$(cd ../shared/data && pwd)"
fi
exec .venv/bin/python -m pytest "$@"
