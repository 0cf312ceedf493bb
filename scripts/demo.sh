#!/usr/bin/env bash
# Install everything (into .venv), get the names data if it is missing, and run the main job:
# `lstmkit demo`, which writes its run folders, plots and summary.md into runs/demo (runs/demo-2,
# ... when that exists).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -z "${LSTMKIT_DATA:-}" ] && [ -d ../shared/data ]; then
    export LSTMKIT_DATA="$(cd ../shared/data && pwd)"
fi
.venv/bin/lstmkit data fetch names >/dev/null 2>&1 \
    || echo "(could not download the names data; the demo skips its names part)"
out="${1:-}"
if [ -z "$out" ]; then   # a re-run keeps the earlier demo: runs/demo, then runs/demo-2, ...
    out=runs/demo
    n=2
    while [ -e "$out" ]; do out="runs/demo-$n"; n=$((n + 1)); done
fi
exec .venv/bin/lstmkit demo --out "$out"
