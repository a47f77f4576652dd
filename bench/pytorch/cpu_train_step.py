#!/usr/bin/env python3
"""The CPU step side by side: ranzcr's build/model_bench against PyTorch + timm,
same model, size, batch and thread count, in alternated runs.

The step (--mode train): forward in train mode, BCE-with-logits on 11 labels,
backward, SGD (lr 0.01, momentum 0.9, weight decay 1e-4), zero_grad; fp32.
--mode eval: the eval-mode forward under torch.no_grad() / rz::NoGradGuard.

PyTorch: timm.create_model(MODEL, num_classes=11), channels_last model and
input (oneDNN's preferred layout on the CPU; --no-channels-last for NCHW),
torch.set_num_threads(--threads). ranzcr: build/model_bench --threads
--optim sgd | --eval (NHWC always; --fused adds model.fused_se, fused_bn and
fused_conv_bn: on the CPU, eval BN and ReLU in the convolution's GEMM epilogue).

Each round runs PyTorch for --reps timed steps (after one warm-up step) in
this process, then model_bench in a subprocess for the same; --rounds rounds
alternate the two so that a slower machine phase hits both. Reported: each
round's medians, the median over all steps of each engine, and the ratio
PyTorch ms / ranzcr ms (above 1: ranzcr is faster).

    python3 bench/pytorch/cpu_train_step.py --model seresnet152d --img-size 256 --batch 2
    python3 bench/pytorch/cpu_train_step.py --model seresnet50 --img-size 128 --batch 4 --mode eval
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="seresnet152d")
    p.add_argument("--img-size", type=int, default=256)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--mode", choices=["train", "eval"], default="train")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--fused", action="store_true", help="ranzcr with model.fused_se, fused_bn and fused_conv_bn")
    p.add_argument("--no-channels-last", action="store_true")
    p.add_argument("--model-bench", default=os.path.join(os.path.dirname(__file__), "..", "..", "build",
                                                          "model_bench"))
    p.add_argument("--json", help="write the result here too")
    return p.parse_args()


def torch_steps(args, model, opt, x, y, n):
    import torch
    loss_fn = torch.nn.BCEWithLogitsLoss()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        if args.mode == "eval":
            with torch.no_grad():
                model(x)
        else:
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def ranzcr_steps(args):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.json")
        cmd = [args.model_bench, "--model", args.model, "--img-size", str(args.img_size), "--batch",
               str(args.batch), "--reps", str(args.reps), "--threads", str(args.threads), "--json", path]
        cmd += ["--eval"] if args.mode == "eval" else ["--optim", "sgd"]
        if args.fused:
            cmd.append("--fused")
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
        with open(path) as f:
            return json.load(f)["ms"]


def main():
    args = parse_args()
    import timm
    import torch
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.model == "seresnet_tiny":  # ranzcr's test/demo model, built from timm's ResNet
        import timm.models.resnet as R
        model = R.ResNet(block=R.Bottleneck, layers=[1, 1, 1, 1], channels=(8, 16, 32, 64), stem_type="deep",
                         stem_width=8, avg_down=True, block_args=dict(attn_layer="se"), num_classes=11)
    else:
        model = timm.create_model(args.model, pretrained=False, num_classes=11)
    x = torch.randn(args.batch, 3, args.img_size, args.img_size)
    y = (torch.rand(args.batch, 11) < 0.5).float()
    if not args.no_channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    model.train(args.mode == "train")
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    torch_steps(args, model, opt, x, y, 1)  # warm-up
    rounds, all_t, all_r = [], [], []
    for r in range(args.rounds):
        t = torch_steps(args, model, opt, x, y, args.reps)
        z = ranzcr_steps(args)
        all_t += t
        all_r += z
        rounds.append({"pytorch_ms": statistics.median(t), "ranzcr_ms": statistics.median(z)})
        print(f"round {r + 1}: PyTorch {statistics.median(t):9.1f} ms   ranzcr {statistics.median(z):9.1f} ms   "
              f"ratio {statistics.median(t) / statistics.median(z):.3f}", file=sys.stderr, flush=True)
    pt, rz = statistics.median(all_t), statistics.median(all_r)
    result = {
        "bench": "cpu_train_step", "model": args.model, "img_size": args.img_size, "batch": args.batch,
        "threads": args.threads, "mode": args.mode, "fused": args.fused,
        "channels_last": not args.no_channels_last, "torch": torch.__version__, "timm": timm.__version__,
        "reps": args.reps, "rounds": rounds, "pytorch_ms": pt, "ranzcr_ms": rz, "ratio": pt / rz,
    }
    what = "eval forward" if args.mode == "eval" else "forward + BCE + backward + SGD"
    print(f"{args.model} {args.img_size}px batch {args.batch}, {args.threads} threads, {what}"
          f"{' (ranzcr fused)' if args.fused else ''}: PyTorch {pt:.1f} ms, ranzcr {rz:.1f} ms, "
          f"ratio {pt / rz:.3f} (PyTorch ms / ranzcr ms; above 1: ranzcr faster)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
