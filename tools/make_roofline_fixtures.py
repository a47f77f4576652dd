#!/usr/bin/env python3
"""FLOP counts of one training step of timm's seresnet152d, by PyTorch.

torch.utils.flop_counter.FlopCounterMode counts the FLOPs of every
convolution and matrix product PyTorch runs (a multiply-add is 2; biases and
elementwise ops are not counted), forward and backward separately; the
backward of the first convolution has no input gradient (the image does not
require one). This writes tests/fixtures/roofline/seresnet152d_flops.json:

  {"model": "seresnet152d", "num_classes": 11, "in_chans": 3,
   "sizes": [{"image_size": 256, "batch": 1, "forward": ..., "backward": ...,
              "params": ...}, ...]}

which tests/train/test_roofline.cpp compares with the convolution and linear
FLOPs of `ranzcr info --roofline`'s op list.

Run:  pip install torch timm && python3 tools/make_roofline_fixtures.py
"""
import json
import os

import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "roofline", "seresnet152d_flops.json")


def count(model, size, batch):
    x = torch.randn(batch, 3, size, size)
    with FlopCounterMode(display=False) as fwd:
        y = model(x)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(y, torch.zeros_like(y))
    with FlopCounterMode(display=False) as bwd:
        loss.backward()
    model.zero_grad(set_to_none=True)
    return fwd.get_total_flops(), bwd.get_total_flops()


def main():
    torch.set_num_threads(os.cpu_count() or 1)
    model = timm.create_model("seresnet152d", pretrained=False, num_classes=11, in_chans=3)
    model.train()
    params = sum(p.numel() for p in model.parameters())
    sizes = []
    for size in (256, 512):
        forward, backward = count(model, size, 1)
        sizes.append(dict(image_size=size, batch=1, forward=forward, backward=backward, params=params))
        print(f"{size}px: forward {forward / 1e9:.3f} GFLOP ({forward / 2e9:.3f} GMAC), "
              f"backward {backward / 1e9:.3f} GFLOP, {params} parameters")
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(dict(model="seresnet152d", num_classes=11, in_chans=3, torch=torch.__version__,
                       timm=timm.__version__, generator="tools/make_roofline_fixtures.py", sizes=sizes), f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
