#!/usr/bin/env python3
"""Writes the safetensors test fixtures in tests/fixtures/safetensors/.

Run from the repository root (needs `pip install safetensors numpy`; torch is
optional, see below):

    python3 tools/make_safetensors_fixtures.py [--out tests/fixtures/safetensors]

The reference writer (the `safetensors` package) produces the valid files, and
numpy/torch, never our code, compute the expected values in expected.json:

  basic.safetensors     F32, F64, I64, U8, F16 tensors, incl. 0-d and empty
                        ones, and __metadata__ (safetensors.numpy).
  bf16.safetensors      BF16 tensors (0-d and empty too) plus one F32.
                        numpy has no bfloat16: with torch installed the file is
                        written by safetensors.torch and the values come from
                        torch; without torch the script writes the file bytes by
                        hand (same layout as the reference writer) and numpy
                        computes the values from the bits. expected.json says
                        which ("bf16_writer").
  layout.safetensors    only dtypes the engine holds natively (F32, F64, BF16,
                        I64, U8; 0-d, empty, one metadata key), for comparing
                        our writer's bytes with the reference writer's.
  f16_rounding.safetensors  "src" (F32) and "half" = numpy src.astype(float16):
                        checks our float -> half rounding against numpy's.
  unsupported_dtype.safetensors  a valid file with a BOOL tensor.
  bad_*.safetensors     malformed files, built by hand, each < 1 KB; the
                        "malformed" section of expected.json says what is wrong.

Reruns give identical files except basic/bf16.safetensors, whose two metadata
keys the reference writer emits in hash-map order (the parsed content is the
same). Total size is about 12 KB.

expected.json lists, per tensor: the file dtype, the dtype it loads as, the
shape, "values" (JSON numbers; "nan", "inf", "-inf" as strings) and, for
floating tensors, "bits": the bit pattern of each value as loaded (f32 bits for
F16/F32, bf16 bits for BF16, f64 bits for F64).
"""

import argparse
import json
import math
import os
import struct

import numpy as np
from safetensors.numpy import save_file as np_save_file

try:
    import torch
    from safetensors.torch import save_file as torch_save_file
except ImportError:  # the BF16 fixture is then written by hand
    torch = None


def jvalue(x):
    """A float or int as a JSON value; non-finite floats as strings."""
    if isinstance(x, float):
        if math.isnan(x):
            return "nan"
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
    return x


def describe_np(arr, file_dtype):
    """Expected-values entry for a numpy array stored as `file_dtype`."""
    entry = {"file_dtype": file_dtype, "shape": list(arr.shape)}
    if file_dtype in ("F16", "F32"):
        as_f32 = arr.astype(np.float32)  # exact for F16
        entry["loads_as"] = "f32"
        entry["values"] = [jvalue(float(v)) for v in as_f32.reshape(-1)]
        entry["bits"] = [int(b) for b in as_f32.reshape(-1).view(np.uint32)]
    elif file_dtype == "F64":
        entry["loads_as"] = "f64"
        entry["values"] = [jvalue(float(v)) for v in arr.reshape(-1)]
        entry["bits"] = [int(b) for b in arr.reshape(-1).view(np.uint64)]
    elif file_dtype == "I64":
        entry["loads_as"] = "i64"
        entry["values"] = [int(v) for v in arr.reshape(-1)]
    elif file_dtype == "U8":
        entry["loads_as"] = "u8"
        entry["values"] = [int(v) for v in arr.reshape(-1)]
    else:
        raise ValueError(file_dtype)
    return entry


def describe_bf16_bits(bits_u16, shape):
    """Expected entry for bf16 values given by their 16-bit patterns (numpy)."""
    as_f32 = (bits_u16.astype(np.uint32) << 16).view(np.float32)
    return {"file_dtype": "BF16", "loads_as": "bf16", "shape": list(shape),
            "values": [jvalue(float(v)) for v in as_f32.reshape(-1)],
            "bits": [int(b) for b in bits_u16.reshape(-1)]}


def write_raw(path, header, buffer=b"", header_size=None, pad=True):
    """Writes a safetensors-shaped file by hand. `header` is a dict (dumped
    compactly) or a str used verbatim; `header_size` overrides the prefix."""
    text = header if isinstance(header, str) else json.dumps(header, separators=(",", ":"))
    raw = text.encode("utf-8")
    if pad:
        raw += b" " * ((8 - len(raw) % 8) % 8)
    n = len(raw) if header_size is None else header_size
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", n) + raw + buffer)


