#!/usr/bin/env bash
# Create .venv (once) and install lstmkit with its test tools and the onnx extra into it.
# Needs only Python 3.11 and pip; torch is pinned to the CPU build 2.13.0.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.lstmkit-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet "torch==2.13.0"
    .venv/bin/python -m pip install --quiet -e ".[test,onnx]"
    touch "$stamp"
fi
# The xLSTM reference (tests only: its pure-PyTorch sLSTM and mLSTM backends); --no-deps keeps
# its CUDA kernel packages and any other torch out.
if ! .venv/bin/python -c "import xlstm" 2>/dev/null; then
    .venv/bin/python -m pip install --quiet --no-deps "xlstm==2.0.6"
fi
# The report's browser test (tests/test_report_browser.py) drives the Debian package chromium
# through playwright; install it where missing and possible (root), else that test skips.
if ! command -v chromium >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
            || echo "lstmkit: could not install chromium; the browser test will skip"
    else
        echo "lstmkit: chromium is not installed (apt-get install chromium as root); the browser test will skip"
    fi
fi
# The compiled engine (engine="compiled", and "auto" where it is fastest) is built on first use
# and cached per user; build it here rather than in the middle of a first run.
.venv/bin/python -c "from lstmkit.engine import compiled
if not compiled.available(): print('lstmkit: compiled engine unavailable, the python engine runs instead:', compiled.build_error())"
