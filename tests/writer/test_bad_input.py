"""Bad input: a clear error naming the argument, nothing written, the model as before."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from writer_ext import add_cam, add_cam_maps


def _event_bytes(logdir):
    return b"".join(p.read_bytes() for p in sorted(logdir.rglob("events.out.tfevents.*")))


X = torch.rand(2, 3, 12, 12)

CAM_CASES = [
    ("inputs_3d", dict(inputs=torch.rand(3, 12, 12)), ValueError, "inputs must be a 4-D batch"),
    ("inputs_list", dict(inputs=[[1.0]]), TypeError, "inputs must be a torch.Tensor"),
    ("inputs_int", dict(inputs=torch.ones(2, 3, 4, 4, dtype=torch.long)), TypeError, "inputs must be a floating"),
    ("inputs_nan", dict(inputs=X.clone().index_put_((torch.tensor(1),), torch.tensor(float("nan")))), ValueError,
     "inputs hold NaN or Inf"),
    ("inputs_inf", dict(inputs=X.clone().index_put_((torch.tensor(0),), torch.tensor(float("inf")))), ValueError,
     "inputs hold NaN or Inf"),
    ("inputs_channels", dict(inputs=torch.rand(2, 1, 12, 12)), ValueError, "inputs: the model could not run"),
    ("eigen_smooth_str", dict(eigen_smooth="no"), TypeError, "eigen_smooth must be True or False"),
    ("multilabel_str", dict(multilabel="no"), TypeError, "multilabel must be True or False"),
    ("metrics_str", dict(metrics="no"), TypeError, "metrics must be True or False"),
    ("seed_str", dict(methods="random", seed="7"), TypeError, "seed must be an int"),
    ("targets_len", dict(targets=[1, 2, 3]), ValueError, "targets: expected one class id"),
    ("targets_range", dict(targets=[0, 5]), ValueError, "targets: class id 5 is out of range"),
    ("targets_negative", dict(targets=-1), ValueError, "targets: class id -1"),
    ("targets_float", dict(targets=[0.5, 1.0]), TypeError, "targets must be integer"),
    ("targets_callable_shape", dict(targets=lambda out: out), ValueError, "targets: the callable"),
    ("display_batch", dict(display_images=torch.rand(3, 3, 12, 12)), ValueError, "display_images holds 3"),
    ("display_range", dict(display_images=torch.rand(2, 3, 12, 12) * 2), ValueError, "display_images: float"),
    ("display_channels", dict(display_images=np.zeros((2, 12, 12, 4), np.uint8)), ValueError, "display_images must"),
    ("method", dict(methods=["gradcam", "magic"]), ValueError, "methods: unknown method 'magic'"),
    ("method_type", dict(methods=[3]), TypeError, "methods must be strings"),
    ("layer_missing", dict(target_layer="layer9"), ValueError, "target_layer: the model has no layer named"),
    ("layer_not_spatial", dict(target_layer="fc"), ValueError, "target_layer 'fc' has output shape"),
    ("layer_unknown", dict(target_layer="features.99"), ValueError, "target_layer"),
    ("layer_type", dict(target_layer=3.5), TypeError, "target_layer must be"),
    ("topk", dict(topk=0), ValueError, "topk must be a positive int"),
    ("topk_too_big", dict(topk=9), ValueError, "topk=9 is more than"),
    ("class_names_short", dict(class_names=["a"], targets=[0, 1]), ValueError, "class_names has no name for class id"),
    ("class_names_type", dict(class_names="abcde"), TypeError, "class_names must be"),
    ("tag", dict(tag=""), ValueError, "tag must be a non-empty string"),
    ("step", dict(global_step="3"), TypeError, "global_step must be an int"),
    ("image_format", dict(image_format="gif"), ValueError, "image_format must be one of"),
    ("smooth", dict(smooth="blur"), ValueError, "smooth must be one of"),
    ("fuse", dict(target_layer=["features.2", "features"], fuse="max"), ValueError, "fuse must be one of"),
    ("batch_size", dict(methods="scorecam", batch_size=0), ValueError, "batch_size must be"),
    ("metrics_callable", dict(targets=lambda out: out[:, 0], metrics=True), ValueError, "metrics: Average Drop"),
    ("reshape", dict(reshape_transform=lambda t: t.flatten(1)), ValueError, "reshape_transform must give"),
    ("unknown_option", dict(colour="red"), TypeError, "colour"),
]


@pytest.mark.parametrize("name, kwargs, error, message", CAM_CASES, ids=[c[0] for c in CAM_CASES])
def test_add_cam_bad_input(writer, small_net, name, kwargs, error, message):
    call = {"tag": "cam", "inputs": X, "target_layer": "features", **kwargs}
    tag, inputs = call.pop("tag"), call.pop("inputs")
    before = _event_bytes(writer.logdir)
    state = {k: v.clone() for k, v in small_net.state_dict().items()}
    with pytest.raises(error, match=message):
        add_cam(writer, tag, small_net, inputs, **call)
    writer.flush()
    assert _event_bytes(writer.logdir) == before
    assert all(torch.equal(v, state[k]) for k, v in small_net.state_dict().items())
    assert small_net.training and all(p.grad is None for p in small_net.parameters())


class Branches(torch.nn.Module):
    """Layers the output does not depend on: detached, an unused branch, never called; one called twice."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.detached = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.unused = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.spare = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.shared = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, x):
        a = self.detached(torch.relu(self.stem(x))).detach()
        self.unused(a)
        b = self.shared(self.shared(a))
        return self.fc(b.mean(dim=(2, 3)))