def basic_tensors():
    f16_vals = np.array([0.0, -0.0, 1.0, -2.5, 65504.0, -65504.0, 2.0 ** -14, 2.0 ** -24,
                         (1023 / 1024) * 2.0 ** -14, np.inf, -np.inf, np.nan, 0.333251953125,
                         1000.5], dtype=np.float16)
    return {
        "f32.matrix": (np.array([[1.0, -2.0, 3.5], [1e-30, 3.4028235e38, -0.0]], dtype=np.float32), "F32"),
        "f32.scalar": (np.array(-7.25, dtype=np.float32), "F32"),
        "f32.empty": (np.zeros((0, 4), dtype=np.float32), "F32"),
        "f32.special": (np.array([np.nan, np.inf, -np.inf, 1.4e-45], dtype=np.float32), "F32"),
        "f64.vector": (np.array([1.0 / 3.0, -1e300, 5e-324], dtype=np.float64), "F64"),
        "i64.labels": (np.array([[-2 ** 63, 2 ** 63 - 1], [0, -1]], dtype=np.int64), "I64"),
        "i64.empty": (np.zeros((0,), dtype=np.int64), "I64"),
        "u8.pixels": (np.array([0, 1, 127, 128, 255], dtype=np.uint8), "U8"),
        "f16.values": (f16_vals, "F16"),
        "f16.scalar": (np.array(0.1, dtype=np.float16), "F16"),
        "f16.empty": (np.zeros((2, 0, 3), dtype=np.float16), "F16"),
    }


BF16_FLOATS = [1.0, -0.0, 3.140625, -2.0 ** -133, 3.3895313892515355e38, float("inf"),
               float("-inf"), 0.1, -1e-20, 65504.0, 123456.0, 2.0 ** -126]


def write_bf16(out_dir):
    path = os.path.join(out_dir, "bf16.safetensors")
    ref = np.array([0.5, -1.5], dtype=np.float32)
    meta = {"format": "pt", "writer": "bf16 fixture"}
    expected = {}
    if torch is not None:
        w = torch.tensor(BF16_FLOATS + [float("nan")], dtype=torch.float32).to(torch.bfloat16).reshape(13)
        tensors = {"bf16.weight": w, "bf16.scalar": torch.tensor(2.5, dtype=torch.bfloat16),
                   "bf16.empty": torch.zeros((0, 2), dtype=torch.bfloat16), "f32.ref": torch.from_numpy(ref)}
        torch_save_file(tensors, path, metadata=meta)
        for name, t in tensors.items():
            if t.dtype == torch.bfloat16:
                bits = t.contiguous().view(torch.int16).numpy().view(np.uint16)
                e = describe_bf16_bits(bits, t.shape)
                # Values as torch computes them (bf16 -> f32), not from our bits.
                e["values"] = [jvalue(float(v)) for v in t.float().reshape(-1).tolist()]
                expected[name] = e
            else:
                expected[name] = describe_np(t.numpy(), "F32")
        return expected, "safetensors.torch"
    # By hand: bf16 bits by round-to-nearest-even of the f32 bits (numpy).
    f = np.array(BF16_FLOATS + [np.nan], dtype=np.float32).view(np.uint32)
    rounded = ((f + 0x7FFF + ((f >> 16) & 1)) >> 16).astype(np.uint16)
    rounded[np.isnan(np.array(BF16_FLOATS + [np.nan], dtype=np.float32))] = 0x7FC0
    parts = {"bf16.weight": (rounded, [13]), "bf16.scalar": (np.array([0x4020], dtype=np.uint16), []),
             "bf16.empty": (np.zeros((0,), dtype=np.uint16), [0, 2])}
    header = {"__metadata__": meta}
    buffer = b""
    # Reference order: F32 (4-byte) first, then BF16 tensors by name.
    header["f32.ref"] = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
    buffer += ref.tobytes()
    for name in sorted(parts):
        bits, shape = parts[name]
        header[name] = {"dtype": "BF16", "shape": shape,
                        "data_offsets": [len(buffer), len(buffer) + bits.nbytes]}
        buffer += bits.tobytes()
        expected[name] = describe_bf16_bits(bits, shape)
    expected["f32.ref"] = describe_np(ref, "F32")
    write_raw(path, header, buffer)
    return expected, "by hand (torch not installed)"


