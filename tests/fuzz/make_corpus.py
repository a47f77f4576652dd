#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets: tests/fuzz/corpus/<target>/.

A handful of small valid and near-valid inputs per target (each a few KB at
most), so that fuzzing starts from the formats' real structure. Standard
library only; run from anywhere: python3 tests/fuzz/make_corpus.py. It
rewrites the folders it owns and leaves nothing else; the image seeds also
copy a few of tests/fixtures/image.

Inputs that once made a target fail live in tests/fuzz/regressions/<target>/
(scripts/fuzz.sh replays them every run); this script does not touch them.
"""
import json
import shutil
import struct
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CORPUS = HERE / "corpus"

LABELS = [
    "ETT - Abnormal", "ETT - Borderline", "ETT - Normal", "NGT - Abnormal",
    "NGT - Borderline", "NGT - Incompletely Imaged", "NGT - Normal", "CVC - Abnormal",
    "CVC - Borderline", "CVC - Normal", "Swan Ganz Catheter Present",
]
TRAIN_HEADER = ",".join(["StudyInstanceUID", *LABELS, "PatientID"])
SUB_HEADER = ",".join(["StudyInstanceUID", *LABELS])


def write(target, name, data):
    if isinstance(data, str):
        data = data.encode()
    assert len(data) <= 8192, (target, name, len(data))
    (CORPUS / target / name).write_bytes(data)


def labels(*ones):
    return ",".join("1" if i in ones else "0" for i in range(11))


def csv_seeds():
    t = "csv"
    write(t, "simple.csv", "a,b\n1,2\n3,4\n")
    write(t, "quoted.csv", 'name,note\n"x, y","say ""hi"""\n"multi\nline",\n')
    write(t, "crlf_bom.csv", "\ufeffa,b,c\r\n1,,3\r\n\r\n4,5,6")
    write(t, "lone_cr.csv", "a\rb\r\r c \r")
    write(t, "one_column.csv", "only\n\"\"\nx\n")
    write(t, "unterminated.csv", 'a,b\n"open,2\n')
    write(t, "quote_inside.csv", 'a,b\nx"y,2\n')
    write(t, "after_quote.csv", 'a,b\n"x"y,2\n')
    write(t, "ragged.csv", "a,b\n1,2,3\n")


def ranzcr_seeds():
    # The first byte picks the reader: '0' train, '1' annotations, '2' points,
    # '3' sample submission (fuzz_ranzcr_csv.cpp).
    t = "ranzcr_csv"
    train = (TRAIN_HEADER + "\n" + f"1.2.3,{labels(2, 6, 9)},p1\n"
             + f"1.2.4,{labels(9)},p1\n" + f"a-b_c,{labels(0, 10)},p2\n")
    write(t, "train.csv", "0" + train)
    write(t, "train_fold.csv", "0" + TRAIN_HEADER + ",fold,extra\n"
          + f"1.2.3,{labels(1)},p1,0,x\n" + f"1.2.9,{labels().replace('0', '0.0')},p2,4,\n")
    write(t, "train_bad_label.csv", "0" + TRAIN_HEADER + "\n" + f"1.2.3,{labels()[:-1]}2,p1\n")
    write(t, "train_duplicate.csv", "0" + TRAIN_HEADER + "\n" + f"1.2.3,{labels()},p1\n"
          + f"1.2.3,{labels()},p2\n")
    write(t, "train_bad_uid.csv", "0" + TRAIN_HEADER + "\n" + f"../x,{labels()},p1\n")
    ann = ("StudyInstanceUID,label,data\n"
           '1.2.3,CVC - Normal,"[[1487, 1279], [1477.5, -3]]"\n'
           '1.2.3,ETT - Normal,"[[10, 20], [30, 40], [50, 60]]"\n'
           'a-b_c,Swan Ganz Catheter Present,"[[0,0]]"\n')
    write(t, "annotations.csv", "1" + ann)
    write(t, "annotations_unknown.csv", "1StudyInstanceUID,label,data\n"
          '9.9.9,CVC - Normal,"[[1, 2]]"\n1.2.4,CVC - Weird,"[[1, 2]]"\n')
    write(t, "annotations_empty.csv", '1StudyInstanceUID,label,data\n1.2.4,NGT - Normal,"[]"\n')
    write(t, "points.txt", "2[[1487, 1279], [1477.5, -3.25e1], [0, 1e3]]")
    write(t, "points_bad.txt", "2[[1, 2, 3], [nan, inf]]")
    write(t, "points_huge.txt", "2[[1e39, 0], [-0, 5]]")
    write(t, "sample_submission.csv", "3" + SUB_HEADER + "\n1.2.3," + labels() + "\n4.5.6,"
          + labels(3) + "\n")
    write(t, "sample_submission_dup.csv", "3" + SUB_HEADER + "\n1.2.3," + labels() + "\n1.2.3,"
          + labels() + "\n")


