#!/usr/bin/env python3
"""Contact sheet of a RANZCR-layout data set (synthetic or real) for eyeballing.

    python3 tools/view_synth.py DATA_DIR --out /tmp/synth_sheet.png [--n 24] [--cols 6]
        [--overlay] [--tile 256] [--start 0] [--only "NGT - Abnormal"]

Each tile is one train image with its positive labels written underneath
(abbreviated: EA/EB/EN = ETT Abnormal/Borderline/Normal, NA/NB/NI/NN = NGT,
CA/CB/CN = CVC, SG = Swan-Ganz). With --overlay the annotated centrelines of
train_annotations.csv are drawn in colour on the right half of a doubled tile
(ETT red, NGT green, CVC blue, Swan-Ganz magenta; the tip is a dot), so that
the plain image and the annotation can be compared side by side.

Needs Pillow and numpy. Not used by the tests.
"""
import argparse
import ast
import csv
import os
import sys

import numpy as np
from PIL import Image, ImageDraw

LABELS = [
    "ETT - Abnormal", "ETT - Borderline", "ETT - Normal",
    "NGT - Abnormal", "NGT - Borderline", "NGT - Incompletely Imaged", "NGT - Normal",
    "CVC - Abnormal", "CVC - Borderline", "CVC - Normal",
    "Swan Ganz Catheter Present",
]
SHORT = ["EA", "EB", "EN", "NA", "NB", "NI", "NN", "CA", "CB", "CN", "SG"]
COLOURS = {"ETT": (255, 60, 60), "NGT": (60, 220, 60), "CVC": (80, 140, 255), "Swa": (240, 60, 240)}


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data_dir")
    ap.add_argument("--out", default="/tmp/synth_sheet.png")
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--cols", type=int, default=6)
    ap.add_argument("--tile", type=int, default=256, help="tile side in pixels (images are resized)")
    ap.add_argument("--start", type=int, default=0, help="first train.csv row to show")
    ap.add_argument("--only", default="", help="show only studies with this positive label")
    ap.add_argument("--overlay", action="store_true", help="add the annotated centrelines beside each image")
    args = ap.parse_args()

    train = read_rows(os.path.join(args.data_dir, "train.csv"))
    if args.only:
        if args.only not in LABELS:
            sys.exit(f"--only: unknown label {args.only!r}")
        train = [r for r in train if r[args.only] in ("1", "1.0")]
    train = train[args.start:args.start + args.n]
    if not train:
        sys.exit("no studies to show")
    ann = {}
    ann_path = os.path.join(args.data_dir, "train_annotations.csv")
    if os.path.exists(ann_path):
        for r in read_rows(ann_path):
            ann.setdefault(r["StudyInstanceUID"], []).append((r["label"], ast.literal_eval(r["data"])))

    t = args.tile
    panels = 2 if args.overlay else 1
    text_h = 14
    cols = min(args.cols, len(train))
    rows = (len(train) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * t * panels, rows * (t + text_h)), (30, 30, 30))
    draw = ImageDraw.Draw(sheet)
    for i, r in enumerate(train):
        uid = r["StudyInstanceUID"]
        img = Image.open(os.path.join(args.data_dir, "train", uid + ".jpg")).convert("L")
        w0, h0 = img.size
        img = img.resize((t, t), Image.BILINEAR).convert("RGB")
        x0, y0 = (i % cols) * t * panels, (i // cols) * (t + text_h)
        sheet.paste(img, (x0, y0))
        if args.overlay:
            sheet.paste(img, (x0 + t, y0))
            for label, pts in ann.get(uid, []):
                p = np.asarray(pts, dtype=float) * [t / w0, t / h0] + [x0 + t, y0]
                c = COLOURS.get(label[:3], (255, 255, 0))
                draw.line([tuple(q) for q in p], fill=c, width=1)
                tx, ty = p[-1]
                draw.ellipse([tx - 2, ty - 2, tx + 2, ty + 2], fill=c)
        pos = [SHORT[k] for k, name in enumerate(LABELS) if r[name] in ("1", "1.0")]
        text = " ".join(pos) + ("  [ann]" if uid in ann else "") + f"  {r['PatientID']}"
        draw.text((x0 + 2, y0 + t + 1), text, fill=(230, 230, 230))
    sheet.save(args.out)
    print(f"wrote {args.out}: {len(train)} studies")


if __name__ == "__main__":
    main()
