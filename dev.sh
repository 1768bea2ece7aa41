#!/usr/bin/env bash
# Tensor Surgeon's one entry point for people and CI.
#   ./dev.sh test            set up, then run every test (Rust unit + integration, Python
#                            reference checks, browser end-to-end)
#   ./dev.sh setup           only install what is missing
#   ./dev.sh bench           run the benchmarks (see BENCHMARKS.md)
# Set-up is idempotent: it installs only what is missing, from the package registries.
set -euo pipefail
cd "$(dirname "$0")"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

log() { printf '\n==> %s\n' "$*" >&2; }

setup_python() {
    if [ ! -x .venv/bin/python ]; then
        log "creating .venv"
        python3 -m venv .venv
    fi
    if ! .venv/bin/python -c "import safetensors, numpy, ml_dtypes, pytest" 2>/dev/null; then
        log "installing Python test dependencies"
        .venv/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
    fi
}

setup() {
    command -v cargo >/dev/null || { echo "cargo is required (rustup)" >&2; exit 1; }
    setup_python
}

run_tests() {
    log "Rust tests"
    cargo test --all-targets
    log "building the CLI for the Python checks"
    cargo build --bin tensor-surgeon
    log "Python reference checks"
    TENSOR_SURGEON_BIN="$PWD/target/debug/tensor-surgeon" .venv/bin/python -m pytest -q tests/python
}

cmd="${1:-}"
shift || true
case "$cmd" in
    setup) setup ;;
    test) setup; run_tests ;;
    bench) setup; exec benches/run.sh "$@" ;;
    *) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
