#!/usr/bin/env python3
"""Write a timm model's pretrained weights as a safetensors file ranzcr loads.

    python3 tools/export_timm.py seresnet152d weights/seresnet152d_imagenet.safetensors
    python3 tools/export_timm.py resnet200d.ra2_in1k weights/resnet200d_imagenet.safetensors
    python3 tools/export_timm.py seresnet152d out.safetensors --file model.safetensors

timm builds the model and loads its published weights (from the Hugging Face
hub, or with --file from a local model.safetensors / pytorch_model.bin / .pth
as timm reads it); the state dict is written as is: timm's names, OIHW convs,
fp32, the ImageNet head. ranzcr's `model.pretrained` adapts it at load time
exactly as timm's create_model(..., in_chans=..., num_classes=...) does: the
first conv summed over RGB for in_chans 1, a new head for 11 classes.

timm's own model.safetensors files (https://huggingface.co/timm/<name>.<tag>)
already have this layout; ranzcr loads them directly. This script is for
weights in other formats, for a pinned copy with provenance in its metadata,
and for checking that a name is one ranzcr builds.

Needs: pip install torch timm safetensors
"""
import argparse
import json
import os
import sys

# The architectures ranzcr builds (models/seresnet.cpp, resnet_names()).
RANZCR_MODELS = {"seresnet18", "seresnet34", "seresnet50", "seresnet101", "seresnet152",
                 "seresnet152d", "seresnet200d", "resnet26d", "resnet50d", "resnet152d",
                 "resnet200d"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="timm model name, optionally with a tag: seresnet152d, seresnet152d.ra2_in1k")
    ap.add_argument("out", help="safetensors file to write")
    ap.add_argument("--file", help="load the pretrained weights from this local file instead of the hub")
    ap.add_argument("--model-args", default="{}",
                    help="extra create_model arguments as JSON (e.g. narrower widths for tests)")
    args = ap.parse_args()

    import timm
    import torch
    from safetensors.torch import save_file

    arch = args.model.split(".")[0]
    if arch not in RANZCR_MODELS:
        sys.exit(f"export_timm.py: ranzcr does not build '{arch}'; it builds {', '.join(sorted(RANZCR_MODELS))}")
    kwargs = json.loads(args.model_args)
    if args.file:
        kwargs["pretrained_cfg_overlay"] = dict(file=os.path.abspath(args.file))
    model = timm.create_model(args.model, pretrained=True, **kwargs)
    cfg = model.pretrained_cfg
    state = {}
    for name, t in model.state_dict().items():
        t = t.detach().cpu()
        if t.is_floating_point():
            t = t.float()
        state[name] = t.contiguous()
    meta = {
        "source": args.file or cfg.get("hf_hub_id") or cfg.get("url") or args.model,
        "timm_model": args.model,
        "timm_tag": str(cfg.get("tag", "")),
        "timm": timm.__version__,
        "torch": torch.__version__,
        "in_chans": "3",
        "num_classes": str(cfg.get("num_classes", "")),
        "mean": json.dumps(list(cfg.get("mean", ()))),
        "std": json.dumps(list(cfg.get("std", ()))),
        "generator": "tools/export_timm.py",
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    save_file(state, tmp, metadata=meta)
    os.replace(tmp, args.out)
    params = sum(p.numel() for p in model.parameters())
    print(f"{args.out}: {args.model} ({meta['source']}), {params / 1e6:.2f}M parameters, "
          f"{len(state)} tensors, {os.path.getsize(args.out) / 2**20:.1f} MiB")
    print(f"use it with:  ranzcr train --config ... --set model.name={arch} "
          f"--set model.pretrained={args.out}")


if __name__ == "__main__":
    main()