class MlpHead(torch.nn.Module):
    """Pooled features -> Linear(8, 32) -> ReLU -> Linear(32, 8) -> ReLU -> Linear(8, 5): not a CAM head."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8),
                                       torch.nn.ReLU(), torch.nn.Linear(8, 5))

    def forward(self, x):
        return self.mlp(self.conv(x).mean(dim=(2, 3)))


ALL_METHODS = ["gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "gradcam-elementwise", "eigengradcam",
               "cam", "eigencam", "scorecam", "ablationcam", "random", "sobel", "finercam", "finercam-weighted",
               "kpcacam", "segeigencam"]
MODEL_CASES = [
    *[(f"detached-{m}", Branches, dict(target_layer="stem", methods=m), "target_layer 'stem': the explained "
       "scores do not depend") for m in ALL_METHODS],
    ("unused_branch", Branches, dict(target_layer="unused", methods=["scorecam", "eigencam"]),
     "target_layer 'unused': the explained scores do not depend"),
    ("never_called", Branches, dict(target_layer="spare", methods="scorecam"), "'spare' was not called"),
    ("called_twice", Branches, dict(target_layer="shared", methods="gradcam"), "'shared' ran 2 times"),
    ("cam_mlp_head", MlpHead, dict(target_layer="conv", methods=["gradcam", "cam"]),
     "methods: 'cam' needs the model's output to be its final nn.Linear"),
]


@pytest.mark.parametrize("name, make, kwargs, message", MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_add_cam_refuses_what_it_cannot_explain(writer, name, make, kwargs, message):
    torch.manual_seed(0)
    model = make()
    before = _event_bytes(writer.logdir)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=message):
        add_cam(writer, "cam", model, X, **kwargs)
    writer.flush()
    assert _event_bytes(writer.logdir) == before
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert model.training and all(p.grad is None for p in model.parameters())
    assert not any(m._forward_hooks for m in model.modules())


def test_diverged_model_is_refused(writer, small_net):
    with torch.no_grad():
        small_net.fc.weight[0, 0] = float("nan")
    before = _event_bytes(writer.logdir)
    with pytest.raises(ValueError, match="model: its output holds NaN or Inf"):
        add_cam(writer, "cam", small_net, X, target_layer="features")
    assert _event_bytes(writer.logdir) == before


def test_ambiguous_output_needs_a_callable(writer):
    class DictOut(torch.nn.Module):  # two tensors, neither named logits: which one to explain is a guess
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)

        def forward(self, x):
            pooled = self.conv(x).mean(dim=(2, 3))
            return {"scores": pooled, "features": pooled * 2}

    model = DictOut()
    with pytest.raises(TypeError, match="pass targets= as a callable"):
        add_cam(writer, "cam", model, X, target_layer="conv")
    result = add_cam(writer, "cam", model, X, target_layer="conv", targets=lambda out: out["scores"][:, 0])
    assert result.maps["gradcam"]["conv"].shape == (2, 1, 10, 10)


def test_wrong_writer_type(small_net):
    with pytest.raises(TypeError, match="writer must be a torch.utils.tensorboard.SummaryWriter"):
        add_cam("runs", "cam", small_net, X)


MAPS_CASES = [
    ("maps_nan", dict(maps=np.full((2, 4, 4), np.nan)), ValueError, "maps hold NaN or Inf"),
    ("maps_inf", dict(maps=torch.full((2, 4, 4), float("inf"))), ValueError, "maps hold NaN or Inf"),
    ("maps_shape", dict(maps=np.zeros((2, 4))), ValueError, "maps must have shape"),
    ("maps_batch", dict(maps=np.zeros((3, 4, 4))), ValueError, "images holds 2 images for a batch of 3"),
    ("maps_type", dict(maps=[[1]]), TypeError, "maps must be a torch.Tensor or numpy.ndarray"),
    ("class_ids_shape", dict(class_ids=[1, 2, 3]), ValueError, "class_ids must have shape"),
    ("class_ids_float", dict(class_ids=[1.5, 2.0]), TypeError, "class_ids must be integers"),
    ("scores_nan", dict(scores=[0.5, float("nan")]), ValueError, "scores hold NaN"),
    ("method", dict(method=""), ValueError, "method must be a non-empty string"),
    ("images_range", dict(images=torch.rand(2, 3, 8, 8) + 1), ValueError, "images: float images"),
]


@pytest.mark.parametrize("name, kwargs, error, message", MAPS_CASES, ids=[c[0] for c in MAPS_CASES])
def test_add_cam_maps_bad_input(writer, name, kwargs, error, message):
    call = dict(images=torch.rand(2, 3, 8, 8), maps=np.random.rand(2, 4, 4))
    call.update(kwargs)
    before = _event_bytes(writer.logdir)
    with pytest.raises(error, match=message):
        add_cam_maps(writer, "ext", call.pop("images"), call.pop("maps"), **call)
    writer.flush()
    assert _event_bytes(writer.logdir) == before
