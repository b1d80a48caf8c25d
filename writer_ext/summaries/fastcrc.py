"""Event records framed with a compiled CRC-32C (the `crc32c` package, a requirement), or TensorBoard's own.

Every record TensorBoard's writer (and so torch's `SummaryWriter`) puts in an
event file carries a masked CRC-32C of its bytes, computed in pure Python:
about 80 ms a megabyte, in the writer's thread but holding the interpreter
lock, so a training step pays for it. tensorboardX uses the `crc32c` package
for this; so do we: `install()` swaps TensorBoard's record framing for the
same checksum from compiled code. The bytes written are the same. Where `crc32c`
fails to import (a platform without its wheel), TensorBoard's framing stays.
"""

from __future__ import annotations

_MASK_DELTA = 0xA282EAD8
_U32 = 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """TensorBoard's masked CRC-32C of `data` (the TFRecord framing), from the `crc32c` package."""
    import crc32c

    x = crc32c.crc32c(data)
    return (((x >> 15) | (x << 17)) + _MASK_DELTA) & _U32


def install() -> bool:
    """Frames TensorBoard's event records with `masked_crc32c`; False (nothing changed) without `crc32c`."""
    try:
        import crc32c  # noqa: F401
    except ImportError:
        return False
    from tensorboard.summary.writer import record_writer

    record_writer.masked_crc32c = masked_crc32c
    return True
