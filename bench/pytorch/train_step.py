#!/usr/bin/env python3
"""One training step of a timm model in PyTorch, the side-by-side reference for
build/train_step_bench (the same step through our engine).

The step, per mode:
    model  timm.create_model(MODEL, pretrained=False, num_classes=11) on cuda:0,
           channels_last, train mode; fp32 parameters (master weights)
    input  x [B, 3, S, S] ~ N(0, 1), channels_last; targets [B, 11] of 0/1 (fp32)
    fwd    under torch.autocast('cuda', bfloat16) for --precision bf16
    loss   torch.nn.BCEWithLogitsLoss() (autocast runs it in fp32)
    bwd    loss.backward()
    optim  --optim sgd:   torch.optim.SGD(lr=0.01, momentum=0.9, weight_decay=1e-4)
           --optim adamw: torch.optim.AdamW(lr=1e-3, weight_decay=0.01)
           (PyTorch's default implementation on CUDA: foreach)
    then   optimizer.zero_grad(set_to_none=True)

Modes: eager, and torch.compile(model) in its default mode (only the model is
compiled). Each mode builds a fresh model and optimizer, runs --warmup steps
(for compile these include compilation; their wall time is reported
separately as warmup_s / warmup_ms), then --steps timed steps, each between two
torch.cuda.synchronize() calls and bracketed by CUDA events; the median is
reported. Peak memory is torch.cuda.max_memory_allocated() over the timed
steps (reset after warm-up). torch.backends.cudnn.benchmark is on (as timm's
train.py sets it); TF32 is off unless --tf32, like train_step_bench.

Output: one JSON object (to stdout, or to --json FILE, rewritten after each
mode so a run cut short keeps the finished modes); progress goes to stderr.
A mode that fails (out of memory, no compiler) records {"error": ...} and the
script goes on. Without torch, timm or a CUDA device it prints one line and
exits 0 (with --json, the file gets {"skipped": reason}).

    python3 bench/pytorch/train_step.py --json torch.json
    build/train_step_bench --pytorch-json torch.json
"""

import argparse
import gc
import json
import math
import os
import statistics
import sys
import time


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="seresnet152d")
    p.add_argument("--img-size", type=int, default=512)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--num-classes", type=int, default=11)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--optim", choices=["sgd", "adamw"], default="sgd")
    p.add_argument("--modes", default="eager,compile",
                   help="comma-separated subset of eager,compile (default: both)")
    p.add_argument("--tf32", action="store_true", help="allow TF32 in fp32 convolutions and matmuls")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default="", help="write the JSON object here instead of stdout")
    args = p.parse_args()
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for m in args.modes:
        if m not in ("eager", "compile"):
            p.error(f"unknown mode {m!r} (eager, compile)")
    if args.batch < 1 or args.img_size < 32 or args.steps < 1 or args.warmup < 0:
        p.error("need --batch >= 1, --img-size >= 32, --steps >= 1, --warmup >= 0")
    return args


def log(msg):
    print(f"train_step.py: {msg}", file=sys.stderr, flush=True)


