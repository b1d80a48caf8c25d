"""Nothing from the monitor or the training callbacks raises into training: a log directory deleted
mid-run (on exit included), errors whose message itself fails, steps that cannot be read. Warned once."""

from __future__ import annotations

import shutil
import warnings

import pytest
import torch
from torch import nn

from helpers import SmallNet
from writer_ext import CamMonitor, SummaryWriter

X = torch.rand(2, 3, 12, 12)


def _recorded(body):
    """Runs body() with every warning recorded (and warnings-as-errors would not change the outcome)."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        body()
    return [w for w in seen if issubclass(w.category, RuntimeWarning)]


def test_a_deleted_log_dir_never_raises_on_steps_or_exit(tmp_path):
    logdir = tmp_path / "run"
    results = []

    def train():
        with CamMonitor(logdir, SmallNet(), X, every_n_steps=1, target_layer="features.3") as monitor:
            results.append(monitor.step(0))
            shutil.rmtree(logdir)
            results.extend(monitor.step(s) for s in (1, 2, 3))

    seen = _recorded(train)
    assert results[0] is not None and results[1:] == [None, None, None]
    unwritable = [w for w in seen if "cannot write to the log directory" in str(w.message)]
    assert len(unwritable) == 1, [str(w.message) for w in seen]
    others = [w for w in seen if "constant maps" not in str(w.message)]  # the untrained net's note at step 0
    assert len(others) == 1, [str(w.message) for w in seen]  # one warning for the whole cause, none per step
    assert unwritable[0].filename == __file__  # pointing at the training loop's line
    assert not logdir.exists()  # not silently re-created


def test_a_deleted_log_dir_under_warnings_as_errors(tmp_path):
    logdir = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with CamMonitor(logdir, SmallNet(), X, every_n_steps=1, target_layer="features.3", sanity_every=1,
                        activations=True) as monitor:
            monitor.step(0)
            shutil.rmtree(logdir)
            assert monitor.step(1) is None


def test_a_shared_writer_whose_dir_was_deleted(tmp_path):
    writer = SummaryWriter(tmp_path / "run")
    monitor = CamMonitor(writer, SmallNet(), X, every_n_steps=1, target_layer="features.3")

    def train():
        monitor.step(0)
        shutil.rmtree(tmp_path / "run")
        monitor.step(1)
        monitor.close()  # the user's writer is left to its owner

    assert len(_recorded(train)) == 1
    with pytest.raises(OSError):  # the user's own call still tells them
        writer.close()


class Unprintable(Exception):
    def __str__(self):
        raise RuntimeError("no message either")


class FailingNet(SmallNet):
    def forward(self, x):
        raise Unprintable()


def test_an_error_whose_message_fails_is_skipped(tmp_path):
    def train():
        with CamMonitor(tmp_path, FailingNet(), X, every_n_steps=1, target_layer="features.3") as monitor:
            assert monitor.step(0) is None
            assert monitor.step(1) is None

    seen = _recorded(train)
    assert seen and all("RuntimeError" in str(w.message) or "Unprintable" in str(w.message) for w in seen)


@pytest.mark.parametrize("step", [torch.tensor(3, device="meta"), None, "3", -4, 2**70, object()])
def test_steps_that_cannot_be_read_are_warned_about_not_raised(tmp_path, step):
    def train():
        with CamMonitor(tmp_path, SmallNet(), X, every_n_steps=1, target_layer="features.3") as monitor:
            assert monitor.step(step) is None

    seen = _recorded(train)
    assert len(seen) == 1, [str(w.message) for w in seen]
    assert "nothing logged" in str(seen[0].message) or "step skipped" in str(seen[0].message)


class _Data(torch.utils.data.Dataset):
    def __len__(self):
        return 16

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return torch.rand(3, 12, 12, generator=g), i % 5


def test_lightning_training_survives_a_deleted_log_dir(tmp_path):
    pl = pytest.importorskip("lightning.pytorch")
    from writer_ext.integrations.lightning import CamCallback

    class LitNet(pl.LightningModule):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.net = SmallNet()

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            return nn.functional.cross_entropy(self(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    class DeleteAt(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 2:
                shutil.rmtree(tmp_path / "cams")

    def fit(callbacks):
        pl.seed_everything(1, verbose=False)
        module = LitNet()
        trainer = pl.Trainer(max_steps=5, logger=False, callbacks=callbacks, accelerator="cpu", devices=1,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*does not have many workers.*")
            warnings.filterwarnings("ignore", ".*number of training batches.*")
            trainer.fit(module, torch.utils.data.DataLoader(_Data(), batch_size=4))
        return module

    plain = fit([])
    callback = CamCallback(X, every_n_steps=1, target_layer="net.features.3", log_dir=tmp_path / "cams")
    seen = []
    with warnings.catch_warnings(record=True) as recorded:
        warnings.simplefilter("always")
        watched = fit([DeleteAt(), callback])
        seen = [str(w.message) for w in recorded if "cannot write to the log directory" in str(w.message)]
    assert len(seen) == 1
    for a, b in zip(plain.state_dict().values(), watched.state_dict().values()):
        assert torch.equal(a, b)
