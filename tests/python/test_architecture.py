"""The workspace's layers import only downward, and the core stays pure.

Read from `cargo metadata` and `cargo tree` (the resolved dependency graph, no build), so a
manifest that adds an upward or server-only dependency fails here with the edge named.
"""

import json
import subprocess

from conftest import ROOT

CORE, WIRE = "tensor-surgeon-core", "tensor-surgeon-wire"
STORE, INFER, LAYOUT = "tensor-surgeon-store", "tensor-surgeon-infer", "tensor-surgeon-layout"
ENGINE, APP = "tensor-surgeon-engine", "tensor-surgeon-app"

# Each workspace crate and the workspace crates it may depend on (directly). The store, the
# inference and the layouts sit side by side: none knows another, nor the session above them.
ALLOWED = {
    CORE: set(),
    WIRE: {CORE},
    STORE: {CORE, WIRE},
    INFER: {CORE, WIRE},
    LAYOUT: {CORE, WIRE},
    ENGINE: {CORE, WIRE, STORE, INFER, LAYOUT},
    APP: {CORE, WIRE, ENGINE},
    "tensor-surgeon-frontend": {APP},
    "tensor-surgeon": {CORE, WIRE, STORE, INFER, LAYOUT, ENGINE, APP},
}

# Crates a side-by-side crate must not have in its tree (normal dependencies, any target).
NOT_IN = {
    # Inference reads weights through a tensor source: no object store, no network (candle
    # itself maps files, so memmap2 is in its tree).
    INFER: {"object_store", "reqwest", "zstd", "tokio", "faer", "bhtsne"},
    # Layouts are numerical work on a matrix: no tensor library, no files, no network.
    LAYOUT: {"candle-core", "candle-nn", "tokenizers", "object_store", "memmap2", "tokio"},
    # The store holds bytes: no tensor library, no tokenizer, no linear algebra.
    STORE: {"candle-core", "tokenizers", "faer", "bhtsne"},
}

# Crates that do I/O, async or native-only work: never in the core's tree.
NOT_IN_CORE = {"tokio", "axum", "memmap2", "zstd", "zstd-sys", "leptos", "rayon", "tempfile"}


def cargo(*args) -> str:
    proc = subprocess.run(["cargo", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def workspace_edges():
    meta = json.loads(cargo("metadata", "--format-version", "1", "--no-deps"))
    names = {p["name"] for p in meta["packages"]}
    edges = {}
    for p in meta["packages"]:
        edges[p["name"]] = {
            (d["name"], d.get("optional", False), d.get("kind")) for d in p["dependencies"] if d["name"] in names
        }
    return edges


def test_every_crate_imports_only_the_layers_below_it():
    edges = workspace_edges()
    assert set(edges) == set(ALLOWED), "the workspace's crates changed: update the layer table"
    for crate, deps in edges.items():
        upward = {name for name, _, _ in deps} - ALLOWED[crate]
        assert not upward, f"{crate} depends on {sorted(upward)}, which are not below it"


def test_the_app_reaches_the_engine_only_in_its_server_build():
    edges = workspace_edges()
    engine = [d for d in edges["tensor-surgeon-app"] if d[0] == "tensor-surgeon-engine"]
    assert engine and all(optional for _, optional, _ in engine), "the engine must be optional (ssr)"
    meta = json.loads(cargo("metadata", "--format-version", "1", "--no-deps"))
    app = next(p for p in meta["packages"] if p["name"] == "tensor-surgeon-app")
    assert "dep:tensor-surgeon-engine" in app["features"]["ssr"]
    assert "dep:tensor-surgeon-engine" not in app["features"]["hydrate"]


def test_the_core_has_no_io_async_or_native_crates_in_its_tree():
    for target in ["wasm32-unknown-unknown", "all"]:
        tree = cargo("tree", "-p", "tensor-surgeon-core", "-e", "normal", "--prefix", "none", "--target", target)
        crates = {line.split()[0] for line in tree.splitlines() if line.strip()}
        assert "tensor-surgeon-core" in crates
        found = crates & NOT_IN_CORE
        assert not found, f"the core's tree ({target}) holds {sorted(found)}"


def test_the_client_does_not_pull_in_the_engine():
    tree = cargo(
        "tree", "-p", "tensor-surgeon-frontend", "-e", "normal", "--prefix", "none",
        "--target", "wasm32-unknown-unknown",
    )
    crates = {line.split()[0] for line in tree.splitlines() if line.strip()}
    assert "tensor-surgeon-app" in crates
    assert not crates & {"tensor-surgeon-engine", "tokio", "memmap2", "zstd"}, sorted(crates & {"tensor-surgeon-engine", "tokio", "memmap2", "zstd"})


def tree_of(crate: str) -> set:
    tree = cargo("tree", "-p", crate, "-e", "normal", "--prefix", "none", "--target", "all")
    return {line.split()[0] for line in tree.splitlines() if line.strip()}


def test_the_store_inference_and_layouts_keep_to_their_concern():
    for crate, banned in NOT_IN.items():
        crates = tree_of(crate)
        assert crate in crates
        found = crates & banned
        assert not found, f"{crate}'s tree holds {sorted(found)}"


def test_nothing_below_the_engine_knows_the_session():
    for crate in [STORE, INFER, LAYOUT]:
        found = tree_of(crate) & {ENGINE, APP, "tensor-surgeon"}
        assert not found, f"{crate} depends on {sorted(found)}"
