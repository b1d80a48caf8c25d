"""Our model-parameter randomisation test (`writer_ext.sanity_check`) beside Quantus's `quantus.MPRT`, in one run.

Both sides get the same model (the demo's ShapeNet after 150 seeded Adam steps on drawn shapes), the same 8 fresh
pictures, the same target classes (those predicted by the trained model), the same module order (the modules with
`reset_parameters`, in definition order reversed: cascading, Quantus's layer_order="top_down"), the same seeding
(`torch.manual_seed(seed + 1)` before each `reset_parameters()`, seed 42 on both sides) and the same similarity
(Spearman rank correlation of the absolute maps, averaged over images). Quantus's explanation function calls our
`compute_cams(..., methods="gradcam", target_layer="features")` and upsamples the 16x16 map bilinearly to the
64x64 input, since Quantus asserts that every attribution dimension is one of the input's.

Printed per stage (module re-initialised): our similarity as `sanity_check` returns it (maps upsampled to the
input, ties at their average rank), the same maps through scipy's `spearmanr` (a check of ours), Quantus's
figure, and the largest absolute difference. Then the wall times (median of --repeats runs after one warm-up):
ours for Grad-CAM, Quantus for Grad-CAM, and ours for seven methods in one call against Quantus for one (goal: at
most a third).

Usage: pip install -e .[bench]; python bench/bench_sanity.py [--repeats N]   (about half a minute on 2 CPU cores)
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
import torch
from scipy import stats
from torch import nn

from writer_ext import compute_cams, sanity_check
from writer_ext.demo import draw_shapes, fitted_shapenet

LAYER = "features"
SEED = 42
ALL_METHODS = ["gradcam", "gradcam++", "layercam", "xgradcam", "hirescam", "eigencam", "sobel"]


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, K, h, w) maps bilinearly resized to `size`, as the explanation function hands them to Quantus."""
    return nn.functional.interpolate(maps.float(), size=size, mode="bilinear", align_corners=False)


def explain(model, inputs, targets, **_):
    """Quantus's explain_func: our Grad-CAM at LAYER for `targets`, upsampled to the input, (B, 1, H, W) numpy."""
    x = torch.as_tensor(inputs)
    result = compute_cams(model, x, target_layer=LAYER, methods="gradcam", targets=torch.as_tensor(targets).long())
    return upsample(result.maps["gradcam"][LAYER], x.shape[-2:]).numpy()


def run_quantus(model, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """quantus.MPRT, cascading, seed SEED, Spearman of |maps| (no normalisation: Spearman ignores scale)."""
    import quantus

    metric = quantus.MPRT(similarity_func=quantus.similarity_func.correlation_spearman, layer_order="top_down",
                          seed=SEED, abs=True, normalise=False, disable_warnings=True, display_progressbar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), explain_func=explain, batch_size=64,
                        device="cpu")
    return {name: float(np.mean(values)) for name, values in scores.items()}


def scipy_upsampled(maps: list[torch.Tensor], size: tuple[int, int]) -> list[float]:
    """Per stage, the mean of scipy's Spearman of |maps| upsampled to `size` (a check of our `spearman`)."""
    up = [upsample(m, size)[:, 0].abs() for m in maps]
    return [float(np.mean([stats.spearmanr(a.flatten(), b.flatten()).statistic for a, b in zip(up[0], s)]))
            for s in up[1:]]


def median_seconds(fn, repeats: int) -> tuple[float, object]:
    """Median wall time of `repeats` calls after one warm-up, and the warm-up's result."""
    result = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def print_table(stages, ours, scipy_up, theirs, zeros) -> float:
    """The per-stage table (zeros: share of exact-zero pixels, tied, in the stage's 64x64 maps);
    returns the largest |ours - Quantus|."""
    print(f"{'stage':<14}{'ours':>9}{'scipy on ours':>14}{'Quantus':>9}{'|ours-Q|':>10}{'zeros':>7}")
    worst = 0.0
    for i, name in enumerate(stages):
        q = theirs[name]
        worst = max(worst, abs(ours[i] - q))
        print(f"{name:<14}{ours[i]:>9.4f}{scipy_up[i]:>14.4f}{q:>9.4f}{abs(ours[i] - q):>10.2e}{zeros[i]:>7.0%}")
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import quantus

    model = fitted_shapenet()
    x = draw_shapes(8, np.random.default_rng(7))[0]
    with torch.no_grad():
        y = model(x).argmax(1)
    ours_s, result = median_seconds(
        lambda: sanity_check(model, x, methods="gradcam", target_layer=LAYER, targets=y, seed=SEED), args.repeats)
    quantus_s, theirs = median_seconds(lambda: run_quantus(model, x, y), args.repeats)
    all_s, _ = median_seconds(
        lambda: sanity_check(model, x, methods=ALL_METHODS, target_layer=LAYER, targets=y, seed=SEED), args.repeats)
    size = tuple(x.shape[-2:])
    scipy_up = scipy_upsampled(result.maps["gradcam"], size)
    zeros = [float((upsample(m, size) == 0).float().mean()) for m in result.maps["gradcam"][1:]]
    one_s, _ = median_seconds(lambda: compute_cams(model, x, methods="gradcam", target_layer=LAYER, targets=y),
                              args.repeats)
    passes_s, _ = median_seconds(lambda: [compute_cams(model, x, methods=ALL_METHODS, target_layer=LAYER, targets=y)
                                          for _ in range(len(result.stages) + 1)], args.repeats)
    print(f"quantus {quantus.__version__}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"ShapeNet, 8 images, targets {y.tolist()}, layer {LAYER!r}, Grad-CAM, cascading, seed {SEED}")
    print(f"Quantus 'original' (original vs itself): {theirs['original']:.4f}; original maps' zeros: "
          f"{float((upsample(result.maps['gradcam'][0], size) == 0).float().mean()):.0%}")
    worst = print_table(result.stages, result.similarity["gradcam"], scipy_up, theirs, zeros)
    print(f"max |ours - Quantus| = {worst:.2e} (sanity_check's similarity against quantus.MPRT's, per stage)")
    print(f"time, Grad-CAM: ours {ours_s:.3f} s, Quantus {quantus_s:.3f} s ({quantus_s / ours_s:.1f}x)")
    print(f"one compute_cams Grad-CAM call: {one_s:.3f} s; Quantus calls it {len(result.stages) + 2} times "
          f"(the original maps twice), ours {len(result.stages) + 1} times")
    ratio = all_s / quantus_s
    print(f"time, ours for {len(ALL_METHODS)} methods ({', '.join(ALL_METHODS)}): {all_s:.3f} s = {ratio:.2f} of "
          f"Quantus's one method; goal <= 0.33: {'met' if ratio <= 1 / 3 else 'NOT met'}")
    print(f"  of which the {len(result.stages) + 1} passes computing all {len(ALL_METHODS)} methods' maps (no "
          f"comparison): {passes_s:.3f} s = {passes_s / quantus_s:.2f} of Quantus's time; the rest is the three "
          "measures (Spearman of |maps| and of maps, SSIM) per method at the input's size")


if __name__ == "__main__":
    main()
