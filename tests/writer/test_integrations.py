"""The framework callbacks (writer_ext.integrations): Lightning's and the Hugging Face Trainer's.

Each trains a small random-weight model on generated data twice, with and without the callback, and
checks the run is bit for bit the same and the CAM series sits in the framework's own TensorBoard run."""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tensorboard import context
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from helpers import SmallNet, cam_sample_steps, python_provider
from tensorboard_plugin_cam.reader import CamReader

ROOT = Path(__file__).resolve().parents[2]


def _data(n=32, size=12, classes=5):
    generator = torch.Generator().manual_seed(7)
    return torch.rand(n, 3, size, size, generator=generator), torch.randint(0, classes, (n,), generator=generator)


def _scalars(logdir: Path, tag: str) -> list[tuple[int, float]]:
    events = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def _cam_steps(run_dir: Path, tag: str = "probe") -> list[int]:
    """The steps of a CAM series as the plugin's reader serves them, each step checked whole."""
    reader = CamReader(python_provider(run_dir))
    ctx = context.RequestContext()
    assert reader.kind(ctx, "", ".", tag) == "cam"
    steps = reader.steps(ctx, "", ".", tag)
    for step in steps:
        header, _ = reader.checked(ctx, step)
        assert not header.get("skipped"), header["skipped"]
    return [s.step for s in steps]


def _sanity_steps(run_dir: Path, tag: str = "probe/sanity") -> list[int]:
    reader = CamReader(python_provider(run_dir))
    ctx = context.RequestContext()
    assert reader.kind(ctx, "", ".", tag) == "sanity"
    return [s.step for s in reader.steps(ctx, "", ".", tag)]


def _same_parameters(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_importing_writer_ext_imports_no_framework():
    code = ("import sys, writer_ext, writer_ext.integrations; "
            "print(sorted(m for m in ('lightning', 'pytorch_lightning', 'transformers', 'accelerate') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("module, blocked, extra", [
    ("lightning", "lightning.pytorch", "lightning"),
    ("pytorch_lightning", "pytorch_lightning", "lightning"),
    ("transformers", "transformers", "transformers"),
])
def test_a_missing_framework_names_the_extra(monkeypatch, module, blocked, extra):
    for name in {blocked, blocked.split(".")[0]}:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    monkeypatch.delitem(sys.modules, f"writer_ext.integrations.{module}", raising=False)
    with pytest.raises(ImportError, match=rf"pip install 'tensorboard-plugin-cam\[{extra}\]'"):
        importlib.import_module(f"writer_ext.integrations.{module}")


# ---------------------------------------------------------------- Lightning

def _lightning_module(pl):
    class LitNet(pl.LightningModule):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.net = SmallNet()  # BatchNorm, dropout, in-place ReLU

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = torch.nn.functional.cross_entropy(self(x), y)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)

    return LitNet()


def _fit(pl, callbacks, logger, steps=6, **trainer_args):
    """Seeded training on a shuffled loader; returns the trained module."""
    pl.seed_everything(123, verbose=False)
    module = _lightning_module(pl)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*_data()), batch_size=8, shuffle=True)
    trainer = pl.Trainer(max_steps=steps, logger=logger, callbacks=callbacks, accelerator="cpu", devices=1,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         log_every_n_steps=1, **trainer_args)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*number of training batches.*")
        trainer.fit(module, loader)
    return module


