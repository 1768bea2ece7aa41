"""Files written by Python's safetensors (the reference writer), read back by tensor-surgeon
and compared element by element, bit pattern by bit pattern, with numpy / ml_dtypes."""

import json

import ml_dtypes
import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

from helpers import assert_slice_matches, expected_hex

RNG = np.random.default_rng(1234)

FLOAT_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": ml_dtypes.bfloat16,
    "F8_E4M3": ml_dtypes.float8_e4m3fn,
    "F8_E5M2": ml_dtypes.float8_e5m2,
    "F8_E4M3FNUZ": ml_dtypes.float8_e4m3fnuz,
    "F8_E5M2FNUZ": ml_dtypes.float8_e5m2fnuz,
}
INT_DTYPES = {
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U64": np.uint64,
    "U32": np.uint32,
    "U16": np.uint16,
    "U8": np.uint8,
}


def float_values(dtype, shape):
    a = (RNG.standard_normal(shape) * 3).astype(np.float32)
    flat = a.reshape(-1)
    flat[:4] = [np.nan, np.inf, -np.inf, -0.0]
    flat[4] = 1e-6  # subnormal or zero in the small formats
    with np.errstate(over="ignore", invalid="ignore"):
        return a.astype(dtype)


def int_values(dtype, shape):
    info = np.iinfo(dtype)
    a = RNG.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    a.reshape(-1)[:2] = [info.min, info.max]
    return a


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    d = tmp_path_factory.mktemp("ref")
    tensors = {}
    for i, (name, dt) in enumerate(FLOAT_DTYPES.items()):
        tensors[f"float.{name}"] = float_values(dt, (3 + i, 5, 7))
    for name, dt in INT_DTYPES.items():
        tensors[f"int.{name}"] = int_values(dt, (4, 6))
    tensors["bool"] = RNG.integers(0, 2, size=(5, 5)).astype(np.bool_)
    tensors["complex"] = (RNG.standard_normal((3, 4)) + 1j * RNG.standard_normal((3, 4))).astype(np.complex64)
    tensors["e8m0"] = np.array([2.0**k for k in range(-10, 10)], dtype=np.float32).astype(ml_dtypes.float8_e8m0fnu)
    tensors["scalar"] = np.array(3.25, dtype=np.float32)
    tensors["empty"] = np.zeros((0, 3), dtype=np.float32)
    path = d / "ref.safetensors"
    save_file(tensors, str(path), metadata={"format": "np", "quote": 'a "b" <c>'})
    return path, tensors


def test_inspect_matches_the_reference_reader(ts, reference):
    path, tensors = reference
    got = ts("inspect", path, "--json").json()
    assert got["metadata"] == {"format": "np", "quote": 'a "b" <c>'}
    header_len = int.from_bytes(path.read_bytes()[:8], "little")
    header = json.loads(path.read_bytes()[8 : 8 + header_len])
    listed = {t["name"]: t for t in got["tensors"]}
    with safe_open(str(path), framework="np") as f:
        assert sorted(listed) == sorted(f.keys())
    for name, arr in tensors.items():
        t = listed[name]
        assert t["shape"] == list(arr.shape), name
        assert t["dtype"] == header[name]["dtype"], name
        assert t["data_offsets"] == header[name]["data_offsets"], name
        assert t["file"] == "ref.safetensors"


def test_every_tensor_matches_numpy(ts, reference):
    path, tensors = reference
    for name, arr in tensors.items():
        got = ts("slice", path, name, "--json").json()
        assert_slice_matches(got, arr, name)


@pytest.mark.parametrize(
    "spec,index",
    [
        ("1", (1,)),
        ("1:3,::2", (slice(1, 3), slice(None, None, 2))),
        ("-1,:,5:1:-1", (-1, slice(None), slice(5, 1, -1))),
        ("0:8:2", (slice(0, 8, 2),)),
        ("::-1,2,-3:", (slice(None, None, -1), 2, slice(-3, None))),
        ("2,4,6", (2, 4, 6)),
        ("5:100", (slice(5, 100),)),
    ],
)
@pytest.mark.parametrize("dtype", ["F32", "BF16", "F8_E4M3", "F16"])
def test_slices_match_numpy_indexing(ts, reference, spec, index, dtype):
    path, tensors = reference
    name = f"float.{dtype}"
    got = ts("slice", path, name, spec, "--json").json()
    assert_slice_matches(got, tensors[name][index], f"{name}[{spec}]")


def test_slice_errors_name_the_dim(ts, reference):
    path, _ = reference
    r = ts("slice", path, "float.F32", "0,9", check=False)
    assert r.code == 1
    assert r.err.strip() == "error: float.F32: index 9 out of bounds for dim 1 of size 5"
    r = ts("slice", path, "float.F32", "0,0,0,0", check=False)
    assert r.code == 1 and "4 indices but the tensor has 3 dims" in r.err
    r = ts("slice", path, "float.F33", check=False)
    assert r.code == 1 and 'no tensor named "float.F33"' in r.err


@pytest.mark.parametrize(
    "dtype,ml",
    [
        ("F8_E4M3", ml_dtypes.float8_e4m3fn),
        ("F8_E5M2", ml_dtypes.float8_e5m2),
        ("F8_E8M0", ml_dtypes.float8_e8m0fnu),
        ("F8_E4M3FNUZ", ml_dtypes.float8_e4m3fnuz),
        ("F8_E5M2FNUZ", ml_dtypes.float8_e5m2fnuz),
    ],
)
def test_every_f8_code_decodes_like_ml_dtypes(ts, tmp_path, dtype, ml):
    codes = np.arange(256, dtype=np.uint8).view(ml)
    path = tmp_path / "codes.safetensors"
    save_file({"codes": codes}, str(path))
    got = ts("slice", path, "codes", "--json").json()
    assert got["dtype"] == dtype
    assert_slice_matches(got, codes, dtype)


def write_packed(path, dtype, shape, data: bytes):
    header = json.dumps({"p": {"dtype": dtype, "shape": shape, "data_offsets": [0, len(data)]}}).encode()
    path.write_bytes(len(header).to_bytes(8, "little") + header + data)


@pytest.mark.parametrize(
    "dtype,ml,bits",
    [("F4", ml_dtypes.float4_e2m1fn, 4), ("F6_E2M3", ml_dtypes.float6_e2m3fn, 6), ("F6_E3M2", ml_dtypes.float6_e3m2fn, 6)],
)
def test_packed_codes_decode_like_ml_dtypes(ts, tmp_path, dtype, ml, bits):
    # Every code once, packed as a little-endian bit stream (F4: low nibble first).
    n = 1 << bits
    codes = list(range(n))
    stream = sum(c << (bits * i) for i, c in enumerate(codes))
    data = stream.to_bytes(n * bits // 8, "little")
    path = tmp_path / "packed.safetensors"
    write_packed(path, dtype, [n], data)
    got = ts("slice", path, "p", "--json").json()
    want = np.array(codes, dtype=np.uint8).view(ml)
    assert got["values"] == [float(v) for v in want.astype(np.float64)]
    assert got["hex"] == [f"{c:02x}" for c in codes]