def finite(v):
    """The JSON-safe value: NaN and infinities become null (strict parsers reject NaN)."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: finite(x) for k, x in v.items()}
    if isinstance(v, list):
        return [finite(x) for x in v]
    return v


def emit(result, path):
    text = json.dumps(finite(result), indent=2, allow_nan=False)
    if path:
        with open(path + ".tmp", "w") as f:
            f.write(text + "\n")
        os.replace(path + ".tmp", path)
    return text


def config(args):
    return {
        "engine": "pytorch",
        "model": args.model,
        "img_size": args.img_size,
        "batch": args.batch,
        "num_classes": args.num_classes,
        "precision": args.precision,
        "optim": args.optim,
        "steps": args.steps,
        "warmup": args.warmup,
        "tf32": args.tf32,
        "channels_last": True,
        "cudnn_benchmark": True,
    }


def skip(args, reason):
    print(f"train_step.py: skipped: {reason}")
    if args.json:
        result = config(args)
        result["skipped"] = reason
        emit(result, args.json)
    sys.exit(0)


def run_mode(mode, args, torch, timm):
    dev = torch.device("cuda", 0)
    torch.manual_seed(args.seed)
    model = timm.create_model(args.model, pretrained=False, num_classes=args.num_classes)
    model = model.to(dev).to(memory_format=torch.channels_last).train()
    if args.optim == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    fwd = torch.compile(model) if mode == "compile" else model
    criterion = torch.nn.BCEWithLogitsLoss()
    x = torch.randn(args.batch, 3, args.img_size, args.img_size, device=dev)
    x = x.contiguous(memory_format=torch.channels_last)
    idx = torch.arange(args.batch * args.num_classes, device=dev)
    targets = ((idx * 7919) % 5 == 0).float().reshape(args.batch, args.num_classes)
    bf16 = args.precision == "bf16"

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            logits = fwd(x)
            loss = criterion(logits, targets)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    warm_ms = []
    for i in range(args.warmup):
        t0 = time.perf_counter()
        step()
        torch.cuda.synchronize()
        warm_ms.append((time.perf_counter() - t0) * 1e3)
        log(f"{mode}: warm-up step {i + 1}: {warm_ms[-1]:.1f} ms")

    torch.cuda.reset_peak_memory_stats(dev)
    start = torch.cuda.Event(enable_timing=True)
    stop = torch.cuda.Event(enable_timing=True)
    ms, wall = [], []
    loss = None
    for _ in range(args.steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        start.record()
        loss = step()
        stop.record()
        torch.cuda.synchronize()
        wall.append((time.perf_counter() - t0) * 1e3)
        ms.append(start.elapsed_time(stop))
    peak = torch.cuda.max_memory_allocated(dev)
    final_loss = float(loss.item()) if loss is not None else math.nan
    med = statistics.median(ms)
    out = {
        "images_per_s": args.batch / (med * 1e-3),
        "ms_per_step": med,
        "ms_per_step_min": min(ms),
        "ms_per_step_max": max(ms),
        "host_wall_ms_per_step": statistics.median(wall),
        "peak_mem_bytes": peak,
        "warmup_ms": warm_ms,
        "warmup_s": sum(warm_ms) / 1e3,
        "final_loss": final_loss,
    }
    log(f"{mode}: median {med:.2f} ms/step, {out['images_per_s']:.2f} images/s, "
        f"peak {peak / 2**30:.2f} GiB, warm-up {out['warmup_s']:.1f} s")
    del fwd, model, opt, x, targets, loss
    return out


def main():
    args = parse_args()
    try:
        import torch
    except Exception as e:  # ImportError, or a broken install
        skip(args, f"torch is not importable ({type(e).__name__}: {e})")
    try:
        import timm
    except Exception as e:
        skip(args, f"timm is not importable ({type(e).__name__}: {e})")
    if not torch.cuda.is_available():
        skip(args, "no CUDA device visible to torch")

    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = args.tf32
    torch.backends.cuda.matmul.allow_tf32 = args.tf32

    result = config(args)
    result["device"] = torch.cuda.get_device_name(0)
    result["torch_version"] = torch.__version__
    result["timm_version"] = timm.__version__
    result["cuda_version"] = torch.version.cuda
    result["modes"] = {}
    for mode in args.modes:
        log(f"{mode}: {args.model} {args.img_size}x{args.img_size}, batch {args.batch}, "
            f"{args.precision}, {args.optim}")
        try:
            result["modes"][mode] = run_mode(mode, args, torch, timm)
        except Exception as e:  # OOM, compiler missing: record and go on
            msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            log(f"{mode}: failed: {msg}")
            result["modes"][mode] = {"error": msg}
        gc.collect()
        torch.cuda.empty_cache()
        emit(result, args.json)
    text = emit(result, args.json)
    if not args.json:
        print(text)
    for mode, r in result["modes"].items():
        if "images_per_s" in r:
            print(f"pytorch {mode}: images/s={r['images_per_s']:.2f} ms/step={r['ms_per_step']:.2f} "
                  f"peak_mem_gib={r['peak_mem_bytes'] / 2**30:.2f} warmup_s={r['warmup_s']:.1f}",
                  file=sys.stderr if not args.json else sys.stdout)
        else:
            print(f"pytorch {mode}: {r.get('error', 'no result')}",
                  file=sys.stderr if not args.json else sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
