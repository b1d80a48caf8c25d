"""The pictures shown under the maps: checked, turned into uint8 HWC, encoded."""

from __future__ import annotations

import io
from typing import Optional

import numpy as np
import torch
from PIL import Image

from tensorboard_plugin_cam.format import IMAGE_FORMATS, MAX_PICTURES
from writer_ext.scaling import min_max

# Lossless WebP: a fifth to a tenth smaller than PNG on photos and drawings, and no slower to encode
# at this effort (bench/bench_storage.py prints both).
DEFAULT_FORMAT = "webp"
# A clip's frames by default: JPEG, lossy (the maps stay exact numbers), under a third of lossless WebP's bytes,
# 0.56x the 256-colour GIF `add_video` stores of the rendered overlay (bench/bench_video.py prints all).
CLIP_FORMAT = "jpeg"
MAX_SIDE = 16383  # WebP's largest side; a picture this large is over 800 MB as RGB already


def to_numpy(value: object, name: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value
    raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(value).__name__}")


def _minmax_uint8(x: torch.Tensor) -> np.ndarray:
    """Per-image min-max scaling of (B, C, H, W) floats to uint8 (B, H, W, C)."""
    scaled = min_max(x.detach().float().cpu(), dims=(1, 2, 3)).numpy()
    return np.round(scaled * 255).astype(np.uint8).transpose(0, 2, 3, 1)


def check_picture_count(count: int, name: str = "inputs") -> None:
    """Refuses a batch of more pictures than one step may hold (docs/FORMAT.md, Limits), before any work."""
    if count > MAX_PICTURES:
        raise ValueError(f"{name}: {count} images in one sample, more than the {MAX_PICTURES} a step may hold; "
                         "log fewer images per call")


def display_images(images: object, batch: int, *, name: str = "display_images") -> np.ndarray:
    """Checks pictures to show and returns them as uint8 (B, H, W, C), C in {1, 3}.

    Accepted: uint8 (B, H, W, C) or (B, H, W), or floats (B, C, H, W) in [0, 1].
    """
    check_picture_count(batch, "inputs" if name == "display_images" else name)
    x = to_numpy(images, name)
    if x.ndim == 3 and x.dtype == np.uint8:
        x = x[..., None]
    if x.ndim != 4:
        raise ValueError(f"{name} must be uint8 (N, H, W, C) or float (N, C, H, W), got shape {x.shape}")
    if x.shape[0] != batch:
        raise ValueError(f"{name} holds {x.shape[0]} images for a batch of {batch}")
    check_picture_size(x.shape[1:3] if x.dtype == np.uint8 else x.shape[2:4], name)
    if x.dtype == np.uint8:
        hwc = x
    elif np.issubdtype(x.dtype, np.floating):
        if not np.all(np.isfinite(x)) or x.min() < 0 or x.max() > 1:
            raise ValueError(f"{name}: float images must be finite and in [0, 1] (or pass uint8 HWC)")
        hwc = np.round(x.astype(np.float32) * 255).astype(np.uint8).transpose(0, 2, 3, 1)
    else:
        raise TypeError(f"{name} must be uint8 or floating point, got {x.dtype}")
    if hwc.shape[-1] not in (1, 3):
        raise ValueError(f"{name} must have 1 or 3 channels, got shape {x.shape}")
    return np.ascontiguousarray(hwc)


def check_picture_size(size: tuple[int, int], name: str) -> None:
    """Refuses (naming `name`) pictures with an empty side or a side over `MAX_SIDE`, before any pixel is
    converted (an expanded tensor can declare any size without holding it)."""
    if min(size) < 1 or max(size) > MAX_SIDE:
        raise ValueError(f"{name}: pictures must be 1 to {MAX_SIDE} pixels a side, got {tuple(int(s) for s in size)}"
                         " (height, width)")


def images_for(inputs: torch.Tensor, given: Optional[object]) -> np.ndarray:
    """What to show for a batch: `given` if any, else the input min-max scaled per image."""
    batch = inputs.shape[0]
    if given is not None:
        return display_images(given, batch)
    check_picture_count(batch)
    if inputs.shape[1] not in (1, 3):
        raise ValueError(
            f"display_images: the inputs have {inputs.shape[1]} channels, which cannot be shown as a "
            "picture; pass display_images (uint8 HWC or float CHW in [0, 1])"
        )
    check_picture_size(tuple(inputs.shape[-2:]), "display_images")
    return _minmax_uint8(inputs)


def clip_frames(clips: torch.Tensor, given: Optional[object]) -> np.ndarray:
    """The frames to show for a batch of clips (N, C, T, H, W), as uint8 (N, T, H, W, C): `given` if any (uint8
    (N, T, H, W, C) or (N, T, H, W), or floats (N, C, T, H, W) in [0, 1]), else each clip min-max scaled."""
    batch, frames = clips.shape[0], clips.shape[2]
    check_picture_count(batch * frames, "inputs (frames of all clips)")
    if given is None:
        if clips.shape[1] not in (1, 3):
            raise ValueError(f"display_images: the clips have {clips.shape[1]} channels, which cannot be shown as "
                             "pictures; pass display_images (uint8 (N, T, H, W, C) or float (N, C, T, H, W) in [0, 1])")
        check_picture_size(tuple(clips.shape[-2:]), "display_images")
        scaled = min_max(clips.detach().float().cpu(), dims=(1, 2, 3, 4)).numpy()
        return np.round(scaled * 255).astype(np.uint8).transpose(0, 2, 3, 4, 1)
    x = to_numpy(given, "display_images")
    if x.ndim == 4 and x.dtype == np.uint8:
        x = x[..., None]
    if x.ndim != 5:
        raise ValueError(f"display_images of clips must be uint8 (N, T, H, W, C) or float (N, C, T, H, W), got "
                         f"shape {x.shape}")
    uint8 = x.dtype == np.uint8
    n, t = x.shape[0], x.shape[1 if uint8 else 2]
    if (n, t) != (batch, frames):
        raise ValueError(f"display_images holds {n} clips of {t} frames for a batch of {batch} clips of {frames}")
    flat = x.reshape(-1, *x.shape[2:]) if uint8 else x.transpose(0, 2, 1, 3, 4).reshape(-1, x.shape[1], *x.shape[3:])
    shown = display_images(flat, batch * frames)  # each frame checked as a picture
    return shown.reshape(batch, frames, *shown.shape[1:])


def check_image_format(image_format: object, clips: bool = False) -> str:
    """`image_format` checked; None: the default, lossless WebP for images, JPEG for clips' frames."""
    if image_format is None:
        return CLIP_FORMAT if clips else DEFAULT_FORMAT
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {IMAGE_FORMATS} or None, got {image_format!r}")
    return image_format


def encode(image: np.ndarray, image_format: str) -> bytes:
    """One uint8 (H, W, C) picture as lossless WebP, PNG or JPEG bytes (a grey WebP decodes as RGB)."""
    picture = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    buf = io.BytesIO()
    if image_format == "webp":
        picture.save(buf, format="WEBP", lossless=True, method=2, quality=0)  # quality: effort when lossless
    elif image_format == "jpeg":
        picture.save(buf, format="JPEG", quality=90)
    else:
        picture.save(buf, format="PNG")
    return buf.getvalue()
