"""16 readers and one editor against the real server at once, on a model with a 64 MiB tensor:
no request fails, and the session ends as exactly the edits that were not undone."""

import urllib.parse

from load import BIG, run_load, write_model
from server import Server


def test_readers_and_an_editor_at_once(tmp_path):
    model = tmp_path / "model.safetensors"
    write_model(model)
    s = Server(model).start()
    try:
        lat, errors, applied = run_load(s, seconds=4)
        assert errors == []
        assert len(lat["cell"]) > 100 and len(lat["edit"]) > 5
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
    finally:
        s.stop()
