"""The patch workflow of the web session over HTTP: patches loaded as layers and turned on and
off, entries dropped or kept, the inverse download, combining saved patches with conflicts
listed, comparing with another model, and the before / after / delta view."""

import json
import os
import urllib.parse

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from conftest import run
from helpers import sha256
from server import Server


@pytest.fixture
def model(tmp_path):
    rng = np.random.default_rng(9)
    tensors = {"a": rng.standard_normal((8, 6), dtype=np.float32), "b": rng.standard_normal((4, 4), dtype=np.float32)}
    path = tmp_path / "model.safetensors"
    save_file(tensors, str(path))
    return path, tensors


@pytest.fixture
def server(model, tmp_path):
    s = Server(model[0], "--patches", str(tmp_path / "patches")).start()
    yield s
    s.stop()


def cli_patch(path, tmp_path, name, *flags):
    out = tmp_path / name
    run("edit", path, "--patch", out, *flags)
    return out


def cell(s, tensor, index):
    q = urllib.parse.urlencode({"tensor": tensor, "index": ",".join(map(str, index))})
    return float(np.float32(s.call("GET", f"/api/cell?{q}")["value"]))


def load(s, patch_path):
    return s.call("POST", "/api/load_patch", {"text": patch_path.read_text(), "name": patch_path.name})


def test_layers_toggle_off_and_on(server, model, tmp_path):
    path, t = model
    one = cli_patch(path, tmp_path, "one.json", "--set", "a[0,0]=5", "--set", "b[1,1]=7")
    two = cli_patch(path, tmp_path, "two.json", "--set", "a[2,2]=-4")
    assert load(server, one)["applied"] and load(server, two)["applied"]
    layers = server.call("GET", "/api/session")["layers"]
    assert [(l["name"], l["enabled"], l["bytes"], sorted(l["tensors"])) for l in layers] == [("one.json", True, 8, ["a", "b"]), ("two.json", True, 4, ["a"])]
    first = layers[0]["id"]
    view = server.call("POST", "/api/layer", {"id": first, "enabled": False})
    assert [l["enabled"] for l in view["layers"]] == [False, True]
    assert cell(server, "a", [0, 0]) == float(t["a"][0, 0]) and cell(server, "b", [1, 1]) == float(t["b"][1, 1])
    assert cell(server, "a", [2, 2]) == -4
    # An edit made on top of the layer's cell survives turning the layer back on.
    server.edit("b", "1,1", {"op": "set", "value": "9"})
    server.call("POST", "/api/layer", {"id": first, "enabled": True})
    assert cell(server, "a", [0, 0]) == 5 and cell(server, "b", [1, 1]) == 9
    # Toggles are steps: undo turns it off again.
    server.call("POST", "/api/undo", {})
    assert cell(server, "a", [0, 0]) == float(t["a"][0, 0])
    status, body = server.call("POST", "/api/layer", {"id": 99, "enabled": False}, ok=False)
    assert status == 404 and "no loaded patch 99" in body


def test_drop_and_keep_entries_by_element_and_by_tensor(server, model, tmp_path):
    path, t = model
    p = cli_patch(path, tmp_path, "p.json", "--set", "a[0,0]=1", "--set", "a[0,1]=2", "--set", "a[3,3]=3", "--set", "b[0,0]=4")
    load(server, p)
    server.call("POST", "/api/drop_entries", {"request": {"elements": [["a", [0, 1]]]}})
    assert cell(server, "a", [0, 1]) == float(t["a"][0, 1]) and cell(server, "a", [0, 0]) == 1
    server.call("POST", "/api/drop_entries", {"request": {"tensors": ["b"]}})
    assert cell(server, "b", [0, 0]) == float(t["b"][0, 0])
    view = server.call("POST", "/api/drop_entries", {"request": {"elements": [["a", [3, 3]]], "keep": True}})
    assert [(e["tensor"], e["index"]) for e in view["entries"]] == [("a", [3, 3])]
    status, body = server.call("POST", "/api/drop_entries", {"request": {"elements": [["a", [9, 0]]]}}, ok=False)
    assert status == 400 and "not an element of a" in body


