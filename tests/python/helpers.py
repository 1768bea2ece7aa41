"""Comparing tensor-surgeon's JSON output with numpy, bit for bit."""

import hashlib
import math

import numpy as np


def expected_values(arr: np.ndarray):
    """What `slice --json` should print for each element of `arr` (flat, C order)."""
    out = []
    for v in arr.reshape(-1):
        if arr.dtype == np.bool_:
            out.append(bool(v))
        elif arr.dtype.kind in "iu":
            out.append(int(v))
        elif arr.dtype.kind == "c":
            out.append([encode_float(float(v.real)), encode_float(float(v.imag))])
        else:
            out.append(encode_float(float(v)))
    return out


def encode_float(f: float):
    if math.isnan(f):
        return "nan"
    if math.isinf(f):
        return "inf" if f > 0 else "-inf"
    return f


def expected_hex(arr: np.ndarray):
    flat = np.ascontiguousarray(arr).reshape(-1)
    size = flat.dtype.itemsize
    raw = flat.tobytes()
    return [raw[i : i + size].hex() for i in range(0, len(raw), size)]


def assert_slice_matches(got: dict, arr: np.ndarray, label=""):
    assert got["shape"] == list(arr.shape), label
    assert got["hex"] == expected_hex(arr), label
    assert got["values"] == expected_values(arr), label


def sha256(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def read_raw(path):
    """Reads a safetensors file with nothing but the spec: {name: (dtype, shape, bytes)}."""
    import json

    data = open(path, "rb").read()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    header.pop("__metadata__", None)
    base = 8 + n
    return {k: (v["dtype"], v["shape"], data[base + v["data_offsets"][0] : base + v["data_offsets"][1]]) for k, v in header.items()}
