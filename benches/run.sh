#!/usr/bin/env bash
# Runs every benchmark against its reference in one run and prints the ratios.
# Expects the release builds (server, CLI, WASM client) that `./dev.sh bench` makes first.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/tools/node_modules/.bin:$PATH" # wasm-opt, installed by ./dev.sh bench
.venv/bin/pip install --quiet --disable-pip-version-check -r benches/requirements.txt
.venv/bin/python benches/compare.py "$@"
.venv/bin/python benches/run_bench.py
.venv/bin/python benches/load_bench.py
.venv/bin/python benches/journal_bench.py
.venv/bin/python benches/structure_bench.py
.venv/bin/python benches/remote_bench.py
.venv/bin/python benches/trace_bench.py
.venv/bin/python benches/gguf_bench.py
exec .venv/bin/python benches/layout_bench.py
