"""16 readers and one editor against the real server at once, on a model with a 64 MiB tensor:
no request fails, and the session ends as exactly the edits that were not undone."""

import urllib.parse

import numpy as np

from load import BIG, run_load, view_request, write_model
from server import Server


def test_readers_and_an_editor_at_once(tmp_path):
    model = tmp_path / "model.safetensors"
    write_model(model)
    s = Server(model).start()
    try:
        lat, errors, applied = run_load(s, seconds=4)
        assert errors == []
        assert len(lat["cell"]) > 100 and len(lat["view"]) > 10 and len(lat["edit"]) > 5
        # The session is the edits not undone: as many steps, and each cell holds the last value
        # written to it by a surviving edit.
        session = s.call("GET", "/api/session")
        assert len(session["steps"]) == len(applied)
        last = {}
        for row, col, value in applied:
            last[(row, col)] = value
        for (row, col), value in list(last.items())[:50]:
            q = urllib.parse.urlencode({"tensor": BIG, "index": f"{row},{col}"})
            assert float(s.call("GET", f"/api/cell?{q}")["value"]) == value
        # A view around an edited cell shows it too (views read the same edited state).
        (row, col), value = next(iter(last.items()))
        y0, x0 = min(row, 4096 - 8), min(col, 4096 - 8)
        v = s.call("POST", "/api/view_json", view_request(BIG, y0, x0, 8))
        assert (v["rows"], v["cols"], v["block"]) == (8, 8, [1, 1])
        cells = np.frombuffer(bytes(v["bytes"]), dtype="<f4").reshape(8, 8)
        assert cells[row - y0, col - x0] == value
    finally:
        s.stop()
