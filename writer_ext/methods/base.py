"""What every CAM method receives, and the base class that owns the shared steps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn


@dataclass
class CamInputs:
    """Everything a method may use for one layer.

    inputs: (B, C_in, H, W) the model's input batch; clips (B, C_in, T, H, W).
    activations: (B, C, h, w) float32, the layer's output; clips (B, C, t, h, w): every (h, w) below is
        then (t, h, w), and the methods pool over `positions` (time with space).
    gradients: (K, B, C, h, w) float32, d target score k / d activations, or
        None when no requested method needs gradients.
    class_ids: (B, K) target classes, or None when targets came from a callable.
    scores: (B, K) the explained scores of the unperturbed batch.
    target_scores: for methods that run the model again: maps the output of a
        forward of n perturbed copies of the whole batch (n * B rows, each
        copy in the batch's image order) to their (n, B, K) scores.
    slots_per_forward: the most copies of the batch one such forward may hold.
    eigen_smooth: replace the channel sum by the first principal component.
    head: the nn.Linear whose result is the model's output, and its input
        (for CAM; None when not asked for or when no Linear made the output).
    generator: where the random baseline draws its noise.
    layer_shape: the layer's own (N, C, H, W) output shape when `activations`
        is a crop of it (a detection model's padded canvas), else None.
    hessian: (K, B, C, h, w) H_k A, the Hessian of score k with respect to the activations times the
        activations (ShapleyCAM), or None when no requested method needs it.
    pixel: the pass's maps and gradients at the input's resolution, shared by every layer
        (`writer_ext.methods.input_level.PixelPass.maps`), or None when no requested method needs them.
    """

    model: Callable[[torch.Tensor], object]  # runs the model on an image batch (its other inputs bound)
    layer: str
    module: nn.Module
    inputs: torch.Tensor
    activations: torch.Tensor
    gradients: Optional[torch.Tensor]
    class_ids: Optional[torch.Tensor]
    scores: torch.Tensor
    target_scores: Callable[[object], torch.Tensor]
    slots_per_forward: int
    eigen_smooth: bool = False
    head: Optional[tuple[nn.Module, torch.Tensor]] = None
    generator: Optional[torch.Generator] = None
    layer_shape: Optional[torch.Size] = None
    hessian: Optional[torch.Tensor] = None
    pixel: Optional[dict[str, torch.Tensor]] = None


def positions(x: torch.Tensor, lead: int) -> tuple[int, ...]:
    """The axes of `x` after its first `lead`: a map's positions, (h, w), or (t, h, w) for a clip."""
    return tuple(range(lead, x.dim()))


class CamMethod:
    """A class activation map method: its `weights` are its paper's formula.

    Most CAM methods are a weighted sum of the activation channels; a subclass
    gives the weights (shape (B, K, C), or (B, K, C, h, w) for element-wise
    methods) and whether the sum is rectified. Methods that are not a weighted
    sum override `compute`.
    """

    name: str = ""
    uses_gradients: bool = True
    needs_head: bool = False  # the classifier head's call (CamInputs.head)
    uses_hessian: bool = False  # the Hessian-vector products (CamInputs.hessian): a double backward
    pixel: tuple[str, ...] = ()  # what of `PixelPass` it reads (CamInputs.pixel): "fullgrad", "guided"
    relu: bool = True

    def weights(self, inputs: CamInputs) -> torch.Tensor:
        raise NotImplementedError

    def objective(self, logits: torch.Tensor, class_ids: torch.Tensor) -> Optional[torch.Tensor]:
        """The (B, K) scores this method explains instead of the targets' (None: the targets' own), computed
        differentiably from the (B, classes) logits: the engine adds them as rows of the shared backward, and
        the method's `CamInputs` carries their gradients and values."""
        return None

    @staticmethod
    def targets(inputs: CamInputs) -> int:
        """K, the number of target classes per image."""
        if inputs.gradients is not None:
            return inputs.gradients.shape[0]
        return 1 if inputs.class_ids is None else inputs.class_ids.shape[1]

    def compute(self, inputs: CamInputs) -> torch.Tensor:
        """The raw (B, K, h, w) maps, not normalised.

        With `eigen_smooth`, the weighted channels' first principal component
        replaces their sum (pytorch-grad-cam's eigen_smooth), which removes noise.
        """
        w = self.weights(inputs)
        a = inputs.activations
        if inputs.eigen_smooth:
            per_channel = w.reshape(*w.shape, *[1] * (a.dim() - 2)) if w.dim() == 3 else w
            maps = principal_maps(per_channel * a.unsqueeze(1))
        elif w.dim() == 3:
            maps = torch.einsum("bkc,bc...->bk...", w, a)
        else:
            maps = (w * a.unsqueeze(1)).sum(2)
        return torch.relu(maps) if self.relu else maps


def _top_eigenvectors(gram: torch.Tensor, block: int = 4, max_iter: int = 60, tol: float = 1e-5):
    """Top eigenvalue and unit eigenvector of each symmetric PSD matrix in a batch (N, n, n).

    Block power iteration with a Rayleigh-Ritz step on `block` vectors: a few
    small matmuls instead of a full eigendecomposition. It stops when every
    residual |G v - l v| is below `tol` * l; matrices whose spectrum is too flat
    to converge in `max_iter` steps fall back to `torch.linalg.eigh`.
    """
    n = gram.shape[-1]
    if n <= 2 * block:
        values, vectors = torch.linalg.eigh(gram)
        return values[:, -1], vectors[..., -1]
    start = torch.randn(n, block, generator=torch.Generator().manual_seed(0), dtype=gram.dtype)
    q = torch.linalg.qr(gram @ start.to(gram.device))[0]
    for _ in range(max_iter):
        q = torch.linalg.qr(gram @ q)[0]
        small_values, small_vectors = torch.linalg.eigh(q.mT @ gram @ q)
        value, vector = small_values[:, -1], (q @ small_vectors[..., -1:]).squeeze(-1)
        residual = (gram @ vector.unsqueeze(-1)).squeeze(-1) - value[:, None] * vector
        if bool((residual.norm(dim=-1) <= tol * value.abs().clamp(min=1e-30)).all()):
            return value, vector
    values, vectors = torch.linalg.eigh(gram)
    return values[:, -1], vectors[..., -1]


def first_component(x: torch.Tensor) -> torch.Tensor:
    """Projection of (N, C, h, w) features on their first principal component, (N, h, w)
    (clips: (N, C, t, h, w) -> (N, t, h, w), every (t, h, w) position a sample).

    The h*w positions are the samples and the C channels the features, centred
    as in EigenCAM. The top eigenvector of the smaller Gram matrix (C x C or
    hw x hw) gives the same projection as an SVD, several times faster. A
    principal direction's sign is arbitrary, so it is chosen to make the
    projection agree with the channel sum, where positive activation lies.
    """
    n, c = x.shape[:2]
    rows = x.flatten(2).transpose(1, 2)  # (N, hw, C)
    centred = rows - rows.mean(dim=1, keepdim=True)
    if rows.shape[1] <= c:
        value, vector = _top_eigenvectors(centred @ centred.transpose(1, 2))
        projection = vector * value.clamp(min=0).sqrt()[:, None]
    else:
        _, vector = _top_eigenvectors(centred.transpose(1, 2) @ centred)
        projection = (centred @ vector.unsqueeze(-1)).squeeze(-1)
    sign = torch.sign((projection * rows.sum(-1)).sum(-1))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    return (projection * sign[:, None]).view(n, *x.shape[2:])


def principal_maps(weighted: torch.Tensor) -> torch.Tensor:
    """`first_component` of each (image, target)'s weighted channels: (B, K, C, h, w) -> (B, K, h, w)."""
    b, k = weighted.shape[:2]
    return first_component(weighted.flatten(0, 1)).view(b, k, *weighted.shape[3:])


def objectives(methods: list[CamMethod], logits: Optional[torch.Tensor],
               class_ids: Optional[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Method name -> the (B, K) scores of each method that explains an `objective` of its own; a ValueError
    naming `methods` when one needs class logits and the targets have none (a callable or a target kind)."""
    found: dict[str, torch.Tensor] = {}
    for method in methods:
        if type(method).objective is CamMethod.objective:
            continue
        if logits is None or class_ids is None:
            raise ValueError(f"methods: {method.name!r} compares the target class with other classes, so it needs "
                             "class targets of (N, classes) logits; targets given as a callable or a target kind "
                             "have none")
        if logits.shape[1] < 2:
            raise ValueError(f"methods: {method.name!r} compares the target class with other classes; this model "
                             "has one output")
        found[method.name] = method.objective(logits, class_ids)
    return found
