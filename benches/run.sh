#!/usr/bin/env bash
# Runs every benchmark against its reference in one run and prints the ratios.
# Release builds: the server and CLI, and the WASM client optimised with wasm-opt (npm binaryen).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/tools/node_modules/.bin:$PATH" # wasm-opt, installed by ./dev.sh bench
.venv/bin/pip install --quiet --disable-pip-version-check -r benches/requirements.txt
cargo leptos build --release
.venv/bin/python benches/compare.py "$@"
.venv/bin/python benches/run_bench.py
.venv/bin/python benches/load_bench.py
.venv/bin/python benches/journal_bench.py
.venv/bin/python benches/structure_bench.py
.venv/bin/python benches/remote_bench.py
exec .venv/bin/python benches/layout_bench.py
