"""`CamCallback` for PyTorch Lightning (`import lightning`; `writer_ext.integrations.pytorch_lightning`
has the same for `import pytorch_lightning`):

    from lightning.pytorch import Trainer
    from writer_ext.integrations.lightning import CamCallback

    Trainer(callbacks=[CamCallback(probe_images, every_n_steps=100)]).fit(module, loader)
"""

from __future__ import annotations

from writer_ext.integrations._common import missing

try:
    from lightning.pytorch import Callback
    from lightning.pytorch.loggers import TensorBoardLogger
except ImportError as e:
    raise missing("lightning", "lightning", "lightning", e) from e

from writer_ext.integrations._lightning import LightningCamCallback


class CamCallback(LightningCamCallback, Callback):
    __doc__ = LightningCamCallback.__doc__
    _tensorboard_logger = TensorBoardLogger


__all__ = ["CamCallback"]
