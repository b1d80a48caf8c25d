"""`CamCallback` for PyTorch Lightning imported as `pytorch_lightning` (the same as
`writer_ext.integrations.lightning`'s, built on that package's Callback and TensorBoardLogger)."""

from __future__ import annotations

from writer_ext.integrations._common import missing

try:
    from pytorch_lightning import Callback
    from pytorch_lightning.loggers import TensorBoardLogger
except ImportError as e:
    raise missing("pytorch_lightning", "pytorch-lightning", "lightning", e) from e

from writer_ext.integrations._lightning import LightningCamCallback


class CamCallback(LightningCamCallback, Callback):
    __doc__ = LightningCamCallback.__doc__
    _tensorboard_logger = TensorBoardLogger


__all__ = ["CamCallback"]
