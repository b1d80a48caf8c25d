"""Section 5 of bench_cam.py: ShapleyCAM, FullGrad, Guided Backprop and Guided Grad-CAM against pytorch-grad-cam
in the same run (torchcam 0.5.0 has none of them), on resnet18 at layer4, top-1.

ShapleyCAM explains the softmax probability (on logits it is Grad-CAM: resnet18 is piecewise linear after
layer4), as pytorch-grad-cam's ClassifierOutputSoftmaxTarget. pytorch-grad-cam's GuidedBackpropReLUModel
takes one image per call (it reads row 0) and swaps the model's ReLUs, so it runs on a copy, image by image.
Usage: python bench/bench_cam_pixel.py [--repeats 3] [--batch 8]
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch
import torchvision

from writer_ext import compute_cams


def _median(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def pixel_methods(model: torch.nn.Module, x: torch.Tensor, repeats: int, others: bool = True) -> list[tuple]:
    """(label, ours seconds, pytorch-grad-cam seconds or None) per method, and the four of ours in one call."""
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam import GuidedBackpropReLUModel
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget

    with torch.no_grad():
        top = model(x).argmax(1)
    softmax = lambda out: out.softmax(1).gather(1, top.view(-1, 1))  # noqa: E731
    guided_model = GuidedBackpropReLUModel(model=copy.deepcopy(model), device="cpu")

    def ours(method, **kw):
        return lambda: compute_cams(model, x, target_layer="layer4", methods=method, **kw)

    def theirs_shapley():
        with pgc.ShapleyCAM(model=model, target_layers=[model.layer4]) as cam:
            cam(input_tensor=x, targets=[ClassifierOutputSoftmaxTarget(int(c)) for c in top])

    def theirs_fullgrad():
        with pgc.FullGrad(model=model, target_layers=[]) as cam:
            cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in top])

    def theirs_guided():
        for i, c in enumerate(top.tolist()):
            guided_model(x[i:i + 1], target_category=c)

    def theirs_guided_gradcam():
        with pgc.GradCAM(model=model, target_layers=[model.layer4]) as cam:
            cams = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in top])
        theirs_guided()
        return cams

    rows = [
        ("shapleycam (softmax target)", ours("shapleycam", targets=softmax), theirs_shapley),
        ("gradcam (softmax target, for scale)", ours("gradcam", targets=softmax), None),
        ("fullgrad", ours("fullgrad", targets=top), theirs_fullgrad),
        ("guidedbackprop", ours("guidedbackprop", targets=top), theirs_guided),
        ("guidedgradcam", ours("guidedgradcam", targets=top), theirs_guided_gradcam),
        ("fullgrad + guidedbackprop + guidedgradcam, one call",
         ours(["fullgrad", "guidedbackprop", "guidedgradcam"], targets=top), None),
    ]
    return [(label, _median(mine, repeats), _median(other, repeats) if others and other else None)
            for label, mine, other in rows]


def print_pixel_methods(model: torch.nn.Module, x: torch.Tensor, repeats: int, others: bool = True) -> None:
    print("5. ShapleyCAM, FullGrad, Guided Backprop, Guided Grad-CAM (layer4, top-1) against pytorch-grad-cam")
    for label, mine, other in pixel_methods(model, x, repeats, others):
        versus = f"  pytorch-grad-cam {other * 1000:9.1f} ms  ratio {mine / other:.2f}" if other else ""
        print(f"  {label:<52} {mine * 1000:9.1f} ms{versus}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x = torch.randn(args.batch, 3, 224, 224)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, resnet18, batch {args.batch}, 224x224, CPU, "
          f"medians of {args.repeats}")
    print_pixel_methods(model, x, args.repeats)


if __name__ == "__main__":
    main()