def write_layout(out_dir):
    """Native-dtype tensors for the byte-for-byte writer comparison."""
    path = os.path.join(out_dir, "layout.safetensors")
    arrays = {
        "conv1.weight": np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2) / 8,
        "bn1.num_batches_tracked": np.array(7, dtype=np.int64),
        "fc.bias": np.array([0.25, -0.5, 1e-3], dtype=np.float64),
        "a.empty": np.zeros((0, 3), dtype=np.float32),
        "z.empty": np.zeros((0,), dtype=np.float32),
        "mask": np.array([1, 0, 255], dtype=np.uint8),
        "scalar": np.array(3.0, dtype=np.float32),
    }
    meta = {"format": "pt"}
    if torch is not None:
        tensors = {k: torch.from_numpy(v) for k, v in arrays.items()}
        tensors["half.weight"] = torch.tensor([1.0, -2.0, 0.1], dtype=torch.bfloat16)
        torch_save_file(tensors, path, metadata=meta)
        return "safetensors.torch"
    np_save_file(arrays, path, metadata=meta)
    return "safetensors.numpy (no BF16 tensor: torch not installed)"


def write_f16_rounding(out_dir):
    """F32 values and numpy's float16 rounding of them."""
    rng = np.random.default_rng(1234)
    edge = [0.0, -0.0, 1.0, 1.0 + 2.0 ** -11, 1.0 + 3 * 2.0 ** -11, 1.0 + 2.0 ** -11 + 2.0 ** -23,
            65504.0, 65519.996, 65520.0, 65536.0, -65520.0, 1e10, np.inf, -np.inf, np.nan,
            2.0 ** -14, 2.0 ** -15, 2.0 ** -24, 2.0 ** -25, 2.0 ** -25 + 2.0 ** -40, 3 * 2.0 ** -26,
            1.5 * 2.0 ** -24, 2.5 * 2.0 ** -24, (1023.5) * 2.0 ** -24, 1e-8, 1e-45, -1e-45,
            0.1, 1.0 / 3.0, 2047.0, 2049.0, 2051.0, 4097.0, 32768.0 + 16.0, 32768.0 + 48.0]
    edge = np.array(edge, dtype=np.float32)
    # Random bit patterns over the half-representable exponent range (and a
    # little beyond it on both sides), both signs.
    exps = rng.integers(127 - 27, 127 + 17, size=400).astype(np.uint32)
    mants = rng.integers(0, 1 << 23, size=400).astype(np.uint32)
    signs = rng.integers(0, 2, size=400).astype(np.uint32)
    rand = ((signs << 31) | (exps << 23) | mants).view(np.float32)
    # Exact ties between two halves (13 dropped bits = 0x1000) at random exponents.
    tie_m = (rng.integers(0, 1 << 10, size=64).astype(np.uint32) << 13) | 0x1000
    tie_e = rng.integers(127 - 14, 127 + 16, size=64).astype(np.uint32)
    ties = ((tie_e << 23) | tie_m).view(np.float32)
    src = np.concatenate([edge, rand, ties]).astype(np.float32)
    with np.errstate(over="ignore"):
        half = src.astype(np.float16)
    np_save_file({"src": src, "half": half}, os.path.join(out_dir, "f16_rounding.safetensors"))
    return len(src)


