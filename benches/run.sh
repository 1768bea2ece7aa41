#!/usr/bin/env bash
# Runs every benchmark against its reference in one run and prints the ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin tensor-surgeon
exec .venv/bin/python benches/compare.py "$@"
