"""The CUDA checks of writer_ext, run by tests/test_cuda.py when a GPU is present (or as a script that
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

Usage: `./scripts/test.sh tests/test_cuda.py` (skipped without CUDA), or from the repository root
    PYTHONPATH=. python3 tests/cuda_checks.py [--device cuda | cuda:1 | cpu]
"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, TypeVar

import torch
import torchvision
from torch import nn
from torchvision.models.vision_transformer import VisionTransformer

import writer_ext
from writer_ext import CamMonitor, SummaryWriter, add_cam, compute_cams

MIN_R = 0.999  # Pearson r per map, device against CPU
MAX_DIFF = 0.01  # max |device - CPU| per map, as a fraction of the CPU map's value range
PERTURBATION = ("scorecam", "ablationcam")
MIB = 2**20
T = TypeVar("T")
MODULE_HOOKS = (
    "_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs", "_backward_hooks", "_backward_pre_hooks", "_is_full_backward_hook",
)
TENSOR_HOOKS = ("_backward_hooks", "_post_accumulate_grad_hooks")
GLOBAL_HOOKS = (
    "_global_forward_hooks", "_global_forward_hooks_with_kwargs", "_global_forward_hooks_always_called",
    "_global_forward_pre_hooks", "_global_backward_hooks", "_global_backward_pre_hooks",
    "_global_is_full_backward_hook",
)


class Report:
    """Prints one line per check and remembers the failures."""

    def __init__(self) -> None:
        self.failures: list[str] = []
        self.passed = 0

    def line(self, check: str, ok: Optional[bool], text: str, status: str = "") -> None:
        status = status or ("INFO" if ok is None else "PASS" if ok else "FAIL")
        print(f"[{check}] {status:4}  {text}", flush=True)
        if ok is False:
            self.failures.append(f"[{check}] {text}")
        elif ok:
            self.passed += 1

    @contextmanager
    def guard(self, check: str, what: str) -> Iterator[None]:
        """Whatever raises inside is a FAIL line with the last frames of its traceback; the script goes on."""
        try:
            yield
        except Exception as e:  # every error is a finding to report, not a reason to stop
            self.line(check, False, f"{what}: raised {type(e).__name__}: {e}")
            traceback.print_exc(limit=-4, file=sys.stdout)

    def attempt(self, check: str, what: str, fn: Callable[..., T], *args: object) -> Optional[T]:
        """fn(*args), or None after a FAIL line when it raises."""
        with self.guard(check, what):
            return fn(*args)
        return None


# Models and inputs


def resnet18(classes: int = 10) -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=classes)


def small_vit() -> nn.Module:
    torch.manual_seed(0)
    model = VisionTransformer(image_size=64, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128,
                              num_classes=10)
    nn.init.normal_(model.heads.head.weight, std=0.1)  # torchvision starts the head at zero: every gradient would be 0
    return model


@dataclass
class Case:
    """One model and input batch, the methods computed on it and their target layers."""

    name: str
    model: Callable[[], nn.Module]
    batch: int
    size: int
    layers: list[str]
    methods: list[str]
    layers_of: dict[str, list[str]] = field(default_factory=dict)  # methods that need other layers

    def inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A seeded batch on the CPU and fixed (B, 2) target classes (no near-tie in a top-k to flip)."""
        torch.manual_seed(1)
        return torch.rand(self.batch, 3, self.size, self.size), torch.arange(2 * self.batch).view(-1, 2) % 10

    def groups(self) -> dict[tuple[str, ...], list[str]]:
        """The methods by the layers they are computed on: one compute_cams call each."""
        found: dict[tuple[str, ...], list[str]] = {}
        for method in self.methods:
            found.setdefault(tuple(self.layers_of.get(method, self.layers)), []).append(method)
        return found


