#!/usr/bin/env python3
"""Pretrained-weight fixtures, adapted by timm itself.

Two "published" files, laid out exactly as timm's model.safetensors on the
Hugging Face hub (timm parameter names, OIHW convs, an ImageNet head of 1000
classes, 3 input channels), with random but well-conditioned weights:

  tests/fixtures/pretrained/seresnet152d_narrow_in1k.safetensors
      seresnet152d's structure (deep stem, avg_down, SE, 3-8-36-3 blocks) at
      widths 4/8/12/16, stem 4
  tests/fixtures/pretrained/seresnet_tiny_in1k.safetensors
      ranzcr's seresnet_tiny (one block per stage, widths 8/16/32/64, stem 8),
      for tests that train through `model.pretrained`

and what timm's own loading makes of the first one,

  tests/fixtures/pretrained/seresnet152d_narrow_adapted.safetensors
      for in_chans c in 1, 2, 3, 4, from
        timm.create_model("seresnet152d", pretrained=True,
                          pretrained_cfg_overlay=dict(file=<published file>),
                          in_chans=c, num_classes=11, <narrow widths>)
      in{c}.conv1.0.weight   the first conv as timm adapted it (OIHW)
      in{c}.fc.weight / .bias the new 11-class head timm initialized
      in{c}.input            [2, c, 64, 64]
      in{c}.logits           eval-mode logits, computed in fp64 from the
                             fp32 weights timm loaded

Run:  pip install torch timm safetensors && python3 tools/make_pretrained_fixtures.py
"""
import json
import os

import timm
import torch
from safetensors.torch import save_file

from make_timm_fixtures import randomize_

OUT = os.environ.get("RZ_FIXTURE_OUT",
                     os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "pretrained"))

NARROW = dict(channels=(4, 8, 12, 16), stem_width=4)
TINY = dict(layers=[1, 1, 1, 1], channels=(8, 16, 32, 64), stem_width=8)


def publish(name, kwargs, seed):
    """A random 1000-class, 3-channel seresnet152d-family model saved as timm publishes it."""
    torch.manual_seed(seed)
    model = timm.create_model("seresnet152d", pretrained=False, **kwargs)
    randomize_(model, bottleneck=True)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    path = os.path.join(OUT, name + ".safetensors")
    save_file(state, path, metadata={"format": "pt", "generator": "tools/make_pretrained_fixtures.py",
                                     "config": json.dumps(kwargs)})
    print(f"{path}: {sum(p.numel() for p in model.parameters())} parameters, {os.path.getsize(path)} bytes")
    return path


def main():
    os.makedirs(OUT, exist_ok=True)
    narrow = publish("seresnet152d_narrow_in1k", NARROW, 2000)
    publish("seresnet_tiny_in1k", TINY, 2001)

    out = {}
    for c in (1, 2, 3, 4):
        torch.manual_seed(3000 + c)
        model = timm.create_model("seresnet152d", pretrained=True,
                                  pretrained_cfg_overlay=dict(file=narrow),
                                  in_chans=c, num_classes=11, **NARROW)
        model.eval()
        x = torch.randn(2, c, 64, 64)
        with torch.no_grad():
            logits = model.double()(x.double())
        state = model.state_dict()
        out[f"in{c}.conv1.0.weight"] = state["conv1.0.weight"].float().contiguous()
        out[f"in{c}.fc.weight"] = state["fc.weight"].float().contiguous()
        out[f"in{c}.fc.bias"] = state["fc.bias"].float().contiguous()
        out[f"in{c}.input"] = x.contiguous()
        out[f"in{c}.logits"] = logits.float().contiguous()
    path = os.path.join(OUT, "seresnet152d_narrow_adapted.safetensors")
    save_file(out, path, metadata={"generator": "tools/make_pretrained_fixtures.py",
                                   "torch": torch.__version__, "timm": timm.__version__,
                                   "config": json.dumps(dict(NARROW, num_classes=11))})
    print(f"{path}: {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
