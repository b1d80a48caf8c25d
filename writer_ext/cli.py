"""The `tensorboard-cam` command. `tensorboard-cam eval` scores CAM methods over an image folder
(`writer_ext.evaluate`) and logs the result for the tab's Data set view; under
`torchrun --nproc_per_node N -m writer_ext.cli eval ...` each process scores its share (gloo on the
CPU, NCCL on GPUs) and rank 0 writes.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Optional, Sequence

import torch
import torch.distributed as dist
from torch import nn

from writer_ext.methods import METHODS
from writer_ext.metrics.confidence import METRICS

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def load_model(spec: str, weights: Optional[str], num_classes: Optional[int]) -> nn.Module:
    """`torchvision:NAME`, `timm:NAME` or `package.module:callable`, built without downloading anything,
    then given the state dict in `weights` (a checkpoint's "state_dict" or "model" entry also works)."""
    source, _, name = spec.partition(":")
    if not name:
        raise ValueError(f"--model must be torchvision:NAME, timm:NAME or module:callable, got {spec!r}")
    extra = {} if num_classes is None else {"num_classes": num_classes}
    if source == "torchvision":
        import torchvision

        model = torchvision.models.get_model(name, weights=None, **extra)
    elif source == "timm":
        try:
            import timm
        except ImportError as e:
            raise ValueError("--model timm:... needs timm (pip install timm)") from e
        model = timm.create_model(name, pretrained=False, **extra)
    else:
        model = getattr(importlib.import_module(source), name)(**extra)
    if weights is not None:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        for key in ("state_dict", "model"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
        model.load_state_dict(state)
    return model.eval()


def image_folder(root: str, size: int, normalize: str):
    """An ImageFolder of `root` (one subfolder per class), resized and centre-cropped to `size`."""
    from torchvision import datasets, transforms

    steps = [transforms.Resize(size), transforms.CenterCrop(size), transforms.ToTensor()]
    if normalize == "imagenet":
        steps.append(transforms.Normalize(*IMAGENET))
    return datasets.ImageFolder(root, transform=transforms.Compose(steps))


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="tensorboard-cam", description=__doc__.split("\n\n")[0])
    commands = top.add_subparsers(dest="command", required=True)
    ev = commands.add_parser(
        "eval", help="score CAM methods over an image folder and log the result",
        description="Scores CAM methods over an image folder (one subfolder per class, as torchvision's "
                    "ImageFolder) and logs the result for the Data set view of the Activations & CAM tab. "
                    "Under torchrun each process scores its share. A run stopped with --checkpoint resumes "
                    "when started again with the same arguments.")
    ev.add_argument("--model", required=True, help="torchvision:NAME, timm:NAME or package.module:callable")
    ev.add_argument("--weights", help="a state dict saved with torch.save (default: the model as built)")
    ev.add_argument("--num-classes", type=int, help="passed to the model's constructor")
    ev.add_argument("--data", required=True, help="an image folder: one subfolder of images per class")
    ev.add_argument("--logdir", required=True, help="the TensorBoard log directory to write to")
    ev.add_argument("--methods", default="gradcam", help=f"comma-separated, from {', '.join(METHODS)}")
    ev.add_argument("--target-layer", help="a layer name (default: the last one with a spatial output)")
    ev.add_argument("--targets", choices=("predicted", "label"), default="predicted",
                    help="explain the predicted class (default) or the label")
    ev.add_argument("--metrics", default="all", help=f"'all' or comma-separated, from {', '.join(METRICS)}")
    ev.add_argument("--steps", type=int, default=16, help="deletion/insertion steps (default 16)")
    ev.add_argument("--image-size", type=int, default=224, help="resize and centre-crop to this (default 224)")
    ev.add_argument("--normalize", choices=("imagenet", "none"), default="imagenet",
                    help="input normalisation after scaling to [0, 1] (default: ImageNet's mean and std)")
    ev.add_argument("--batch-size", type=int, default=32, help="images per batch and process (default 32)")
    ev.add_argument("--workers", type=int, default=0, help="data loading processes per process (default 0)")
    ev.add_argument("--worst", type=int, default=8, help="worst and best images kept per method (default 8)")
    ev.add_argument("--no-baseline", action="store_true", help="do not score the random baseline")
    ev.add_argument("--tag", default="eval", help="the series' tag (default eval)")
    ev.add_argument("--step", type=int, help="the global step to log at (e.g. the checkpoint's epoch)")
    ev.add_argument("--checkpoint", help="save totals here after every batch; resume from them")
    ev.add_argument("--device", help="cpu, cuda (default: cuda:LOCAL_RANK when CUDA is there, else cpu)")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    return top


def _table(result) -> str:
    lines = ["method".ljust(24) + "".join(m[:22].rjust(24) for m in result.metrics)]
    for key, means in result.means.items():
        cells = [f"{means[m]:.4f} ±{(result.intervals[key][m][1] - result.intervals[key][m][0]) / 2:.4f}"
                 for m in result.metrics]
        lines.append(key.ljust(24) + "".join(c.rjust(24) for c in cells))
    return "\n".join(lines)


def run_eval(args: argparse.Namespace) -> None:
    """`tensorboard-cam eval`: joins torchrun's process group when there is one, evaluates, logs, prints."""
    from writer_ext import SummaryWriter
    from writer_ext.evaluation import ranks
    from writer_ext.evaluation.loop import evaluate

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(args.device or (f"cuda:{local}" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if distributed:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        metrics = True if args.metrics == "all" else [m for m in args.metrics.split(",") if m]
        model = load_model(args.model, args.weights, args.num_classes).to(device)
        data = image_folder(args.data, args.image_size, args.normalize)
        rank = ranks.world()[0]
        result = evaluate(model, data, methods=args.methods.split(","), target_layer=args.target_layer,
                          targets=args.targets, metrics=metrics, tag=args.tag, batch_size=args.batch_size,
                          worst=args.worst, baseline=not args.no_baseline, steps=args.steps,
                          checkpoint=args.checkpoint, num_workers=args.workers, progress=not args.quiet)
        if rank == 0:
            with SummaryWriter(args.logdir) as writer:
                writer.add_evaluation(args.tag, result, class_names=data.classes, global_step=args.step)
            print(f"{result.count} images, {result.seconds:.1f} s ({result.count / max(result.seconds, 1e-9):.1f} "
                  f"images/s); means with 95% intervals:\n{_table(result)}")
    finally:
        if distributed:
            dist.destroy_process_group()


def main(argv: Optional[Sequence[str]] = None) -> None:
    """The console script's entry point."""
    args = parser().parse_args(argv)
    try:
        run_eval(args)
    except (ValueError, TypeError, FileNotFoundError) as e:
        sys.exit(f"tensorboard-cam {args.command}: {e}")


if __name__ == "__main__":
    main()
