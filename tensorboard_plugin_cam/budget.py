"""The plugin's memory budget inside TensorBoard: what its caches may keep and what its decodes may hold at once.

TensorBoard may run for days over logs anyone with write access can add to, and answer anyone who can reach
it: whatever the requests and the logs hold, the plugin keeps its memory within one stated budget, set by
``--cam_memory_budget_mb`` or the environment variable TENSORBOARD_CAM_MEMORY_MB (DEFAULT_MB otherwise).
Of it, the caches keep at most CACHE_SHARE (their entries' estimated sizes), the decodes of headers and data
blobs running at once hold at most DECODE_SHARE (each reserves its cost first, `MemoryGate`); the rest is
headroom for what is not counted (a response being built, a provider's transient reads).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import threading
from collections import OrderedDict, deque
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Hashable, Iterator, Mapping

FLAG = "cam_memory_budget_mb"
ENV_VAR = "TENSORBOARD_CAM_MEMORY_MB"
DEFAULT_MB = 256
MIN_MB = 32  # below this a legitimate step of the largest kind could not be checked
MIB = 2**20
CACHE_SHARE = 1 / 8  # half for headers, half for steps (kinds and sequences come out of the steps' half)
DECODE_SHARE = 1 / 4
TRIM_AFTER = 4 * MIB  # a decode holding this much gives freed memory back to the system when it ends


def _malloc_trim():
    """glibc's malloc_trim, or None elsewhere. TensorBoard answers each request on a new thread, and glibc
    keeps what a thread freed in that thread's arena: without a trim, decodes on N threads leave N peaks."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


_TRIM = _malloc_trim()

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MMAP_THRESHOLD = 1 * MIB


def fix_mmap_threshold() -> bool:
    """Makes glibc give blocks of MMAP_THRESHOLD or more their own mapping, returned when freed.

    glibc raises its threshold (up to 32 MiB) each time such a block is freed, after which a decode's blobs
    and arrays come from per-thread heaps that keep them when freed: N request threads then keep N peaks.
    A fixed threshold turns that off. False where this is not glibc.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):
        return False


def budget_mb(flag_value: int | None, environ: Mapping[str, str] = os.environ) -> int:
    """The budget in MB: the flag, else the environment variable, else DEFAULT_MB; ValueError naming the source
    for anything but an integer of at least MIN_MB."""
    if flag_value is not None:
        value, source = flag_value, f"--{FLAG}"
    elif environ.get(ENV_VAR, "").strip():
        value, source = environ[ENV_VAR].strip(), ENV_VAR
    else:
        return DEFAULT_MB
    try:
        mb = int(value)
    except ValueError:
        raise ValueError(f"{source} must be an integer number of MB, got {value!r}") from None
    if mb < MIN_MB:
        raise ValueError(f"{source} must be at least {MIN_MB} MB, got {mb}")
    return mb


@dataclass(frozen=True)
class Budget:
    """How the budget is shared out, in bytes."""

    mb: int = DEFAULT_MB

    @property
    def total(self) -> int:
        return self.mb * MIB

    @property
    def headers(self) -> int:
        """Checked headers (and their kinds' checks), by step."""
        return int(self.total * CACHE_SHARE / 2)

    @property
    def steps(self) -> int:
        """Each series' steps (times and blob keys)."""
        return int(self.total * CACHE_SHARE / 2) - 2 * self.small

    @property
    def small(self) -> int:
        """Each small cache (a series' kind, a header's sequence number)."""
        return int(self.total * CACHE_SHARE / 2 / 16)

    @property
    def decodes(self) -> int:
        """What the decodes running at once may hold."""
        return int(self.total * DECODE_SHARE)


def weigh(value: object) -> int:
    """The estimated bytes a value holds: `sys.getsizeof` over it and everything it contains, each object once."""
    seen, stack, total = set(), [value], 0
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        total += sys.getsizeof(item)
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend(item)
        elif hasattr(item, "__dict__") and not isinstance(item, type):
            stack.append(vars(item))
    return total


class ByteCache:
    """The most recently used entries up to a total of estimated bytes, safe across request threads.

    An entry larger than the whole capacity is not kept (its reader reads it again next time).
    """

    def __init__(self, capacity: int):
        self.capacity, self._bytes = capacity, 0
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        """The estimated bytes held now."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable):
        with self._lock:
            entry = self._items.get(key)
            if entry is None:
                return None
            self._items.move_to_end(key)
            return entry[0]

    def discard(self, key: Hashable) -> None:
        """Forgets `key`'s entry, if any."""
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]

    def put(self, key: Hashable, value: object) -> None:
        size = weigh(key) + weigh(value)
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            if size > self.capacity:
                return
            self._items[key] = (value, size)
            self._bytes += size
            while self._bytes > self.capacity:
                self._bytes -= self._items.popitem(last=False)[1][1]


class MemoryGate:
    """Bytes the decodes running at once may hold: each waits, in turn, until its reservation fits.

    A byte-counted semaphore: N parallel requests for large steps take turns instead of multiplying the peak.
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._held = 0
        self._queue: deque = deque()
        self._ready = threading.Condition()

    @property
    def held(self) -> int:
        return self._held

    @contextmanager
    def hold(self, nbytes: int) -> Iterator[None]:
        """Reserves `nbytes` (at most `capacity`: the caller refuses larger work first) for the block's length."""
        if not 0 <= nbytes <= self.capacity:
            raise ValueError(f"nbytes must lie in [0, {self.capacity}], got {nbytes}")
        ticket = object()
        with self._ready:
            self._queue.append(ticket)
            while self._queue[0] is not ticket or self._held + nbytes > self.capacity:
                self._ready.wait()
            self._queue.popleft()
            self._held += nbytes
            self._ready.notify_all()
        try:
            yield
        finally:
            if nbytes >= TRIM_AFTER and _TRIM is not None:
                _TRIM(0)
            with self._ready:
                self._held -= nbytes
                self._ready.notify_all()
