"""What the CUDA checks (cuda_checks.py) are made of: a report of PASS/FAIL lines, seeded models and
inputs, map agreement figures, a model's whole state (to compare bit for bit), a short training run."""

from __future__ import annotations

import statistics
import sys
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
from writer_ext import CamMonitor, compute_cams

MIN_R = 0.999  # Pearson r per map, device against CPU


MAX_DIFF = 0.01  # max |device - CPU| per map, as a fraction of the CPU map's value range


PERTURBATION = ("scorecam", "ablationcam", "sscam", "iscam")


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
        # of its principal component to rounding; KPCA-CAM takes its sign alike); Ablation-CAM on the patch
        # embedding, the one (N, C, H, W) output.
        # No CAM: the ViT's head reads the class token, not the tokens' global average, so `cam` is refused there.
        # No guided backprop either: the ViT has no nn.ReLU (GELUs), so it is refused there.
        Case("vit tokens 2x3x64x64", small_vit, 2, 64, [f"{vit_block}.ln_1"],
             [m for m in every if m not in ("cam", "guidedbackprop", "guidedgradcam")],
             {"eigencam": ["encoder.layers.encoder_layer_0"], "kpcacam": ["encoder.layers.encoder_layer_0"],
              "ablationcam": ["conv_proj"]}),
    ]


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


def maps_of(model: nn.Module, case: Case, methods: list[str], layers: tuple[str, ...],
            device: torch.device) -> dict[str, dict[str, torch.Tensor]]:
    x, targets = case.inputs()
    # seed: the random baseline draws new noise on every call otherwise
    return compute_cams(model, x.to(device), target_layer=list(layers), targets=targets, methods=methods,
                        seed=0).maps


def compare_method(case: Case, method: str, layers: tuple[str, ...], reference: Optional[dict],
                   cpu_model: nn.Module, dev_model: nn.Module, device: torch.device) -> Agreement:
    """One method's maps on the device against those on the CPU (computed here when not given)."""
    expected = reference if reference is not None else maps_of(cpu_model, case, [method], layers, torch.device("cpu"))
    got = maps_of(dev_model, case, [method], layers, device)
    agree = Agreement()
    for layer in layers:
        agree.add(expected[method][layer], got[method][layer])
    return agree


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
