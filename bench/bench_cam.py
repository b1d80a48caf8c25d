"""Speed of the CAM engine on torchvision resnet18, batch 8, 224x224, CPU, side by side
with torchcam, Captum and pytorch-grad-cam measured in the same run.

  1. gradcam on layer4, top-1, against a plain torch.no_grad() forward pass
     (goal <= 1.1x), and the same map from the other libraries;
  2. the seven one-pass methods on layer2, layer3 and layer4 for the top-3
     classes in one call (63 maps per image), against its floor: one forward
     pass plus, for each of the 3 classes, one backward from the output to the
     three captured activations only (goal <= 1.2x); and the same 63 maps from
     pytorch-grad-cam, one call per method, layer and class as its API needs;
  3. scorecam on one image against pytorch-grad-cam's ScoreCAM at the same
     batch size (goal: no slower, same map);
  4. the write path: add_cam (what users call: maps, pictures, event file)
     against compute_cams on workloads 1 and 2, with the same probe pictures
     at every call as a monitor logs them (goal <= 1.05x), and with new
     pictures at every call;
  5. ShapleyCAM, FullGrad, Guided Backprop and Guided Grad-CAM against pytorch-grad-cam (bench_cam_pixel.py).
  6. Finer-CAM, KPCA-CAM and Seg-Eigen-CAM on layer4 (and KPCA-CAM on layer3),
     top-1, against the same method in torchcam and pytorch-grad-cam, and the
     three with Grad-CAM in one call against Grad-CAM alone (the shared pass).

Medians of --repeats runs after one warm-up. Usage: python bench/bench_cam.py [--quick] [--new-methods]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import torch
import torchvision
from bench_cam_pixel import print_pixel_methods

from writer_ext import SummaryWriter, add_cam, compute_cams

ONE_PASS = ["gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "gradcam-elementwise", "eigengradcam"]
PGC_NAMES = {
    "gradcam": "GradCAM", "gradcam++": "GradCAMPlusPlus", "xgradcam": "XGradCAM", "layercam": "LayerCAM",
    "hirescam": "HiResCAM", "gradcam-elementwise": "GradCAMElementWise", "eigengradcam": "EigenGradCAM",
}
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


def line(label: str, seconds: float, ratio_to: float | None = None, what: str = "", goal: str = "") -> None:
    ratio = f"{seconds / ratio_to:6.2f}x {what}" if ratio_to else ""
    print(f"  {label:<52} {seconds * 1000:9.1f} ms  {ratio}{goal}")


def write_path(model, x, repeats):
    """add_cam against compute_cams, for Grad-CAM at layer4 and for the 63 maps, probes repeated, then new.

    The calls alternate (compute_cams, add_cam, compute_cams, ...) so that the machine's drift
    weighs on both alike; each add_cam is timed with the writer's flush, which waits for its
    event to be on disk (torch's writer thread frames it with TensorBoard's pure-Python CRC);
    medians of 2 * repeats.
    """
    workloads = [("gradcam, layer4", {"target_layer": "layer4", "methods": "gradcam"}),
                 ("63 maps", {"target_layer": LAYERS, "methods": ONE_PASS, "topk": 3})]
    with tempfile.TemporaryDirectory() as logdir, SummaryWriter(logdir) as writer:
        step = iter(range(10**6))
        for name, kwargs in workloads:
            times: dict[str, list[float]] = {"compute": [], "same": [], "new": []}
            for k in range(2 * repeats + 1):
                fresh = x + 0.01 * (k + 1)  # new pictures: a different batch every call
                for key in ("compute", "same", "new"):
                    start = time.perf_counter()
                    if key == "compute":
                        compute_cams(model, x, **kwargs)
                    else:  # flushed, so that the writer thread's work counts here and not in the next call
                        add_cam(writer, key, model, x if key == "same" else fresh, global_step=next(step), **kwargs)
                        writer.flush()
                    if k:  # the first round warms up
                        times[key].append(time.perf_counter() - start)
            t_compute, t_same, t_new = (statistics.median(times[key]) for key in ("compute", "same", "new"))
            line(f"compute_cams, {name}", t_compute)
            line(f"add_cam, {name}, the same probes every call", t_same, t_compute, "compute_cams",
                 "  (goal <= 1.05x)")
            line(f"add_cam, {name}, new pictures every call", t_new, t_compute, "compute_cams")


def anchors_gradcam(model, x, repeats):
    """The same Grad-CAM (layer4, top-1) from torchcam, Captum and pytorch-grad-cam."""
    from captum.attr import LayerGradCam
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from torchcam.methods import GradCAM as TorchcamGradCAM

    with torch.no_grad():
        top = model(x).argmax(1)

    def torchcam():
        with TorchcamGradCAM(model, target_layer="layer4") as extractor:
            extractor(class_idx=top.tolist(), scores=model(x))

    def captum():
        LayerGradCam(model, model.layer4).attribute(x, target=top, relu_attributions=True)

    def pgc():
        with GradCAM(model=model, target_layers=[model.layer4]) as cam:
            cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in top])

    return {
        "torchcam GradCAM": median_seconds(torchcam, repeats),
        "Captum LayerGradCam": median_seconds(captum, repeats),
        "pytorch-grad-cam GradCAM": median_seconds(pgc, repeats),
    }


def pgc_63_maps(model, x):
    """pytorch-grad-cam needs one call per method, layer and class for the same 63 maps."""
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with torch.no_grad():
        top = model(x).topk(3, dim=1).indices
    start = time.perf_counter()
    for method in ONE_PASS:
        for layer in LAYERS:
            with getattr(pgc, PGC_NAMES[method])(model=model, target_layers=[getattr(model, layer)]) as cam:
                for k in range(3):
                    cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in top[:, k]])
    return time.perf_counter() - start


def scorecam(model, x1, batch_size, repeats):
    """Score-CAM of one image at layer4 here and in pytorch-grad-cam, and how well the maps agree."""
    from pytorch_grad_cam import ScoreCAM
    from pytorch_grad_cam.utils.image import scale_cam_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with torch.no_grad():
        top = int(model(x1).argmax(1))
    ours = {}

    def run_ours():
        ours["maps"] = compute_cams(model, x1, target_layer="layer4", methods="scorecam", targets=[top],
                                    batch_size=batch_size).maps["scorecam"]["layer4"]

    theirs = {}

    def run_theirs():
        with ScoreCAM(model=model, target_layers=[model.layer4]) as cam:
            cam.batch_size = batch_size
            theirs["maps"] = cam(input_tensor=x1, targets=[ClassifierOutputTarget(top)])

    t_ours, t_theirs = median_seconds(run_ours, repeats), median_seconds(run_theirs, repeats)
    ours_up = scale_cam_image(np.maximum(ours["maps"][:, 0].numpy(), 0), tuple(x1.shape[-2:]))
    correlation = float(np.corrcoef(ours_up.ravel(), theirs["maps"].ravel())[0, 1])
    return t_ours, t_theirs, correlation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="skip the other libraries (the slow part)")
    parser.add_argument("--new-methods", action="store_true", help="run only parts 5 and 6")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x = torch.randn(args.batch, 3, 224, 224)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, resnet18, batch {args.batch}, 224x224, CPU, "
          f"medians of {args.repeats}")

    if args.new_methods:
        return newer_methods(model, x, args)

    def forward():
        with torch.no_grad():
            model(x)

    t_forward = median_seconds(forward, args.repeats)
    t_gradcam = median_seconds(lambda: compute_cams(model, x, target_layer="layer4", methods="gradcam"), args.repeats)
    print("1. Grad-CAM, layer4, top-1")
    line("plain torch.no_grad() forward", t_forward)
    line("writer_ext gradcam", t_gradcam, t_forward, "the forward", "  (goal <= 1.1x)")
    if not args.quick:
        for name, seconds in anchors_gradcam(model, x, args.repeats).items():
            line(name, seconds, t_forward, "the forward")

    print("2. 7 one-pass methods x 3 layers x top-3 (63 maps per image)")
    t_floor = median_seconds(lambda: floor(model, x), args.repeats)
    t_all = median_seconds(lambda: compute_cams(model, x, target_layer=LAYERS, methods=ONE_PASS, topk=3), args.repeats)
    line("floor: forward + 3 backwards to the layers", t_floor)
    line("writer_ext, one call", t_all, t_floor, "the floor", "  (goal <= 1.2x)")
    if not args.quick:
        line("pytorch-grad-cam, 63 calls (once)", pgc_63_maps(model, x), t_floor, "the floor")

    if not args.quick:
        print("3. Score-CAM, layer4 (512 channels), one image, batch size 32")
        t_ours, t_theirs, correlation = scorecam(model, x[:1], 32, max(1, args.repeats // 2))
        line("writer_ext scorecam", t_ours)
        line("pytorch-grad-cam ScoreCAM", t_theirs)
        print(f"  ratio ours/theirs {t_ours / t_theirs:.2f} (goal <= 1), Pearson r of the maps {correlation:.4f} "
              "(random weights: Score-CAM's weights are nearly uniform, so r says little; see test_agreement.py)")

    print("4. The write path: add_cam (maps, pictures, event file) against compute_cams")
    write_path(model, x, args.repeats)

    newer_methods(model, x, args)


def newer_methods(model, x, args):
    """Parts 5 and 6: the methods added in round 2, each against the libraries that have it."""
    print_pixel_methods(model, x, args.repeats, others=not args.quick)
    print("6. Finer-CAM, KPCA-CAM, Seg-Eigen-CAM, top-1")
    new_methods(model, x, args.repeats, args.quick)


def new_methods(model, x, repeats, quick):
    """Each new method here and, unless `quick`, the same method in torchcam and pytorch-grad-cam."""
    import pytorch_grad_cam as pgc
    import torchcam.methods as tcm
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with torch.no_grad():
        top = model(x).argmax(1)
    targets = [ClassifierOutputTarget(int(c)) for c in top]

    def ours(method, layer="layer4"):
        return lambda: compute_cams(model, x, target_layer=layer, methods=method)

    def theirs(cls, layer="layer4", **call):
        def run():
            with getattr(pgc, cls)(model, [getattr(model, layer)]) as cam:
                cam(x, **call)
        return run

    def torchcam_finer():
        with tcm.FinerCAM(model, "layer4", base_method=tcm.GradCAM) as extractor:
            extractor(class_idx=top.tolist(), scores=model(x))

    rows = [
        ("finercam", ours("finercam"), [("torchcam FinerCAM(GradCAM)", torchcam_finer)]),
        ("finercam-weighted", ours("finercam-weighted"), [("pytorch-grad-cam FinerCAM", theirs("FinerCAM"))]),
        ("kpcacam", ours("kpcacam"), [("pytorch-grad-cam KPCA_CAM", theirs("KPCA_CAM", targets=targets))]),
        ("kpcacam, layer3 (196 positions)", ours("kpcacam", "layer3"),
         [("pytorch-grad-cam KPCA_CAM, layer3", theirs("KPCA_CAM", "layer3", targets=targets))]),
        ("segeigencam", ours("segeigencam"),
         [("pytorch-grad-cam SegEigenCAM", theirs("SegEigenCAM", targets=targets))]),
    ]
    for name, run, others in rows:
        t_ours = median_seconds(run, repeats)
        line(f"writer_ext {name}", t_ours)
        for label, other in [] if quick else others:
            line(label, median_seconds(other, repeats), t_ours, "ours")
    t_gradcam = median_seconds(ours("gradcam"), repeats)
    t_four = median_seconds(ours(["gradcam", "finercam", "kpcacam", "segeigencam"]), repeats)
    line("writer_ext gradcam alone", t_gradcam)
    line("writer_ext gradcam + the three, one call", t_four, t_gradcam, "gradcam alone")


if __name__ == "__main__":
    main()