def test_lightning_logs_with_its_scalars_and_training_is_bit_for_bit_the_same(tmp_path):
    pl = pytest.importorskip("lightning.pytorch")
    from lightning.pytorch.loggers import TensorBoardLogger

    from writer_ext.integrations.lightning import CamCallback

    plain = _fit(pl, [], TensorBoardLogger(tmp_path, name="plain", version=0))
    callback = CamCallback(torch.rand(4, 3, 12, 12), every_n_steps=2, methods=("gradcam", "gradcam++"),
                           target_layer="net.features", sanity_every=3)
    watched = _fit(pl, [callback], TensorBoardLogger(tmp_path, name="watched", version=0))
    assert _same_parameters(plain, watched)  # parameters and BatchNorm statistics, exactly
    run = tmp_path / "watched" / "version_0"
    losses = _scalars(run, "train_loss")
    assert len(losses) == 6 and losses == _scalars(tmp_path / "plain" / "version_0", "train_loss")
    assert _cam_steps(run) == [0, 2, 4, 6]  # step 0: the untrained model; then after every 2nd optimizer step
    assert _sanity_steps(run) == [0, 3, 6]
    assert len(list(run.glob("events.out.tfevents.*"))) == 1  # one writer: Lightning's, maps beside its scalars
    assert callback.monitor is None  # closed at teardown


def test_lightning_without_a_tensorboard_logger_refuses_at_setup(tmp_path):
    pl = pytest.importorskip("lightning.pytorch")
    from lightning.pytorch.loggers import CSVLogger

    from writer_ext.integrations.lightning import CamCallback

    probes = torch.rand(2, 3, 12, 12)
    with pytest.raises(ValueError, match="TensorBoardLogger, and this Trainer has CSVLogger"):
        _fit(pl, [CamCallback(probes)], CSVLogger(tmp_path))
    with pytest.raises(ValueError, match="has no logger"):
        _fit(pl, [CamCallback(probes)], False)
    # log_dir= writes on its own; fast_dev_run switches the callback off as it does Lightning's loggers
    _fit(pl, [CamCallback(probes, every_n_steps=1, log_dir=tmp_path / "own")], CSVLogger(tmp_path), steps=2)
    assert _cam_steps(tmp_path / "own") == [0, 1, 2]
    _fit(pl, [CamCallback(probes, log_dir=tmp_path / "dev")], CSVLogger(tmp_path), fast_dev_run=True)
    assert not (tmp_path / "dev").exists()
    with pytest.raises(ValueError, match="LitNet has no submodule 'backbone'"):
        _fit(pl, [CamCallback(probes, model="backbone", log_dir=tmp_path / "x")], False)


def test_lightning_logs_on_global_rank_zero_only(tmp_path):
    pytest.importorskip("lightning.pytorch")
    from lightning.pytorch.loggers import TensorBoardLogger

    from writer_ext.integrations.lightning import CamCallback

    for rank_zero in (False, True):
        logger = TensorBoardLogger(tmp_path, name=f"zero-{rank_zero}", version=0)
        trainer = SimpleNamespace(fast_dev_run=False, loggers=[logger], is_global_zero=rank_zero, global_step=0)
        callback, module = CamCallback(torch.rand(2, 3, 12, 12), every_n_steps=1), SmallNet()
        callback.setup(trainer, module, "fit")
        callback.on_train_start(trainer, module)
        assert (callback.monitor is not None) == rank_zero
        callback.teardown(trainer, module, "fit")
    assert not (tmp_path / "zero-False").exists()
    assert cam_sample_steps(tmp_path / "zero-True") == [0]


def test_lightning_callback_never_raises_into_training(tmp_path):
    pl = pytest.importorskip("lightning.pytorch")
    from lightning.pytorch.loggers import TensorBoardLogger

    from writer_ext.integrations.lightning import CamCallback

    def broken(output):
        raise RuntimeError("no score today")

    plain = _fit(pl, [], TensorBoardLogger(tmp_path, name="plain"), steps=3)
    with pytest.warns(RuntimeWarning, match="no score today"):
        watched = _fit(pl, [CamCallback(torch.rand(2, 3, 12, 12), every_n_steps=1, targets=broken)],
                       TensorBoardLogger(tmp_path, name="watched", version=0), steps=3)
    assert _same_parameters(plain, watched)
    assert cam_sample_steps(tmp_path / "watched") == [0, 1, 2, 3]  # each logged as skipped, with the reason