def test_inverse_download_turns_the_baked_model_back_into_the_base(server, model, tmp_path):
    path, _ = model
    server.edit("a", "1:3", {"op": "scale", "factor": 3})
    server.edit("b", "", {"op": "add", "value": "1"})
    forward, inverse = tmp_path / "f.json", tmp_path / "i.json"
    forward.write_text(server.request("GET", "/api/patch/download")[1])
    inverse.write_text(server.request("GET", "/api/patch/download?invert=1")[1])
    baked, back = tmp_path / "baked.safetensors", tmp_path / "back.safetensors"
    run("apply", path, forward, "--out", baked)
    assert sha256(baked) != sha256(path)
    # The same inverse the CLI makes from the forward patch.
    run("invert", forward, "--out", tmp_path / "cli-inv.json")
    assert json.loads(inverse.read_text())["entries"] == json.loads((tmp_path / "cli-inv.json").read_text())["entries"]
    run("apply", baked, inverse, "--out", back)
    assert sha256(back) == sha256(path)


def test_combine_saved_patches_lists_conflicts_per_element(server, model, tmp_path):
    path, t = model
    patches = tmp_path / "patches"
    patches.mkdir(exist_ok=True)
    cli_patch(path, patches, "x.json", "--set", "a[0,0]=1", "--set", "a[5,5]=2")
    cli_patch(path, patches, "y.json", "--set", "a[0,0]=3", "--set", "b[0,0]=4")
    cli_patch(path, patches, "z.json", "--set", "b[3,3]=5")
    assert server.call("GET", "/api/saved_patches") == ["x.json", "y.json", "z.json"]
    out = server.call("POST", "/api/combine", {"first": "x.json", "second": "y.json", "save_as": "xy"})
    assert out["saved"] is None
    assert [(c["tensor"], c["index"], c["kind"], float(c["first"]), float(c["second"])) for c in out["conflicts"]] == [("a", [0, 0], "clash", 1.0, 3.0)]
    out = server.call("POST", "/api/combine", {"first": "x.json", "second": "z.json", "save_as": "xz"})
    assert out["conflicts"] == [] and out["saved"].endswith("xz.json")
    assert load(server, patches / "xz.json")["applied"]
    assert cell(server, "a", [5, 5]) == 2 and cell(server, "b", [3, 3]) == 5
    status, body = server.call("POST", "/api/combine", {"first": "../x.json", "second": "z.json", "save_as": "q"}, ok=False)
    assert status == 400 and "plain file name" in body


def test_compare_with_another_model_loads_the_difference_and_shows_deltas(server, model, tmp_path):
    path, t = model
    other = dict(t)
    other["a"] = t["a"].copy()
    other["a"][4] *= 2
    other_path = tmp_path / "other.safetensors"
    save_file(other, str(other_path))
    out = server.call("POST", "/api/compare", {"other": str(other_path)})
    rows = {r["tensor"]: r for r in out["rows"]}
    assert rows["a"]["changed"] == 6 and rows["b"]["changed"] == 0
    d = other["a"].astype(np.float64) - t["a"]
    assert rows["a"]["rel_l2"] == pytest.approx(np.linalg.norm(d) / np.linalg.norm(t["a"].astype(np.float64)), rel=1e-9)
    assert rows["a"]["max_abs_delta"] == pytest.approx(np.abs(d).max(), rel=1e-9)
    assert out["layer"] is not None
    # The session now shows OTHER.
    assert cell(server, "a", [4, 0]) == float(other["a"][4, 0])
    # Baking the session gives OTHER byte for byte.
    dl = tmp_path / "cmp.json"
    dl.write_text(server.request("GET", "/api/patch/download")[1])
    run("apply", path, dl, "--out", tmp_path / "same.safetensors")
    assert sha256(tmp_path / "same.safetensors") == sha256(other_path)
    status, body = server.call("POST", "/api/compare", {"other": str(tmp_path / "missing")}, ok=False)
    assert status == 404 and "missing" in body
    # A FIFO would block a reader forever: refused at once, as a CLI path is.
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    status, body = server.call("POST", "/api/compare", {"other": str(fifo)}, ok=False)
    assert status == 400 and "not a regular file" in body
    assert "not a regular file" in run("inspect", fifo, check=False).err