def write_malformed(out_dir):
    """Hand-built broken files; returns {file: what is wrong}."""
    def p(name):
        return os.path.join(out_dir, name)

    eight = np.arange(2, dtype=np.float32).tobytes()  # 8 bytes
    cases = {}

    with open(p("bad_too_short.safetensors"), "wb") as f:
        f.write(b"\x10\x00\x00")
    cases["bad_too_short.safetensors"] = "file shorter than the 8-byte size prefix"

    write_raw(p("bad_header_too_large.safetensors"), {}, header_size=200_000_000)
    cases["bad_header_too_large.safetensors"] = "header size 200000000 > the 100 MB cap"

    write_raw(p("bad_header_past_end.safetensors"), {"a": {"dtype": "F32", "shape": [2],
              "data_offsets": [0, 8]}}, eight, header_size=4096)
    cases["bad_header_past_end.safetensors"] = "header size 4096 larger than the file"

    write_raw(p("bad_json.safetensors"), '{"a": {"dtype": "F32", "shape": [2], ', eight)
    cases["bad_json.safetensors"] = "header is cut-off JSON"

    write_raw(p("bad_not_object.safetensors"), "[1, 2, 3]")
    cases["bad_not_object.safetensors"] = "header is a JSON array"

    hdr = {"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
           "b": {"dtype": "F32", "shape": [2], "data_offsets": [16, 24]}}
    write_raw(p("bad_truncated.safetensors"), hdr, np.arange(6, dtype=np.float32).tobytes()[:14])
    cases["bad_truncated.safetensors"] = "buffer 14 bytes, header describes 24"

    write_raw(p("bad_overlap.safetensors"), {
        "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
        "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}}, bytes(24))
    cases["bad_overlap.safetensors"] = "a [0,16) and b [8,24) overlap"

    write_raw(p("bad_hole.safetensors"), {
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [16, 24]}}, bytes(24))
    cases["bad_hole.safetensors"] = "bytes [8,16) belong to no tensor"

    write_raw(p("bad_trailing.safetensors"), {
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, bytes(16))
    cases["bad_trailing.safetensors"] = "8 unused bytes after the last tensor"

    write_raw(p("bad_byte_size.safetensors"), {
        "a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}}, bytes(16))
    cases["bad_byte_size.safetensors"] = "F32 [3] needs 12 bytes, offsets span 16"

    write_raw(p("bad_offsets_reversed.safetensors"), {
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, bytes(8))
    cases["bad_offsets_reversed.safetensors"] = "data_offsets end < begin"

    write_raw(p("bad_duplicate.safetensors"),
              '{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
              '"w":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}', bytes(16))
    cases["bad_duplicate.safetensors"] = "tensor name w twice (JSON duplicate key)"

    write_raw(p("bad_missing_dtype.safetensors"), {
        "a": {"shape": [2], "data_offsets": [0, 8]}}, eight)
    cases["bad_missing_dtype.safetensors"] = "entry without dtype"

    write_raw(p("bad_shape_negative.safetensors"), {
        "a": {"dtype": "F32", "shape": [2, -1], "data_offsets": [0, 8]}}, eight)
    cases["bad_shape_negative.safetensors"] = "shape has -1"

    write_raw(p("bad_shape_float.safetensors"), {
        "a": {"dtype": "F32", "shape": [2.0], "data_offsets": [0, 8]}}, eight)
    cases["bad_shape_float.safetensors"] = "shape has 2.0"

    write_raw(p("bad_offsets_type.safetensors"), {
        "a": {"dtype": "F32", "shape": [2], "data_offsets": "0-8"}}, eight)
    cases["bad_offsets_type.safetensors"] = "data_offsets is a string"

    write_raw(p("bad_unknown_dtype.safetensors"), {
        "a": {"dtype": "Q7", "shape": [2], "data_offsets": [0, 8]}}, eight)
    cases["bad_unknown_dtype.safetensors"] = "dtype Q7 does not exist"

    write_raw(p("bad_metadata_value.safetensors"), {
        "__metadata__": {"epoch": 3},
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, eight)
    cases["bad_metadata_value.safetensors"] = "__metadata__ value is a number"
    return cases


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join("tests", "fixtures", "safetensors"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    basic = basic_tensors()
    meta = {"format": "np", "note": "ranzcr fixture \u00fcn\u00efc\u00f6de \"quoted\""}
    np_save_file({k: v for k, (v, _) in basic.items()}, os.path.join(args.out, "basic.safetensors"),
                 metadata=meta)
    expected = {"basic.safetensors": {"metadata": meta,
                                      "tensors": {k: describe_np(v, d) for k, (v, d) in basic.items()}}}

    bf16_expected, bf16_writer = write_bf16(args.out)
    expected["bf16.safetensors"] = {"metadata": {"format": "pt", "writer": "bf16 fixture"},
                                    "tensors": bf16_expected}
    expected["bf16_writer"] = bf16_writer
    expected["layout_writer"] = write_layout(args.out)
    expected["f16_rounding_count"] = write_f16_rounding(args.out)

    np_save_file({"flags": np.array([True, False]), "x": np.ones(2, dtype=np.float32)},
                 os.path.join(args.out, "unsupported_dtype.safetensors"))
    expected["malformed"] = write_malformed(args.out)

    with open(os.path.join(args.out, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, ensure_ascii=False)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(args.out, n)) for n in os.listdir(args.out))
    print(f"wrote {len(os.listdir(args.out))} files, {total} bytes, to {args.out} "
          f"(bf16: {bf16_writer}; layout: {expected['layout_writer']})")


if __name__ == "__main__":
    main()
