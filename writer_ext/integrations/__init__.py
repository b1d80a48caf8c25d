"""Callbacks for training frameworks, each in its own module, imported only on request:

    from writer_ext.integrations.lightning import CamCallback          # lightning (pip extra [lightning])
    from writer_ext.integrations.pytorch_lightning import CamCallback  # the same for `import pytorch_lightning`
    from writer_ext.integrations.transformers import CamCallback       # Hugging Face Trainer ([transformers])

Importing `writer_ext` or this package imports neither framework.
"""