def safetensors(header, data=b"", pad=True):
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + data


def safetensors_seeds():
    t = "safetensors"
    f32 = struct.pack("<4f", 1.0, -2.0, 0.5, 3.25)
    write(t, "empty.safetensors", safetensors({}))
    write(t, "f32.safetensors", safetensors(
        {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}, f32))
    write(t, "mixed.safetensors", safetensors({
        "__metadata__": {"format": "pt", "note": "seed"},
        "a.i64": {"dtype": "I64", "shape": [1], "data_offsets": [0, 8]},
        "b.f16": {"dtype": "F16", "shape": [3], "data_offsets": [8, 14]},
        "c.bf16": {"dtype": "BF16", "shape": [1], "data_offsets": [14, 16]},
        "d.u8": {"dtype": "U8", "shape": [], "data_offsets": [16, 17]},
        "e.f64": {"dtype": "F64", "shape": [0, 5], "data_offsets": [17, 17]},
    }, struct.pack("<q", -7) + struct.pack("<3e", 1.0, 65504.0, -0.0) + b"\x80\x3f" + b"\x07"))
    write(t, "bool.safetensors", safetensors(
        {"m": {"dtype": "BOOL", "shape": [2], "data_offsets": [0, 2]}}, b"\x00\x01"))
    write(t, "f4.safetensors", safetensors(
        {"q": {"dtype": "F4", "shape": [3], "data_offsets": [0, 2]}}, b"\x12\x34"))
    write(t, "truncated.safetensors", safetensors(
        {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}, f32[:10]))
    write(t, "hole.safetensors", safetensors(
        {"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, f32[:8]))
    write(t, "overlap.safetensors", safetensors({
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, f32[:12]))
    write(t, "bad_size.safetensors", b"\xff\xff\xff\xff\xff\xff\xff\x7f{}")
    write(t, "unpadded.safetensors", safetensors(
        {"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, f32[:4], pad=False))


def state(**overrides):
    s = {"batch_in_epoch": 3, "best_epoch": 1, "best_metric": 0.75,
         "config_toml": "[train]\nepochs = 2\nlr = 0.001\n", "epoch": 2,
         "rng": {"loader": ["1", "2", "3", "18446744073709551615"],
                 "model": ["42", "0", "7", "9"]},
         "step": 40}
    s.update(overrides)
    return json.dumps(s, separators=(",", ":"))


def checkpoint_seeds():
    t = "checkpoint_state"
    write(t, "state.json", state())
    write(t, "fresh.json", state(epoch=0, step=0, batch_in_epoch=0, best_metric=None,
                                 best_epoch=-1, rng={}, config_toml=""))
    write(t, "missing_key.json", '{"epoch":1,"step":2}')
    write(t, "wrong_type.json", state(epoch="two"))
    write(t, "short_rng.json", state(rng={"loader": ["1", "2", "3"]}))
    write(t, "not_json.json", "{epoch: 1")


def cache_index(**overrides):
    # Matches the shards fuzz_cache_index.cpp writes (S = 4, 16 bytes an image).
    j = {"format": "rz-image-cache", "version": 1, "split": "train", "image_size": 4,
         "channels": 1, "resize": "area",
         "clahe": {"enabled": True, "clip_limit": 2.0, "tiles_x": 8, "tiles_y": 8},
         "shard_images": 2,
         "source": {"data_dir": "d", "csv": "d/train.csv", "image_dir": "d/train"},
         "rows": 4, "fingerprint": "0123456789abcdef",
         "shards": [{"file": "train-00000.u8", "images": 2, "bytes": 32},
                    {"file": "train-00001.u8", "images": 1, "bytes": 16}],
         "images": [{"uid": "1.2.3", "row": 0, "shard": 0, "offset": 0, "orig_h": 100,
                     "orig_w": 80},
                    {"uid": "1.2.4", "row": 1, "shard": 0, "offset": 16, "orig_h": 50,
                     "orig_w": 60},
                    {"uid": "1.2.5", "row": 2, "shard": 1, "offset": 0, "orig_h": 10,
                     "orig_w": 10}],
         "skipped": [{"uid": "1.2.6", "row": 3, "reason": "not found: d/train/1.2.6.jpg"}]}
    j.update(overrides)
    return json.dumps(j, indent=1)


def cache_seeds():
    t = "cache_index"
    write(t, "index.json", cache_index())
    write(t, "empty_shard.json", cache_index(
        rows=1, shards=[{"file": "train-00002.u8", "images": 0, "bytes": 0}], images=[],
        skipped=[{"uid": "x", "row": 0, "reason": "corrupt"}]))
    write(t, "outside.json", cache_index(
        shards=[{"file": "../outside.u8", "images": 2, "bytes": 32},
                {"file": "train-00001.u8", "images": 1, "bytes": 16}]))
    write(t, "bad_offset.json", cache_index(images=[
        {"uid": "1.2.3", "row": 0, "shard": 0, "offset": 7, "orig_h": 1, "orig_w": 1}]))
    write(t, "huge_size.json", cache_index(image_size=3037000500))
    write(t, "version2.json", cache_index(version=2))
    write(t, "not_object.json", "[1, 2, 3]")


def png_chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def png(width, height, bit_depth, color_type, rows, palette=None):
    raw = b"".join(b"\x00" + r for r in rows)  # filter type 0 on every row
    out = b"\x89PNG\r\n\x1a\n"
    out += png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0))
    if palette:
        out += png_chunk(b"PLTE", palette)
    out += png_chunk(b"IDAT", zlib.compress(raw, 9))
    return out + png_chunk(b"IEND", b"")


def image_seeds():
    t = "image"
    fixtures = ROOT / "tests" / "fixtures" / "image"
    for name in ["gray16_7x9.png", "rgba_5x4.png", "gray_37x53.area_15x20.png",
                 "rgb_31x29.q90.jpg", "xray_48x70.q85.jpg"]:
        shutil.copyfile(fixtures / name, CORPUS / t / name)
    write(t, "gray1bit_9x3.png", png(9, 3, 1, 0, [b"\xaa\x80", b"\x55\x00", b"\xff\x80"]))
    write(t, "palette_3x2.png", png(3, 2, 8, 3, [b"\x00\x01\x02", b"\x02\x01\x00"],
                                    palette=b"\xff\x00\x00\x00\xff\x00\x00\x00\xff"))
    write(t, "rgb16_2x2.png", png(2, 2, 16, 2, [bytes(range(12)), bytes(range(12, 24))]))
    write(t, "gray_alpha_2x1.png", png(2, 1, 8, 4, [b"\x10\xff\x20\x80"]))
    write(t, "huge_header.png", png(60000, 60000, 8, 0, [b"\x00" * 4]))
    jpg = (fixtures / "rgb_31x29.q90.jpg").read_bytes()
    write(t, "truncated.jpg", jpg[: len(jpg) // 3])


def main():
    seeders = {"csv": csv_seeds, "ranzcr_csv": ranzcr_seeds, "safetensors": safetensors_seeds,
               "checkpoint_state": checkpoint_seeds, "cache_index": cache_seeds,
               "image": image_seeds}
    for target, seed in seeders.items():
        d = CORPUS / target
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        seed()
        print(f"{d.relative_to(ROOT)}: {len(list(d.iterdir()))} seeds")


if __name__ == "__main__":
    main()
