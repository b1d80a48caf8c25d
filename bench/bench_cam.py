"""Speed of the CAM engine on torchvision resnet18, batch 8, 224x224, CPU.

Prints, from one run, side by side:
  1. gradcam on layer4, top-1, against a plain torch.no_grad() forward pass;
  2. the seven one-pass methods on layer2, layer3 and layer4 for the top-3
     classes in one call (63 maps per image), against its floor: one forward
     pass plus, for each of the 3 classes, one backward from the output to
     the three captured activations only.
Medians of --repeats runs after one warm-up. Usage: python bench/bench_cam.py
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchvision

from writer_ext import compute_cams

ONE_PASS = ["gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "gradcam-elementwise", "eigengradcam"]
LAYERS = ["layer2", "layer3", "layer4"]


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def floor(model, x):
    """One forward with hooks on the three layers, then 3 backward passes to them only."""
    acts = {}
    handles = [getattr(model, n).register_forward_hook(lambda m, i, o, n=n: acts.__setitem__(n, o)) for n in LAYERS]
    try:
        with torch.enable_grad():
            out = model(x)
            top = out.topk(3, dim=1).indices
            for k in range(3):
                torch.autograd.grad(out.gather(1, top[:, k:k + 1]).sum(), [acts[n] for n in LAYERS],
                                    retain_graph=k < 2)
    finally:
        for h in handles:
            h.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x = torch.randn(args.batch, 3, 224, 224)

    def forward():
        with torch.no_grad():
            model(x)

    t_forward = median_seconds(forward, args.repeats)
    t_gradcam = median_seconds(lambda: compute_cams(model, x, target_layer="layer4", methods="gradcam"), args.repeats)
    t_floor = median_seconds(lambda: floor(model, x), args.repeats)
    t_all = median_seconds(
        lambda: compute_cams(model, x, target_layer=LAYERS, methods=ONE_PASS, topk=3), args.repeats
    )
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, resnet18, batch {args.batch}, 224x224, CPU")
    print(f"no_grad forward                         {t_forward * 1000:8.1f} ms")
    print(f"gradcam layer4 top-1                    {t_gradcam * 1000:8.1f} ms   ratio {t_gradcam / t_forward:.2f}x "
          "(goal <= 1.1x)")
    print(f"floor: forward + 3 backwards to layer2  {t_floor * 1000:8.1f} ms")
    print(f"7 methods x 3 layers x top-3 (63 maps)  {t_all * 1000:8.1f} ms   ratio {t_all / t_floor:.2f}x "
          "of the floor (goal <= 1.2x)")


if __name__ == "__main__":
    main()
