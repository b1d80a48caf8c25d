"""`target_layer=None` on third-party model zoos, beside torchcam 0.5.0's automatic choice on the same models.

Zoos: torchvision (classification, detection, segmentation, optical flow; every model but the quantized
ones), timm (the first model of every architecture module) and Hugging Face transformers (every
image-classification model type, from its default config with at most 2 layers per stage). Random weights,
small inputs, each model in its own forked process (the libraries imported once, before) with a time limit.
Per model: `compute_cams(model, inputs, target_layer=None)` with the target its kind needs (class ids; a
detection's box; a segmentation mask; a callable for optical flow, whose two frames are a tuple with
image_input=0), and torchcam's `GradCAM(model)` on the logits where a model has them. Each outcome is one of

- ok: a map that is not constant, at a layer of stride > 4 (or one the warning calls a stem, all there is);
- refused: a ValueError/TypeError whose message starts with the argument to change (target_layer, reshape_transform,
  inputs, image_input, targets, model);
- flagged: a map flagged constant (`CamResult.constant`), the warning naming the cause;
- bad: anything else (a raw error, an unflagged constant map, a layer at stride <= 4 not said to be a stem);
- unbuilt / timeout: the model could not be built, or run once as built, or not in the limit (not counted).

torchcam's column is "good" when its extractor returned a finite, non-constant map.

Usage: python bench/bench_zoo.py [--quick] [--zoo torchvision timm transformers] [--limit S] [--only NAME]
(--quick: about 40 models, a few minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
import warnings
from collections import Counter

ARGUMENTS = ("target_layer", "reshape_transform", "inputs", "image_input", "targets", "model")
QUICK_TV = ["resnet18", "alexnet", "vgg11", "squeezenet1_0", "densenet121", "googlenet", "inception_v3",
            "mobilenet_v2", "mobilenet_v3_small", "shufflenet_v2_x0_5", "mnasnet0_5", "efficientnet_b0",
            "regnet_y_400mf", "convnext_tiny", "vit_b_16", "swin_t", "maxvit_t",
            "fasterrcnn_mobilenet_v3_large_320_fpn", "fasterrcnn_resnet50_fpn", "retinanet_resnet50_fpn",
            "ssdlite320_mobilenet_v3_large",
            "fcn_resnet50", "lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large", "raft_small"]
QUICK_TIMM = ["resnet18", "convnext_atto", "efficientnet_b0", "vit_tiny_patch16_224", "deit_tiny_patch16_224",
              "swin_tiny_patch4_window7_224", "crossvit_tiny_240", "tnt_s_patch16_224", "levit_128s", "coat_tiny"]
QUICK_HF = ["vit", "convnext", "swin", "resnet", "dinov2", "perceiver", "hiera", "poolformer"]


def tv_kind(name: str) -> str:
    import torchvision

    for kind in ("detection", "segmentation", "optical_flow"):
        if name in torchvision.models.list_models(module=getattr(torchvision.models, kind)):
            return kind
    return "classification"


def list_models(zoo: str, quick: bool) -> list[str]:
    if zoo == "torchvision":
        import torchvision

        if quick:
            return QUICK_TV
        quantized = set(torchvision.models.list_models(module=torchvision.models.quantization))
        return [n for n in torchvision.models.list_models() if n not in quantized]
    if zoo == "timm":
        import timm

        return QUICK_TIMM if quick else [timm.list_models(module=m)[0] for m in timm.list_modules()
                                         if timm.list_models(module=m)]
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES

    return QUICK_HF if quick else list(MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES)


# ---- one model, in its own process -----------------------------------------------------------------------------


def _tv_case(name: str):
    """(model, inputs, targets) for a torchvision model of any kind."""
    import torch
    import torchvision
    from torchvision.models import get_model

    from writer_ext.targets import Detection, SemanticSegmentation

    kind = tv_kind(name)
    if kind == "classification":
        size = 224 if any(k in name for k in ("vit", "swin", "maxvit")) else 96 if "inception" in name else 64
        return get_model(name, weights=None, num_classes=4).eval(), torch.rand(1, 3, size, size), None
    if kind == "segmentation":
        model = get_model(name, weights=None, weights_backbone=None, num_classes=3).eval()
        return model, torch.rand(1, 3, 64, 64), SemanticSegmentation(0, mask=torch.ones(64, 64))
    if kind == "optical_flow":
        model = get_model(name, weights=None).eval()
        frames = (torch.rand(1, 3, 128, 128), torch.rand(1, 3, 128, 128))
        return model, frames, lambda flows: flows[-1].abs().mean((1, 2, 3))[:, None]  # image_input=0 below
    extra = {} if name.startswith("ssd") else dict(min_size=64, max_size=64)
    extra.update(box_score_thresh=0.0) if "rcnn" in name else extra.update(score_thresh=0.0) \
        if name.startswith(("retinanet", "fcos")) else None
    model = get_model(name, weights=None, weights_backbone=None, num_classes=3, **extra).eval()
    size = 320 if name.startswith("ssdlite") else 300 if name.startswith("ssd") else 64
    x = torch.rand(1, 3, size, size)
    with torch.no_grad():
        found = model(x)[0]
    boxes = found["boxes"]
    good = ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).nonzero()
    if not len(good):
        raise RuntimeError("unbuilt: the random detector finds no box to explain")
    k = int(good[0])
    del torchvision
    return model, x, Detection(boxes[k], [int(found["labels"][k])])


def _timm_case(name: str):
    import timm
    import torch

    model = timm.create_model(name, pretrained=False, num_classes=4).eval()
    size = tuple(model.pretrained_cfg.get("input_size", (3, 224, 224)))
    return model, torch.rand(1, *size), None


def _hf_case(name: str):
    import torch
    import transformers

    config = transformers.AutoConfig.for_model(name)
    own = config.to_dict()  # its own fields, not the properties some configs derive from them
    for attr in ("num_hidden_layers", "num_layers", "num_self_attends_per_block"):
        if isinstance(own.get(attr), int):
            setattr(config, attr, min(2, own[attr]))
    if isinstance(own.get("depths"), (list, tuple)):
        config.depths = [min(2, d) for d in own["depths"]]
    config.num_labels = 4
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES as NAMES

    classes = NAMES[name]  # several (Perceiver's learned, Fourier and conv inputs): the first, which auto won't pick
    model = (transformers.AutoModelForImageClassification.from_config(config) if isinstance(classes, str) else
             getattr(transformers, classes[0])(config)).eval()
    size = getattr(config, "image_size", 224)
    size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
    return model, torch.rand(1, getattr(config, "num_channels", 3), *size[-2:]), None


def _torchcam(model, x) -> tuple[str, str]:
    """(torchcam's layer, "good" | "bad: why")."""
    import torch
    from torchcam.methods import GradCAM

    from writer_ext.targets.kinds import logits_of

    if not isinstance(x, torch.Tensor):
        return "-", "bad: several inputs"
    try:
        with GradCAM(model, input_shape=tuple(x.shape[1:])) as extractor:
            logits = logits_of(model(x))
            cams = extractor(logits.argmax(1).tolist(), logits)
        maps = torch.stack([c.float() for c in cams])
        good = bool(torch.isfinite(maps).all()) and float(maps.max() - maps.min()) > 0
        return ",".join(extractor.target_names), "good" if good else "bad: constant or non-finite map"
    except Exception as e:  # torchcam's own failure is its column's result
        return "-", f"bad: {type(e).__name__}: {str(e)[:80]}"


def run_one(zoo: str, name: str) -> dict:
    import torch

    from writer_ext import compute_cams

    torch.manual_seed(0)
    try:
        model, x, targets = {"torchvision": _tv_case, "timm": _timm_case, "transformers": _hf_case}[zoo](name)
        with torch.no_grad():  # a model that cannot run as built is the bench's problem, not a refusal
            model(*x) if isinstance(x, tuple) else model(x)
    except Exception as e:
        return {"status": "unbuilt", "message": f"{type(e).__name__}: {str(e)[:120]}"}
    row = {"status": "bad", "layer": "-", "message": ""}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = compute_cams(model, x, target_layer=None, targets=targets, methods=("gradcam",),
                                  image_input=None if isinstance(x, torch.Tensor) else 0)
        except (ValueError, TypeError) as e:
            named = str(e).startswith(ARGUMENTS)
            row.update(status="refused" if named else "bad", message=f"{type(e).__name__}: {e}")
            result = None
        except Exception as e:
            row.update(message=f"raw {type(e).__name__}: {str(e)[:200]}")
            result = None
    said = " | ".join(str(w.message) for w in caught if "target_layer=None" in str(w.message))
    if result is not None:
        (layer,) = result.layers
        maps = result.maps["gradcam"][layer]
        flags = [c for row_ in result.constant["gradcam"][layer] for c in row_ if c]
        height, width = x.shape[-2:] if isinstance(x, torch.Tensor) else x[0].shape[-2:]
        stride = (height * width / (maps.shape[-1] * maps.shape[-2])) ** 0.5
        constant = float(maps.max() - maps.min()) == 0
        row.update(layer=layer, message=said[:200])
        if flags:
            row.update(status="flagged", message=flags[0])
        elif constant:
            row.update(status="bad", message="constant map, not flagged")
        elif stride <= 4 and "a stem" not in said:
            row.update(status="bad", message=f"stride {stride:.0f}, a stem not said: {said[:160]}")
        else:
            row.update(status="ok")
    row["torchcam_layer"], row["torchcam"] = _torchcam(model, x)
    return row


# ---- the driver ------------------------------------------------------------------------------------------------


def _child(conn, zoo: str, name: str) -> None:
    import torch

    torch.set_num_threads(2)
    try:
        conn.send(run_one(zoo, name))
    except BaseException as e:  # the child's own failure is the model's row
        conn.send({"status": "bad", "message": f"raw {type(e).__name__}: {str(e)[:200]}"})
    conn.close()


def run_forked(zoo: str, name: str, limit: float) -> dict:
    """`run_one` in a forked process (the parent imported the libraries once), killed after `limit` seconds."""
    parent, child = multiprocessing.Pipe(duplex=False)
    process = multiprocessing.get_context("fork").Process(target=_child, args=(child, zoo, name))
    process.start()
    child.close()
    row = {"status": "timeout", "message": f"over {limit:.0f} s"}
    if parent.poll(limit):
        try:
            row = parent.recv()
        except EOFError:
            row = {"status": "bad", "message": f"the process died (exit code {process.exitcode})"}
    if process.is_alive():
        process.kill()
    process.join()
    return row


def _preload(zoos: list[str]) -> None:
    """Imports once in the parent what every child needs (a fork inherits it)."""
    import torchcam.methods  # noqa: F401
    import torchvision  # noqa: F401

    import writer_ext  # noqa: F401
    if "timm" in zoos:
        import timm  # noqa: F401
    if "transformers" in zoos:
        import transformers  # noqa: F401
        from transformers.models.auto import modeling_auto  # noqa: F401


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="about 40 models")
    parser.add_argument("--zoo", nargs="+", default=["torchvision", "timm", "transformers"])
    parser.add_argument("--limit", type=float, default=120.0, help="seconds per model")
    parser.add_argument("--only", help="one model name (with one --zoo)")
    args = parser.parse_args()
    started = time.perf_counter()
    _preload(args.zoo)
    for zoo in args.zoo:
        names = [args.only] if args.only else list_models(zoo, args.quick)
        counts, torchcam = Counter(), Counter()
        for name in names:
            row = run_forked(zoo, name, args.limit)
            counts[row["status"]] += 1
            if row["status"] not in ("unbuilt", "timeout"):
                torchcam[row.get("torchcam", "bad").split(":")[0]] += 1
            print(f"{zoo:12s} {name:40s} {row['status']:8s} layer={row.get('layer', '-'):32s} "
                  f"torchcam={row.get('torchcam_layer', '-')} ({row.get('torchcam', '-')[:40]})  "
                  f"{row.get('message', '')[:160]}", flush=True)
        built = sum(counts[s] for s in ("ok", "refused", "flagged", "bad"))
        share = f"{100 * counts['ok'] / built:.1f}%" if built else "-"
        print(f"== {zoo}: {len(names)} models, {built} built and run; ok {counts['ok']} ({share}), refused "
              f"{counts['refused']}, flagged constant {counts['flagged']}, bad {counts['bad']}; unbuilt "
              f"{counts['unbuilt']}, timeout {counts['timeout']}; torchcam good {torchcam['good']} of {built}",
              flush=True)
    print(f"== {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
