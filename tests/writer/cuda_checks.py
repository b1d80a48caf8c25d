"""The CUDA checks of writer_ext, run by tests/writer/test_cuda.py when a GPU is present (or as a script that
prints one PASS/FAIL line per check on any machine with one).

One line per check, PASS or FAIL with the figure measured (INFO lines inform and never fail):
  1. every method in writer_ext.METHODS runs on the device, and its maps equal the same model's maps
     computed on the CPU (a copy with the same weights, the same inputs and target classes): Pearson
     r >= 0.999 per map and max |difference| <= 0.01 of the CPU map's value range; worst figures per method.
     Models: resnet18 (BatchNorm; layer3 and layer4, Score-CAM and Ablation-CAM on layer2 of a small input)
     and a small torchvision VisionTransformer (LayerNorm'd tokens; see cases() for the layers some methods
     need). TF32 is off for this comparison; an INFO line gives the figures with PyTorch's defaults
     (TF32 cuDNN convolutions);
  2. under torch.autocast (float16 on CUDA, bfloat16 on the CPU) the maps are float32 and agree with the
     plain call's, and the model leaves the call as it came;
  3. training safety on the device, mid training step (resnet18 in train mode after a backward, some .grad
     replaced by known tensors, some None, one parameter frozen, user hooks on modules and a parameter),
     after an add_cam call (Grad-CAM, Grad-CAM++, Ablation-CAM and random on two layers, top-2) and after
     two that raise (a bad layer name; a class id out of range, raised after the forward pass): every .grad
     the same tensor with the same values (None stays None), parameters and buffers (BatchNorm statistics,
     num_batches_tracked) bit for bit, training and requires_grad flags, every hook dict of the modules and
     parameters, the global module hooks and the CPU and CUDA random streams;
  4. a short SGD run of mobilenet_v3_small (dropout and BatchNorm) on random data, from one seed, with a
     CamMonitor logging every step to a temporary directory and without: losses, gradients, parameters,
     buffers and random streams bit for bit. Deterministic algorithms are on (warn-only); a second run
     without the monitor is the control: if it already differs, the GPU is not bitwise deterministic for
     this model, the line names the ops that warned, and what is still exact is compared exactly;
  5. CUDA memory over 200 add_cam calls (resnet18, batch 4, 112x112): memory_allocated after the 200th
     call equals that after the 10th, and the peak does not grow (n/a on the CPU);
  6. timing (INFO): gradcam top-1 on resnet18, batch 8, 224x224, against a plain no_grad forward pass,
     medians of 10 after warm-up.

Random-weight torchvision models only, seeded; nothing is downloaded. Exit code 0 when every check
passes, 1 when one fails, 2 when the device is not available.

Usage: `./scripts/test.sh tests/writer/test_cuda.py` (skipped without CUDA), or from the repository root
    PYTHONPATH=. python3 tests/writer/cuda_checks.py [--device cuda | cuda:1 | cpu]
"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import sys
import tempfile
import time
from typing import Callable

import torch
import torchvision
from torch import nn

import writer_ext
from cuda_support import (
    MIB,
    Agreement,
    Report,
    available_device,
    cases,
    changes,
    compare_method,
    deterministic,
    exact_float32,
    maps_of,
    median_ms,
    resnet18,
    run_differences,
    snapshot,
    streams,
    train,
)
from writer_ext import CamMonitor, SummaryWriter, add_cam, compute_cams


def check_devices_agree(report: Report, device: torch.device) -> None:
    """1. every method on the device against the CPU"""
    found: dict[str, Agreement] = {}
    where: dict[str, list[str]] = {}
    for case in cases():
        cpu_model = case.model()
        dev_model = copy.deepcopy(cpu_model).to(device)
        for layers, methods in case.groups().items():
            with exact_float32():
                try:  # the CPU maps of the group in one call ...
                    reference = maps_of(cpu_model, case, methods, layers, torch.device("cpu"))
                except Exception:  # ... or one call per method, so that only the method that raises fails
                    reference = None
                for method in methods:  # one call each on the device, so that one method's error fails only it
                    agree = report.attempt("1", f"{method} on {case.name}", compare_method, case, method, layers,
                                           reference, cpu_model, dev_model, device)
                    found.setdefault(method, Agreement()).merge(agree)
                    where.setdefault(method, []).append(case.name if agree else f"{case.name}: RAISED")
    for method in writer_ext.METHODS:
        if method not in found:
            report.line("1", False, f"{method}: in writer_ext.METHODS but in no case of this script")
            continue
        report.line("1", found[method].ok, f"{method:20} {device.type} vs cpu: {found[method]} "
                    f"[{'; '.join(where[method])}]")
    if device.type == "cuda":
        case = cases()[0]
        cpu_model = case.model()
        dev_model = copy.deepcopy(cpu_model).to(device)
        per_method: dict[str, Agreement] = {}
        for layers, methods in case.groups().items():
            expected = maps_of(cpu_model, case, methods, layers, torch.device("cpu"))
            got = maps_of(dev_model, case, methods, layers, device)
            for method in methods:
                for layer in layers:
                    per_method.setdefault(method, Agreement()).add(expected[method][layer], got[method][layer])
        method, worst = min(per_method.items(), key=lambda item: item[1].r)
        report.line("1", None, f"with PyTorch's default TF32 settings (cudnn.allow_tf32="
                    f"{torch.backends.cudnn.allow_tf32}, matmul {torch.backends.cuda.matmul.allow_tf32}) on "
                    f"{case.name}, the least agreeing method, {method}: {worst}")


def check_autocast(report: Report, device: torch.device) -> None:
    """2. maps under autocast"""
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    for case in cases():
        with report.guard("2", f"autocast on {case.name}"):
            model = case.model().to(device)
            x, targets = case.inputs()
            x = x.to(device)
            agree, dtypes, changed = Agreement(), set(), []
            for layers, methods in case.groups().items():
                plain = compute_cams(model, x, target_layer=list(layers), targets=targets, methods=methods, seed=0)
                before = snapshot(model, device)
                with torch.autocast(device.type, dtype=dtype):
                    mixed = compute_cams(model, x, target_layer=list(layers), targets=targets, methods=methods,
                                         seed=0)
                changed += changes(model, before, device)
                for method in methods:
                    for layer in layers:
                        dtypes.add(str(mixed.maps[method][layer].dtype).replace("torch.", ""))
                        agree.add(plain.maps[method][layer], mixed.maps[method][layer])
            report.line("2", dtypes == {"float32"} and agree.ok and not changed,
                        f"autocast {str(dtype).replace('torch.', '')} on {case.name}, {len(case.methods)} methods: "
                        f"maps {', '.join(sorted(dtypes))}; vs the plain call: {agree}; "
                        f"model changed: {', '.join(sorted(set(changed))[:6]) or 'nothing'}")


def check_training_safety(report: Report, device: torch.device) -> None:
    """3. training safety mid step"""
    model = resnet18().to(device).train()
    calls = {"forward": 0, "backward": 0}

    def count(kind: str) -> Callable[..., None]:
        return lambda *args: calls.__setitem__(kind, calls[kind] + 1)

    model.conv1.register_forward_pre_hook(lambda module, args: None)
    model.layer1.register_forward_hook(count("forward"))
    model.fc.register_full_backward_hook(count("backward"))
    model.layer2[0].conv1.weight.register_hook(lambda grad: None)
    model.fc.bias.requires_grad_(False)
    generator = torch.Generator(device).manual_seed(2)
    x = torch.rand(4, 3, 64, 64, generator=generator, device=device)
    nn.functional.cross_entropy(model(x), torch.arange(4, device=device)).backward()
    params = list(model.parameters())
    for i, p in enumerate(params):
        if i % 5 == 1:
            p.grad = None
        elif i % 5 == 2:
            p.grad = torch.randn(p.shape, generator=generator, device=device)  # a known tensor
    probe = torch.rand(2, 3, 32, 32, generator=generator, device=device)
    known = sum(i % 5 == 2 for i in range(len(params)))
    nones = sum(p.grad is None for p in params)
    counts = (f"{len(params)} parameters ({known} .grad known tensors, {nones} None), "
              f"{len(list(model.buffers()))} buffers, {len(list(model.modules()))} modules")
    good = dict(target_layer=["layer2", "layer3"], methods=("gradcam", "gradcam++", "ablationcam", "random"), topk=2)
    calls_to_make = {
        "an add_cam call": {},
        "an add_cam call raising on a bad layer name": {"target_layer": "layer9"},
        "an add_cam call raising after the forward pass (class id 99 of 10)": {"targets": [99, 0]},
    }
    with tempfile.TemporaryDirectory() as logdir:
        writer = SummaryWriter(logdir)
        for label, bad in calls_to_make.items():
            with report.guard("3", f"training safety after {label}"):
                model.train()  # each call starts mid step in train mode, whatever the one before left
                before = snapshot(model, device)
                calls.update(forward=0, backward=0)
                raised = None
                try:
                    add_cam(writer, "safety", model, probe, **{**good, **bad})
                except ValueError as e:
                    raised = e
                changed = changes(model, before, device)
                wrong = ("" if (raised is not None) == bool(bad)
                         else f"; raised {raised}" if raised else "; did not raise")
                report.line("3", not changed and not wrong,
                            f"training safety on {device.type} after {label}: {counts}; "
                            f"changed: {', '.join(changed[:6]) or 'nothing'}{wrong}")
                if calls["backward"]:
                    report.line("3", None, f"the user's full backward hook on fc ran {calls['backward']} time(s) "
                                f"during {label} (its forward hook on layer1: {calls['forward']})")
        writer.close()


def check_monitor_training(report: Report, device: torch.device) -> None:
    """4. training with and without CamMonitor"""
    torch.manual_seed(0)
    start = torchvision.models.mobilenet_v3_small(num_classes=10).to(device)
    steps = 4
    torch.manual_seed(5)
    probes = torch.rand(2, 3, 64, 64, device=device)
    with deterministic(), tempfile.TemporaryDirectory() as logdir:
        plain = train(copy.deepcopy(start), device, steps)
        control = train(copy.deepcopy(start), device, steps)
        with CamMonitor(logdir, copy.deepcopy(start), probes, every_n_steps=1, target_layer="features",
                        methods=("gradcam", "random"), smooth="noise", smooth_samples=2, metrics=True,
                        activations=True) as monitor:
            watched = train(monitor.model, device, steps, monitor)
    compared = f"losses, gradients, parameters, BatchNorm statistics, {' and '.join(streams(device))} random streams"
    label = (f"mobilenet_v3_small (dropout, BatchNorm), {steps} SGD steps on {device.type}, with CamMonitor "
             f"(logged {watched.logged} of {steps} steps)")
    drift = run_differences(plain, watched)
    if watched.logged != steps:
        drift["steps logged"] = float(steps - watched.logged)
    noise = run_differences(plain, control)
    if not noise:
        report.line("4", not drift, f"{label} vs without it: {compared} bit for bit; "
                    f"differ: {', '.join(f'{k} (max {v:.1e})' for k, v in drift.items()) or 'nothing'}")
    else:
        report.line("4", None, f"not bitwise deterministic here: two runs without the monitor differ in "
                    f"{', '.join(f'{k} (max {v:.1e})' for k, v in noise.items())}; ops that warned: "
                    f"{', '.join(sorted(plain.nondeterministic)) or 'none'}")
        exact = [k for k in ("random streams", "step-0 loss") if k not in noise]
        bigger = {k: v for k, v in drift.items() if k in exact or v > 10 * noise.get(k, 0.0)}
        report.line("4", not bigger, f"{label} vs without it: exact for {', '.join(exact) or 'nothing'}, others "
                    f"within 10x the control's difference; beyond: {bigger or 'nothing'}")
    only_monitor = watched.nondeterministic - plain.nondeterministic
    if only_monitor:
        report.line("4", None, f"ops without a deterministic implementation run by the monitor only: "
                    f"{', '.join(sorted(only_monitor))}")


def check_memory(report: Report, device: torch.device) -> None:
    """5. CUDA memory over 200 add_cam calls"""
    if device.type != "cuda":
        report.line("5", None, "CUDA memory over 200 add_cam calls: n/a on cpu", status="n/a")
        return
    model = resnet18().to(device)
    torch.manual_seed(3)
    x = torch.rand(4, 3, 112, 112, device=device)
    seen: dict[int, tuple[int, int]] = {}
    with tempfile.TemporaryDirectory() as logdir:
        writer = SummaryWriter(logdir)
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        for i in range(1, 201):
            writer.add_cam("probe", model, x, target_layer="layer4", methods=("gradcam", "gradcam++"), topk=2,
                           global_step=i)
            if i in (10, 200):
                gc.collect()
                torch.cuda.synchronize(device)
                seen[i] = torch.cuda.memory_allocated(device), torch.cuda.max_memory_allocated(device)
        writer.close()
    (alloc10, peak10), (alloc200, peak200) = seen[10], seen[200]
    report.line("5", alloc200 == alloc10 and peak200 - peak10 <= MIB,
                f"CUDA memory, resnet18 4x3x112x112, gradcam + gradcam++ top-2 on layer4: memory_allocated after "
                f"10 calls {alloc10 / MIB:.2f} MiB, after 200 {alloc200 / MIB:.2f} MiB ({alloc200 - alloc10:+d} B); "
                f"max_memory_allocated {peak10 / MIB:.2f} MiB, {peak200 / MIB:.2f} MiB")


def check_timing(report: Report, device: torch.device) -> None:
    """6. timing"""
    model = resnet18(1000).to(device).eval()
    torch.manual_seed(4)
    x = torch.rand(8, 3, 224, 224, device=device)

    def forward() -> None:
        with torch.no_grad():
            model(x)

    forward_ms = median_ms(forward, device)
    cam_ms = median_ms(lambda: compute_cams(model, x, target_layer="layer4", methods="gradcam"), device)
    report.line("6", None, f"resnet18 8x3x224x224 on {device.type}: gradcam top-1 on layer4 {cam_ms:.1f} ms, "
                f"no_grad forward {forward_ms:.1f} ms, ratio {cam_ms / forward_ms:.2f}x (medians of 10)")


CHECKS = (check_devices_agree, check_autocast, check_training_safety, check_monitor_training, check_memory,
          check_timing)


def main() -> int:
    # cuBLAS reads this when it starts (the first matmul), so it is set before any: deterministic matmuls (check 4).
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (the default), cuda:N or cpu")
    device, why = available_device(parser.parse_args().device)
    if device is None:
        print(f"check_cuda: {why}", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"writer_ext self-check on {device} ({name}); torch {torch.__version__}, torchvision "
          f"{torchvision.__version__}, Python {sys.version.split()[0]}", flush=True)
    report = Report()
    began = time.perf_counter()
    for number, check in enumerate(CHECKS, 1):
        started = time.perf_counter()
        with report.guard(str(number), check.__doc__ or check.__name__):
            check(report, device)
        print(f"    ({time.perf_counter() - started:.1f} s)", flush=True)
    print(f"{report.passed} passed, {len(report.failures)} failed, in {time.perf_counter() - began:.0f} s")
    for failure in report.failures:
        print(f"FAILED {failure}")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
