"""Maps at the input's resolution: FullGrad, Guided Backprop and Guided Grad-CAM.

They need more of the shared pass than a layer's gradient: the gradient at the input, at every biased
layer (FullGrad) and through ReLUs that pass only positive gradients (Guided Backprop). `PixelPass` adds
those to the one forward: the input is differentiated with the target layers in the shared batched
gradient, and the guided gradient is one more batched backward over the same graph, with the nn.ReLU
modules' outputs gated by tensor hooks that are active only during it. Nothing of the model is replaced:
the hooks leave with the pass, also on error.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torch import nn

from writer_ext.methods.base import CamInputs, CamMethod
from writer_ext.methods.gradient import GradCAM
from writer_ext.model.hooks import HookSet
from writer_ext.scaling import min_max

BIASED = (nn.Conv2d, nn.BatchNorm2d)  # FullGrad's bias layers, as pytorch-grad-cam's


def effective_bias(module: nn.Module) -> torch.Tensor:
    """A layer's bias as FullGrad counts it: a convolution's own; a BatchNorm's beta - mu gamma / sqrt(var + eps)
    (its output's offset at zero input, from the running statistics of eval mode)."""
    if isinstance(module, nn.BatchNorm2d):
        if module.running_mean is None:
            raise ValueError("methods: 'fullgrad' needs BatchNorm2d layers with running statistics "
                             "(track_running_stats=True); this model normalises by the batch's own")
        # only affine BatchNorms have a bias: a weight too
        scale = module.running_var + module.eps
        return (module.bias - module.running_mean * module.weight / scale.sqrt()).detach().float()
    return module.bias.detach().float()


class PixelPass(HookSet):
    """What the input-level methods add to the shared forward (a `with` block around it).

    `inputs` is the batch to run the model on: a copy that requires grad when any of them is asked for.
    """

    def __init__(self, model: nn.Module, methods: Sequence[CamMethod], inputs: torch.Tensor):
        super().__init__()
        wants = {need for m in methods for need in m.pixel}
        self.fullgrad, self.guided = "fullgrad" in wants, "guided" in wants
        self.active = bool(wants)
        self.bias_outputs: list[tuple[nn.Module, torch.Tensor]] = []
        self._guiding = False
        self._gated = 0  # nn.ReLU calls seen on the forward
        if wants and inputs.dim() != 4:
            raise ValueError(f"methods: {sorted(m.name for m in methods if m.pixel)} work on (N, C, H, W) images; "
                             f"these inputs have shape {tuple(inputs.shape)}")
        self._relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
        if self.guided and not self._relus:
            raise ValueError("methods: guided backprop changes the backward of the model's nn.ReLU modules and "
                             "this model has none (its activations are functional or of another kind)")
        self._biased = [m for m in model.modules() if isinstance(m, BIASED) and m.bias is not None]
        self.inputs = inputs.detach().requires_grad_(True) if wants else inputs

    def _register(self):
        if self.fullgrad:
            yield from (m.register_forward_hook(self._keep) for m in self._biased)
        if self.guided:
            yield from (m.register_forward_hook(self._gate) for m in self._relus)

    def _keep(self, module: nn.Module, args, output):
        """Keeps every call's output (a module may run twice) and hands a clone downstream (in-place ops)."""
        if isinstance(output, torch.Tensor) and output.requires_grad and output.dim() == 4:
            self.bias_outputs.append((module, output))
            return output.clone()
        return None

    def _gate(self, module: nn.Module, args, output):
        if isinstance(output, torch.Tensor) and output.requires_grad:
            self._gated += 1
            output.register_hook(lambda g: g.clamp(min=0) if self._guiding else None)
        return None

    def keep_reached(self, unreached: Callable[[list[torch.Tensor]], list[int]]) -> None:
        """After the forward: drops the biased outputs that the explained scores do not depend on (a branch the
        output does not use, such as an auxiliary head; `unreached` gives their indices in a list of tensors),
        and refuses an input the scores do not depend on, or guided backprop when no nn.ReLU module ran (the
        model's ReLUs are functional calls)."""
        if self.guided and not self._gated:
            raise ValueError("methods: guided backprop changes the backward of the model's nn.ReLU modules and "
                             "none of them ran on the forward (its ReLUs are functional calls)")
        unreached = unreached([self.inputs, *[out for _, out in self.bias_outputs]])
        if 0 in unreached:
            raise ValueError("methods: the input-level methods differentiate the scores by the input, and the "
                             "scores do not depend on it (the model detaches its input)")
        gone = {i - 1 for i in unreached}
        self.bias_outputs = [kept for i, kept in enumerate(self.bias_outputs) if i not in gone]

    def check_canvas(self, canvas: bool) -> None:
        """FullGrad is refused where the layers see a resized, padded canvas (a detection model)."""
        if self.fullgrad and canvas:
            raise ValueError("methods: 'fullgrad' sums bias-gradients over the input's pixels, but this model's "
                             "layers see a resized, padded canvas (a detection model); use a layer method")

    def tensors(self) -> list[torch.Tensor]:
        """What the shared gradient differentiates besides the target layers: the input and the biased outputs."""
        return [self.inputs, *[out for _, out in self.bias_outputs]] if self.fullgrad else []

    def maps(self, scores: torch.Tensor, grads: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """'fullgrad': (B, K, H, W) maps from the shared gradients of `tensors()`; 'guided': the (K, B, C_in, H, W)
        guided gradient at the input, from one more batched backward (the graph is kept for it)."""
        found: dict[str, torch.Tensor] = {}
        if self.fullgrad:
            detached = [g.detach() for g in grads]  # a ShapleyCAM in the same call makes them with a graph
            found["fullgrad"] = self._fullgrad(detached[0], detached[1:]).transpose(0, 1).contiguous()
        if self.guided:
            self._guiding = True
            try:
                found["guided"] = _batched_input_gradient(scores, self.inputs).float()
            finally:
                self._guiding = False
        return found

    def _fullgrad(self, input_grad: torch.Tensor, bias_grads: list[torch.Tensor]) -> torch.Tensor:
        """sum_c scale(|x_c g_c|) + sum over biased calls and channels of upsample(scale(|b_c g_c|)), (K, B, H, W);
        scale = min-max per map (pytorch-grad-cam's). The channel sum comes before the (linear) upsampling."""
        x = self.inputs.detach().float()
        size = tuple(x.shape[-2:])
        total = min_max((input_grad.float() * x).abs()).sum(2)
        for (module, _), g in zip(self.bias_outputs, bias_grads):
            bias = effective_bias(module).to(g.device).view(1, 1, -1, 1, 1)
            per_layer = min_max((bias * g.float()).abs()).sum(2)  # (K, B, h, w)
            total = total + nn.functional.interpolate(per_layer, size=size, mode="bilinear", align_corners=False)
        return total


def _batched_input_gradient(scores: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """d scores[:, k].sum() / d inputs for every k, (K, B, C, H, W), keeping the graph."""
    k = scores.shape[1]
    one_hot = torch.eye(k, dtype=scores.dtype, device=scores.device).unsqueeze(1).expand(k, *scores.shape)
    try:
        (g,) = torch.autograd.grad(scores, inputs, grad_outputs=one_hot, is_grads_batched=True, retain_graph=True)
        return g
    except RuntimeError:  # an op without a batching rule: one backward per class
        return torch.stack([torch.autograd.grad(scores[:, i].sum(), inputs, retain_graph=True)[0] for i in range(k)])


def guided_saliency(pixel: Optional[dict[str, torch.Tensor]]) -> torch.Tensor:
    """The guided gradient as one map per image and class: max over input channels of |g|, (B, K, H, W)
    (Simonyan et al. 2014's reduction of a colour gradient)."""
    return pixel["guided"].abs().amax(dim=2).transpose(0, 1).contiguous()


class FullGrad(CamMethod):
    """Srinivas & Fleuret 2019, *Full-Gradient Representation for Neural Network Visualization*, as
    pytorch-grad-cam's FullGrad: map = sum_c scale(|x_c dy/dx_c|) + sum_l sum_c up(scale(|b_lc dy/dz_lc|)) over
    every Conv2d and BatchNorm2d with a bias (z_l its output, b_l its bias; BatchNorm's b = beta - mu gamma /
    sqrt(var + eps)); scale = min-max per map, up = bilinear to the input. At the input's resolution and the
    same at every target layer (the layers play no part). Example: a 1-pixel bias-free model is |x dy/dx| scaled.
    """

    name = "fullgrad"
    pixel = ("fullgrad",)

    def compute(self, inputs: CamInputs) -> torch.Tensor:
        return inputs.pixel["fullgrad"]


class GuidedBackprop(CamMethod):
    """Springenberg et al. 2015, *Striving for Simplicity*: dy/dx where every nn.ReLU passes back only positive
    gradients (grad_in = grad_out * [x > 0] * [grad_out > 0], pytorch-grad-cam's GuidedBackpropReLU);
    map = max_c |dy/dx_c|. At the input's resolution, the same at every target layer."""

    name = "guidedbackprop"
    pixel = ("guided",)

    def compute(self, inputs: CamInputs) -> torch.Tensor:
        return guided_saliency(inputs.pixel)


class GuidedGradCAM(CamMethod):
    """Selvaraju et al. 2017, Guided Grad-CAM: the guided backprop map times the layer's Grad-CAM, min-max scaled
    to [0, 1] and upsampled bilinearly to the input (a one-channel form of pytorch-grad-cam's example,
    which multiplies the signed colour gradient before reducing it)."""

    name = "guidedgradcam"
    pixel = ("guided",)

    def compute(self, inputs: CamInputs) -> torch.Tensor:
        guided = guided_saliency(inputs.pixel)
        cam = min_max(GradCAM().compute(inputs))
        up = nn.functional.interpolate(cam, size=tuple(guided.shape[-2:]), mode="bilinear", align_corners=False)
        return guided * up