def cases() -> list[Case]:
    every = list(writer_ext.METHODS)
    vit_block = "encoder.layers.encoder_layer_1"
    return [
        # CAM reads the linear head, which takes layer4's 512 channels, not layer3's 256.
        Case("resnet18 layer3+layer4 2x3x112x112", resnet18, 2, 112, ["layer3", "layer4"],
             [m for m in every if m not in PERTURBATION], {"cam": ["layer4"]}),
        Case("resnet18 layer2 2x3x48x48", resnet18, 2, 48, ["layer2"], list(PERTURBATION)),
        # Tokens after the last block's LayerNorm, as pytorch-grad-cam advises for ViTs (the block's output has
        # grad . activation = 0 per token, LayerNorm being scale invariant, so HiResCAM there is rounding noise);
        # EigenCAM on the block's input (each LayerNorm'd token sums to ~0 over channels, which leaves the sign
        # of its principal component to rounding); Ablation-CAM on the patch embedding, the one (N, C, H, W) output.
        Case("vit tokens 2x3x64x64", small_vit, 2, 64, [f"{vit_block}.ln_1"], every,
             {"eigencam": ["encoder.layers.encoder_layer_0"], "ablationcam": ["conv_proj"]}),
    ]


# Comparisons


@dataclass
class Agreement:
    """How closely maps agree with reference maps: the worst figures over every map compared."""

    r: float = 1.0  # worst Pearson r, over the maps that are not constant
    diff: float = 0.0  # worst max |difference|, as a fraction of the reference map's value range
    constant: int = 0  # reference maps that are constant (all zero after ReLU, say): no r, diff against the tensor
    maps: int = 0
    bitwise: bool = True

    def add(self, reference: torch.Tensor, other: torch.Tensor) -> None:
        """Takes in the maps of one (..., h, w) tensor and those it should equal."""
        self.maps += reference.shape[:-2].numel()
        self.bitwise = self.bitwise and same_bits(reference, other)
        if reference.shape != other.shape:
            self.r, self.diff = 0.0, float("inf")
            return
        a = reference.double().flatten(-2).flatten(0, -2)
        b = other.double().flatten(-2).flatten(0, -2)
        top = a.abs().max().clamp(min=1e-30)
        span = a.amax(1) - a.amin(1)
        flat = span <= 1e-6 * top
        self.constant += int(flat.sum())
        self.diff = max(self.diff, float(((a - b).abs().amax(1) / torch.where(flat, top, span)).max()))
        ac, bc = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
        r = (ac * bc).sum(1) / (ac.norm(dim=1) * bc.norm(dim=1)).clamp(min=1e-300)
        if bool((~flat).any()):
            self.r = min(self.r, float(r[~flat].min()))

    def merge(self, other: Optional[Agreement]) -> None:
        """Takes in another comparison's figures; None (a comparison that raised) fails this one."""
        if other is None:
            self.r, self.diff, self.bitwise = 0.0, float("inf"), False
            return
        self.r, self.diff = min(self.r, other.r), max(self.diff, other.diff)
        self.constant, self.maps = self.constant + other.constant, self.maps + other.maps
        self.bitwise = self.bitwise and other.bitwise

    @property
    def ok(self) -> bool:
        return self.r >= MIN_R and self.diff <= MAX_DIFF and self.constant < self.maps

    def __str__(self) -> str:
        constant = f", {self.constant} of them constant" if self.constant else ""
        return (f"worst r {self.r:.7f}, max |diff| {self.diff:.1e} of the map range ({self.maps} maps{constant})"
                f"{', bitwise equal' if self.bitwise and self.maps else ''}")


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-for-bit equality (NaN equals NaN, -0.0 differs from 0.0)."""
    return (a.dtype == b.dtype and a.shape == b.shape
            and torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8)))


def streams(device: torch.device) -> list[str]:
    return ["CPU", "CUDA"] if device.type == "cuda" else ["CPU"]


def rng_states(device: torch.device) -> list[torch.Tensor]:
    states = [torch.get_rng_state()]
    if device.type == "cuda":
        states.append(torch.cuda.get_rng_state(device))
    return states


def _hooks(obj: object, names: tuple[str, ...]) -> dict[str, object]:
    """The named hook dicts of an object as lists of (handle id, hook), other attributes as they are."""
    values = {name: getattr(obj, name, None) for name in names}
    return {name: list(v.items()) if isinstance(v, dict) else v for name, v in values.items()}


def all_hooks(model: nn.Module) -> dict[str, object]:
    hooks: dict[str, object] = {f"hooks of module {n or '(root)'}": _hooks(m, MODULE_HOOKS)
                                for n, m in model.named_modules()}
    hooks.update({f"hooks of parameter {n}": _hooks(p, TENSOR_HOOKS) for n, p in model.named_parameters()})
    hooks["global module hooks"] = _hooks(torch.nn.modules.module, GLOBAL_HOOKS)
    return hooks


@dataclass
class State:
    """What a training-safe call must leave as it found it."""

    grads: dict[str, tuple[Optional[torch.Tensor], Optional[torch.Tensor]]]  # (the tensor, a copy of its values)
    tensors: dict[str, torch.Tensor]  # parameters and buffers
    training: dict[str, bool]
    requires_grad: dict[str, bool]
    hooks: dict[str, object]
    rng: list[torch.Tensor]


def snapshot(model: nn.Module, device: torch.device) -> State:
    params = dict(model.named_parameters())
    return State(
        grads={n: (p.grad, None if p.grad is None else p.grad.clone()) for n, p in params.items()},
        tensors={n: t.detach().clone() for n, t in [*params.items(), *model.named_buffers()]},
        training={n: m.training for n, m in model.named_modules()},
        requires_grad={n: p.requires_grad for n, p in params.items()},
        hooks=all_hooks(model),
        rng=rng_states(device),
    )


def changes(model: nn.Module, before: State, device: torch.device) -> list[str]:
    """What differs from `before`, one short phrase each; empty when nothing does."""
    params = dict(model.named_parameters())
    found = []
    for name, (grad, values) in before.grads.items():
        now = params[name].grad
        if now is not grad:
            found.append(f"{name}.grad is {'None' if now is None else 'another tensor'}")
        elif grad is not None and not same_bits(grad, values):
            found.append(f"{name}.grad values")
    now_tensors = dict([*params.items(), *model.named_buffers()])
    found += [f"{n} values" for n, t in before.tensors.items() if not same_bits(now_tensors[n].detach(), t)]
    found += [f"{n or '(root)'}.training" for n, m in model.named_modules() if m.training != before.training[n]]
    found += [f"{n}.requires_grad" for n, p in params.items() if p.requires_grad != before.requires_grad[n]]
    hooks = all_hooks(model)
    found += [where for where in before.hooks if hooks.get(where) != before.hooks[where]]
    if not all(same_bits(a, b) for a, b in zip(rng_states(device), before.rng)):
        found.append("random stream")
    return found


@contextmanager
def exact_float32() -> Iterator[None]:
    """TF32 off for matmuls and cuDNN convolutions (cuDNN's is on by default), restored afterwards."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


# The checks


def maps_of(model: nn.Module, case: Case, methods: list[str], layers: tuple[str, ...],
            device: torch.device) -> dict[str, dict[str, torch.Tensor]]:
    x, targets = case.inputs()
    return compute_cams(model, x.to(device), target_layer=list(layers), targets=targets, methods=methods).maps


def compare_method(case: Case, method: str, layers: tuple[str, ...], reference: Optional[dict],
                   cpu_model: nn.Module, dev_model: nn.Module, device: torch.device) -> Agreement:
    """One method's maps on the device against those on the CPU (computed here when not given)."""
    expected = reference if reference is not None else maps_of(cpu_model, case, [method], layers, torch.device("cpu"))
    got = maps_of(dev_model, case, [method], layers, device)
    agree = Agreement()
    for layer in layers:
        agree.add(expected[method][layer], got[method][layer])
    return agree


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
                plain = compute_cams(model, x, target_layer=list(layers), targets=targets, methods=methods)
                before = snapshot(model, device)
                with torch.autocast(device.type, dtype=dtype):
                    mixed = compute_cams(model, x, target_layer=list(layers), targets=targets, methods=methods)
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


@dataclass
class Run:
    losses: list[torch.Tensor]
    grads: list[list[torch.Tensor]]
    state: dict[str, torch.Tensor]
    rng: list[torch.Tensor]
    nondeterministic: set[str]
    logged: int  # steps the monitor logged


def train(model: nn.Module, device: torch.device, steps: int, monitor: Optional[CamMonitor] = None) -> Run:
    """A few SGD steps on random data in a random order (dropout and BatchNorm in train mode)."""
    torch.manual_seed(123)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    data = torch.rand(32, 3, 64, 64, device=device)
    labels = torch.randint(0, 10, (32,), device=device)
    losses, grads, logged = [], [], 0
    model.train()  # once, as many loops do: a monitor that left eval mode behind would change the next steps
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(steps):
            idx = torch.randperm(32, device=device)[:8]
            loss = nn.functional.cross_entropy(model(data[idx]), labels[idx])
            optimizer.zero_grad()
            loss.backward()
            if monitor is not None:
                logged += monitor.step(step) is not None
            grads.append([p.grad.clone() for p in model.parameters()])
            optimizer.step()
            losses.append(loss.detach().clone())
    ops = {str(w.message).split(" does not have")[0] for w in caught if "deterministic" in str(w.message)}
    return Run(losses, grads, {k: v.clone() for k, v in model.state_dict().items()}, rng_states(device), ops, logged)


def run_differences(a: Run, b: Run) -> dict[str, float]:
    """What differs between two runs: name -> max |difference| (0 for a bitwise difference of equal values)."""
    def gap(x: torch.Tensor, y: torch.Tensor) -> float:
        return float((x.double() - y.double()).abs().max()) if x.is_floating_point() else float(not torch.equal(x, y))

    found: dict[str, float] = {}
    pairs = {
        "losses": list(zip(a.losses, b.losses)),
        "gradients": [pair for step in zip(a.grads, b.grads) for pair in zip(*step)],
        "parameters": [(a.state[k], b.state[k]) for k in a.state if "running" not in k and "batches" not in k],
        "BatchNorm statistics": [(a.state[k], b.state[k]) for k in a.state if "running" in k or "batches" in k],
        "random streams": list(zip(a.rng, b.rng)),
    }
    for name, items in pairs.items():
        unequal = [(x, y) for x, y in items if not same_bits(x, y)]
        if unequal:
            found[name] = max(gap(x, y) for x, y in unequal) if name != "random streams" else 1.0
    if not same_bits(a.losses[0], b.losses[0]):
        found["step-0 loss"] = gap(a.losses[0], b.losses[0])
    return found


@contextmanager
def deterministic() -> Iterator[None]:
    """Deterministic algorithms (warn-only, so an op without one is named, not fatal), restored afterwards."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2], saved[3]


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
        with CamMonitor(logdir, copy.deepcopy(start), probes, every=1, target_layer="features",
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


def median_ms(fn: Callable[[], object], device: torch.device, repeats: int = 10, warmup: int = 3) -> float:
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


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


# Entry point


def available_device(name: str) -> tuple[Optional[torch.device], str]:
    """The device to check, or None and why it cannot be."""
    try:
        device = torch.device(name)
    except RuntimeError as e:
        return None, f"--device {name!r} is not a device name: {e}"
    if device.type == "cpu":
        return device, ""
    if device.type != "cuda":
        return None, f"--device {name!r}: only cuda and cpu are supported"
    if not torch.cuda.is_available():
        return None, (f"--device {name!r}: CUDA is not available (torch {torch.__version__}, "
                      f"built for CUDA {torch.version.cuda})")
    index = torch.cuda.current_device() if device.index is None else device.index
    if index >= torch.cuda.device_count():
        return None, f"--device {name!r}: there are only {torch.cuda.device_count()} CUDA devices"
    torch.cuda.set_device(index)
    return torch.device("cuda", index), ""


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