def test_bad_callback_arguments_fail_when_built():
    pytest.importorskip("lightning.pytorch")
    from writer_ext.integrations.lightning import CamCallback

    probes = torch.rand(2, 3, 12, 12)
    with pytest.raises(ValueError, match="every_n_steps must be a positive int"):
        CamCallback(probes, every_n_steps=0)
    with pytest.raises(TypeError, match="probe_inputs must be a torch.Tensor"):
        CamCallback([1, 2])
    with pytest.raises(ValueError, match="unknown method 'gradkam'"):
        CamCallback(probes, methods="gradkam")
    with pytest.raises(TypeError, match="does not take every"):
        CamCallback(probes, every=3)


def test_pytorch_lightning_import_name(tmp_path):
    pl = pytest.importorskip("pytorch_lightning")
    from pytorch_lightning.loggers import TensorBoardLogger

    from writer_ext.integrations.pytorch_lightning import CamCallback

    callback = CamCallback(torch.rand(2, 3, 12, 12), every_n_steps=2, model="net")
    assert isinstance(callback, pl.Callback)
    _fit(pl, [callback], TensorBoardLogger(tmp_path, name="", version=0), steps=2)
    assert _cam_steps(tmp_path / "version_0") == [0, 2]


# ---------------------------------------------------------------- Hugging Face Trainer

