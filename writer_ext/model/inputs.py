"""Models that take several inputs: `inputs` may be a tuple (``model(*inputs)``) or a dict
(``model(**inputs)``); `image_input` (an index or key) names the image batch the maps are drawn over
and that Score-CAM, Ablation-CAM, smoothing and the metrics perturb. The other inputs are passed
unchanged, repeated along the batch when the image batch holds whole copies of it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Callable, Optional, Union

import torch
from torch import nn

from writer_ext.model.hooks import run_model

ModelInputs = Union[torch.Tensor, tuple, Mapping]
ImageInput = Union[None, int, str]
ModelCall = Callable[[torch.Tensor], object]


def call_model(model: nn.Module, *args, **kwargs) -> object:
    """The model's output; its own TypeError or RuntimeError on the call becomes a ValueError naming
    `inputs`, with its message."""
    try:
        return model(*args, **kwargs)
    except (TypeError, RuntimeError) as e:
        shapes = [tuple(a.shape) for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        raise ValueError(f"inputs: the model could not run on inputs of shape {', '.join(map(str, shapes))}: "
                         f"{type(e).__name__}: {e}") from e


def _is_image_batch(value: object) -> bool:
    return isinstance(value, torch.Tensor) and value.dim() == 4 and value.is_floating_point()


def _fit(value: object, batch: int, rows: int) -> object:
    """Another input for an image batch of `rows`: repeated when the rows are whole copies of the batch, its
    first row for one image (the layer rule's pass); anything that is not batched passes as it is."""
    if not isinstance(value, torch.Tensor) or value.dim() == 0 or value.shape[0] != batch or rows == batch:
        return value
    if rows % batch == 0:
        return value.repeat(rows // batch, *[1] * (value.dim() - 1))
    return value[:rows] if rows < batch else value


def _entries(inputs: ModelInputs, image_input: ImageInput) -> tuple[list, dict, object]:
    """(the inputs' keys, key -> value, the image input's key) of a tuple or dict of inputs."""
    if isinstance(inputs, tuple):
        keys: list = list(range(len(inputs)))
        entries = dict(enumerate(inputs))
    elif isinstance(inputs, Mapping):
        keys, entries = list(inputs), dict(inputs)
    else:
        raise TypeError(f"inputs must be a torch.Tensor (N, C, H, W), a tuple (model(*inputs)) or a dict "
                        f"(model(**inputs)), got {type(inputs).__name__}")
    if not keys:
        raise ValueError("inputs: the tuple or dict of inputs is empty")
    if image_input is None:
        found = [k for k in keys if _is_image_batch(entries[k])]
        if len(found) != 1:
            raise ValueError(f"image_input: {len(found)} of the inputs are (N, C, H, W) floating-point batches, so "
                             "which one the maps are drawn over is ambiguous; name it (an index or key)")
        image_input = found[0]
    elif isinstance(image_input, bool) or image_input not in entries:
        raise ValueError(f"image_input: {image_input!r} is not one of the inputs' "
                         f"{'indices' if isinstance(inputs, tuple) else 'keys'} {keys}")
    if not isinstance(entries[image_input], torch.Tensor):
        raise TypeError(f"image_input: input {image_input!r} is a {type(entries[image_input]).__name__}, not a tensor")
    return keys, entries, image_input


def _rebuilt(inputs: ModelInputs, values: dict) -> ModelInputs:
    return dict(values) if isinstance(inputs, Mapping) else tuple(values[k] for k in range(len(values)))


def bind_inputs(model: nn.Module, inputs: ModelInputs, image_input: ImageInput = None
                ) -> tuple[torch.Tensor, ModelCall]:
    """(the image batch, a function that runs the model on an image batch in its place)."""
    if isinstance(inputs, torch.Tensor):
        if image_input is not None:
            raise ValueError("image_input: names one of several inputs; inputs is a single tensor")
        return inputs, lambda images: run_model(model, images)
    keys, entries, image_input = _entries(inputs, image_input)
    image = entries[image_input]
    batch = image.shape[0] if image.dim() else 0

    def call(images: torch.Tensor) -> object:
        values = {k: images if k == image_input else _fit(entries[k], batch, images.shape[0]) for k in keys}
        if isinstance(inputs, Mapping):
            return call_model(model, **values)
        return call_model(model, *[values[k] for k in keys])

    return image, call


class ImageModel(nn.Module):
    """A model of several inputs as a function of its image input, for the metrics that perturb only the
    image: row j of an image batch takes the other inputs of image `rows[j]` of the original batch."""

    def __init__(self, model: nn.Module, inputs: ModelInputs, image_input: ImageInput = None) -> None:
        super().__init__()
        self.model = model
        self.inputs = inputs
        _, self.entries, self.key = _entries(inputs, image_input)
        self.image = self.entries[self.key]
        self.batch = self.image.shape[0]

    def rows_of(self, start: int, stop: int, total: int) -> torch.Tensor:
        """The original image of rows start..stop of `total` rows that hold each image's copies in turn."""
        if total % self.batch:
            raise ValueError(f"inputs: {total} rows are not whole copies of the batch of {self.batch} images")
        return torch.arange(start, stop) * self.batch // total

    def inputs_for(self, images: torch.Tensor, rows: torch.Tensor) -> ModelInputs:
        """The inputs with `images` as the image input and the others taken at `rows`."""
        def taken(value: object) -> object:
            batched = isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == self.batch
            return value[rows.to(value.device)] if batched else value

        return _rebuilt(self.inputs, {k: images if k == self.key else taken(v) for k, v in self.entries.items()})

    def forward(self, images: torch.Tensor, rows: Optional[torch.Tensor] = None) -> object:
        values = self.inputs_for(images, self.rows_of(0, images.shape[0], images.shape[0]) if rows is None else rows)
        return call_model(self.model, **values) if isinstance(values, dict) else call_model(self.model, *values)


def image_model(model: nn.Module, inputs: ModelInputs, image_input: ImageInput = None
                ) -> tuple[nn.Module, torch.Tensor]:
    """(the model as a function of its image input, the image batch): `model` and `inputs` as they are for a
    single tensor, an `ImageModel` for several inputs."""
    if isinstance(inputs, torch.Tensor):
        if image_input is not None:
            raise ValueError("image_input: names one of several inputs; inputs is a single tensor")
        return model, inputs
    wrapped = ImageModel(model, inputs, image_input)
    return wrapped, wrapped.image


CLIP_LAYOUTS = ("NCTHW", "NTCHW")


def clip_layout_call(images: torch.Tensor, call: ModelCall, clip_layout: str) -> tuple[torch.Tensor, ModelCall]:
    """Clips as every method sees them, (N, C, T, H, W), and the call that hands them to the model in its
    `clip_layout` ("NTCHW": the model takes (N, T, C, H, W); the maps' axes do not change)."""
    if clip_layout not in CLIP_LAYOUTS:
        raise ValueError(f"clip_layout must be one of {CLIP_LAYOUTS}, got {clip_layout!r}")
    if clip_layout == "NCTHW":
        return images, call
    if images.dim() != 5:
        raise ValueError(f"clip_layout={clip_layout!r} names the axes of 5-D clips; inputs have shape "
                         f"{tuple(images.shape)}")
    return images.transpose(1, 2), lambda clips: call(clips.transpose(1, 2))
