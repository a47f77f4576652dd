#!/usr/bin/env python3
"""Parity fixtures for the ResNet / SE-ResNet family, produced by timm.

For each configuration below this builds timm's ResNet with random weights
(every parameter and BN statistic randomized, so no residual branch is
trivially zero; the last BN of each branch gets small gammas, which keeps the
deep narrow nets well conditioned: torch's own fp32 stays within 1e-4 of its
fp64 on logits and 1e-3 on gradients), runs ONE training-mode forward on a fixed input, a BCE loss
on fixed targets and a backward, and writes tests/fixtures/timm/<name>.safetensors:

  <timm parameter / buffer names>   the weights before the forward (OIHW convs)
  input                             [N, C, H, W]
  targets                           [N, num_classes]
  features                          forward_features output [N, C, h, w]
  logits                            [N, num_classes]
  loss                              [] BCE-with-logits (mean)
  grad.<param name>                 d loss / d param, every parameter
  after.<bn>.running_mean / _var    BN running statistics after the forward

and the configuration as JSON in __metadata__["config"].

Run:  pip install torch timm safetensors && python3 tools/make_timm_fixtures.py
"""
import json
import os

import torch
import timm.models.resnet as R
from safetensors.torch import save_file

OUT = os.environ.get("RZ_FIXTURE_OUT", os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "timm"))

CONFIGS = [
    # name, block, layers, channels, stem_type, stem_width, avg_down, se, in_chans, classes, size, batch
    dict(name="seresnet_tiny", bottleneck=True, layers=[1, 1, 1, 1], channels=[8, 16, 32, 64],
         deep_stem=True, stem_width=8, avg_down=True, se=True, in_chans=3, num_classes=11,
         size=48, batch=2),
    dict(name="seresnet_tiny_basic", bottleneck=False, layers=[1, 1, 1, 1],
         channels=[8, 16, 32, 64], deep_stem=True, stem_width=8, avg_down=True, se=True,
         in_chans=1, num_classes=5, size=37, batch=3),
    # seresnet18 structure (plain 7x7 stem, 1x1/2 shortcut convs) at reduced widths
    dict(name="seresnet18_narrow", bottleneck=False, layers=[2, 2, 2, 2], channels=[4, 8, 16, 32],
         deep_stem=False, stem_width=64, avg_down=False, se=True, in_chans=3, num_classes=11,
         size=40, batch=2),
    # seresnet152d structure (deep stem, avg_down, SE, 3-8-36-3 blocks) at reduced widths
    dict(name="seresnet152d_narrow", bottleneck=True, layers=[3, 8, 36, 3], channels=[4, 8, 12, 16],
         deep_stem=True, stem_width=4, avg_down=True, se=True, in_chans=3, num_classes=11,
         size=64, batch=2),
]


def build(cfg):
    return R.ResNet(
        block=R.Bottleneck if cfg["bottleneck"] else R.BasicBlock,
        layers=cfg["layers"], channels=tuple(cfg["channels"]),
        stem_type="deep" if cfg["deep_stem"] else "", stem_width=cfg["stem_width"],
        avg_down=cfg["avg_down"], block_args=dict(attn_layer="se") if cfg["se"] else None,
        in_chans=cfg["in_chans"], num_classes=cfg["num_classes"])


def randomize_(model, bottleneck):
    """Every parameter and BN statistic random, well conditioned; then rounded
    to fp32 so that both sides start from identical values."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            last_bn = name.startswith("layer") and name.endswith(
                ".bn3.weight" if bottleneck else ".bn2.weight")
            if last_bn:
                # The last BN of each residual branch: small but non-zero (timm
                # zero-inits it). Large values make the 50-block narrow net
                # chaotic: torch's own fp32 then strays 6% from its fp64.
                p.uniform_(0.05, 0.2)
            elif p.dim() == 1 and "weight" in name:      # other BN gammas
                p.uniform_(0.5, 1.5)
            elif p.dim() == 1:                          # BN beta, SE / fc biases
                p.uniform_(-0.2, 0.2)
            else:                                       # conv / fc weights: fan-in scaled
                fan_in = p[0].numel()
                p.normal_(0.0, (2.0 / fan_in) ** 0.5)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.uniform_(-0.1, 0.1)
            elif name.endswith("running_var"):
                b.uniform_(0.8, 1.2)
        for t in list(model.parameters()) + list(model.buffers()):
            if t.is_floating_point():
                t.copy_(t.float().to(t.dtype))


def main():
    os.makedirs(OUT, exist_ok=True)
    for i, cfg in enumerate(CONFIGS):
        torch.manual_seed(1000 + i)
        model = build(cfg).double()  # computed in fp64; stored as fp32
        randomize_(model, cfg["bottleneck"])
        state = {k: (v.detach().float() if v.is_floating_point() else v.detach()).clone().contiguous()
                 for k, v in model.state_dict().items()}

        n, c, s = cfg["batch"], cfg["in_chans"], cfg["size"]
        x = torch.randn(n, c, s, s, dtype=torch.float64).float().double()
        targets = (torch.rand(n, cfg["num_classes"], dtype=torch.float64) < 0.4).double()
        model.train()
        feats = model.forward_features(x)
        logits = model.forward_head(feats)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)
        loss.backward()

        out = dict(state)
        out["input"] = x.float().contiguous()
        out["targets"] = targets.float()
        out["features"] = feats.detach().float().contiguous()
        out["logits"] = logits.detach().float()
        out["loss"] = loss.detach().float()
        for name, p in model.named_parameters():
            out["grad." + name] = p.grad.detach().float().contiguous()
        for name, b in model.named_buffers():
            if name.endswith("running_mean") or name.endswith("running_var"):
                out["after." + name] = b.detach().float().clone()
        meta = {"config": json.dumps(cfg), "generator": "tools/make_timm_fixtures.py",
                "torch": torch.__version__, "timm": __import__("timm").__version__}
        path = os.path.join(OUT, cfg["name"] + ".safetensors")
        save_file(out, path, metadata=meta)
        params = sum(p.numel() for p in model.parameters())
        print(f"{path}: {params} parameters, {os.path.getsize(path)} bytes, loss {loss.item():.6f}")


if __name__ == "__main__":
    main()