def _hf_train(tmp_path, name, callbacks, report_to="none", steps=6):
    """A random-weight ConvNeXt (stochastic depth on: the random stream matters) trained on generated
    pictures by the Trainer; returns the model and the losses the Trainer logged."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.ConvNextConfig(num_channels=3, hidden_sizes=[8, 16], depths=[1, 1], num_stages=2,
                                         num_labels=3, image_size=32, patch_size=4, drop_path_rate=0.3,
                                         id2label={0: "circle", 1: "square", 2: "triangle"})
    model = transformers.ConvNextForImageClassification(config)
    x, y = _data(16, 32, 3)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / name), max_steps=steps, per_device_train_batch_size=4, learning_rate=1e-2,
        logging_steps=1, report_to=report_to, save_strategy="no", use_cpu=True, seed=123, disable_tqdm=True,
    )
    trainer = transformers.Trainer(model=model, args=args, callbacks=callbacks,
                                   train_dataset=[{"pixel_values": a, "labels": b} for a, b in zip(x, y)])
    trainer.train()
    return model, [h["loss"] for h in trainer.state.log_history if "loss" in h]


def _top_logit(output):  # until writer_ext.targets reads a ModelOutput's logits itself
    return output.logits.amax(1)


def test_transformers_logs_with_the_trainers_scalars_and_training_is_bit_for_bit_the_same(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    from writer_ext.integrations.transformers import CamCallback

    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "plain-tb"))
    plain, plain_losses = _hf_train(tmp_path, "plain", [], report_to=["tensorboard"])
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "watched-tb"))
    callback = CamCallback(torch.rand(4, 3, 32, 32), every_n_steps=2, methods=("gradcam", "layercam"),
                           targets=_top_logit, sanity_every=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        watched, watched_losses = _hf_train(tmp_path, "watched", [callback], report_to=["tensorboard"])
    assert not [w for w in caught if "CamMonitor" in str(w.message) or "CamCallback" in str(w.message)]
    assert _same_parameters(plain, watched)
    assert len(plain_losses) == 6 and plain_losses == watched_losses
    run = tmp_path / "watched-tb"
    assert _cam_steps(run) == [0, 2, 4, 6]
    assert _sanity_steps(run) == [0, 3, 6]  # the sanity check explains what the maps do (targets= passed on)
    assert [s for s, _ in _scalars(run, "train/loss")] == [1, 2, 3, 4, 5, 6]
    assert len(list(run.glob("events.out.tfevents.*"))) == 1  # the TensorBoardCallback's writer, shared
    assert callback.monitor is None


def test_transformers_without_tensorboard_reporting_writes_its_own_run(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    from writer_ext.integrations.transformers import CamCallback

    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    _hf_train(tmp_path, "out", [CamCallback(torch.rand(2, 3, 32, 32), every_n_steps=3, targets=_top_logit)], steps=4)
    (run,) = {p.parent for p in (tmp_path / "out" / "runs").rglob("events.out.tfevents.*")}  # <date>_<host>
    assert _cam_steps(run) == [0, 3]
    _hf_train(tmp_path, "out2", [CamCallback(torch.rand(2, 3, 32, 32), every_n_steps=2, targets=_top_logit,
                                             log_dir=tmp_path / "mine")], steps=2)
    assert _cam_steps(tmp_path / "mine") == [0, 2]


def test_transformers_model_output_with_default_targets(tmp_path, monkeypatch):
    """targets=None on a ModelOutput: the maps explain the top classes of its logits."""
    pytest.importorskip("transformers")
    from writer_ext.integrations.transformers import CamCallback

    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    callback = CamCallback(torch.rand(2, 3, 32, 32), every_n_steps=2, log_dir=tmp_path / "tb")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no step skipped
        _hf_train(tmp_path, "out", [callback], steps=2)
    assert cam_sample_steps(tmp_path / "tb") == [0, 2]
    reader = CamReader(python_provider(tmp_path / "tb"))
    header, _ = reader.checked(context.RequestContext(), reader.steps(context.RequestContext(), "", ".", "probe")[-1])
    assert not header.get("skipped")


def test_lightning_refuses_sharded_training_at_setup(tmp_path):
    """Only the main process would run the model: under FSDP or DeepSpeed the other ranks never join its
    gathers, so the callback refuses before the first step instead of hanging training."""
    pytest.importorskip("lightning.pytorch")
    from lightning.pytorch.loggers import TensorBoardLogger

    from writer_ext.integrations.lightning import CamCallback

    class FSDPStrategy:  # what Lightning's sharded strategy is called
        pass

    trainer = SimpleNamespace(fast_dev_run=False, loggers=[TensorBoardLogger(tmp_path)], is_global_zero=True,
                              global_step=0, strategy=FSDPStrategy())
    with pytest.raises(ValueError, match="sharded strategy"):
        CamCallback(torch.rand(2, 3, 12, 12)).setup(trainer, SmallNet(), "fit")


def test_transformers_refuses_sharded_training_when_it_begins(tmp_path):
    pytest.importorskip("transformers")
    from writer_ext.integrations.transformers import CamCallback

    for args in (SimpleNamespace(output_dir=str(tmp_path), fsdp="full_shard", deepspeed=None),
                 SimpleNamespace(output_dir=str(tmp_path), fsdp="", deepspeed="ds_config.json")):
        with pytest.raises(ValueError, match="sharded strategy"):
            CamCallback(torch.rand(2, 3, 12, 12)).on_train_begin(args, SimpleNamespace(), None)


def test_transformers_logs_on_the_main_process_only(tmp_path):
    pytest.importorskip("transformers")
    from writer_ext.integrations.transformers import CamCallback

    for main in (False, True):
        callback = CamCallback(torch.rand(2, 3, 12, 12), every_n_steps=1, log_dir=tmp_path / f"main-{main}")
        args = SimpleNamespace(output_dir=str(tmp_path))
        state = SimpleNamespace(is_world_process_zero=main, global_step=0)
        callback.on_train_begin(args, state, None)
        callback.on_step_begin(args, state, None, model=SmallNet())
        state.global_step = 1
        callback.on_step_end(args, state, None)
        assert (callback.monitor is not None) == main
        callback.on_train_end(args, state, None)
    assert not (tmp_path / "main-False").exists()
    assert cam_sample_steps(tmp_path / "main-True") == [0, 1]
