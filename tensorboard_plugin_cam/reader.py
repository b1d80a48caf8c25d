"""Reads the plugin's series (every kind) through a TensorBoard data provider.

Works the same over the Rust data server and the Python multiplexer
(``--load_fast=false``): it only calls the `DataProvider` interface, passes
blob keys back untouched, and turns every provider-specific failure for bad
input into `tensorboard.errors` (400/404), never a raw exception.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence

from tensorboard import errors
from tensorboard.data import provider

from tensorboard_plugin_cam import format as fmt
from tensorboard_plugin_cam.budget import MIB, Budget, ByteCache, MemoryGate

# --samples_per_plugin uses 0 for "keep everything"; a provider's `downsample`
# uses 0 for "nothing", so 0 is read as this.
ALL_SAMPLES = 2**31 - 1

# Experiment ids are short (TensorBoard's own is ""): the Python loader copies the id into every blob key
# it hands out, so a long one would make each read of a series cost its length times its blobs.
MAX_EXPERIMENT_ID = 256

# What one blob key costs while a series' steps are listed, beside twice its names' length: the provider's
# reference and the key's base64 text of (experiment id, run, tag, step, index). Measured under the Python
# loader: about 560 bytes a key with 230 characters of names.
KEY_BYTES = 160

# A /blob read of a blob whose size this server has not seen yet reserves this share of the decode budget (the
# provider hands a blob over whole, so its size is known only once read; then the next read reserves that).
UNKNOWN_READ_SHARE = 1 / 4


def _check_inline_pictures(header: dict, expected: int, held: int) -> None:
    """A step holds its `expected` pictures, or none when its header names shared ones ("pictures_step")."""
    if fmt.pictures_step(header) is not None:
        if held:
            raise fmt.FormatError(f"header names shared pictures ('pictures_step'), the step holds {held} more")
    elif held != expected:
        raise fmt.FormatError(f"header lists {expected} pictures, the step holds {held}")


def _picture_blobs(kind: str, length: int) -> int:
    """How many of a step's `length` blobs are pictures in a series of `kind`."""
    first = fmt.first_picture(kind)
    return 0 if first is None else max(length - first, 0)


@dataclass(frozen=True)
class Series:
    """What is fixed for one (run, tag)."""

    run: str
    tag: str
    kind: str
    description: str
    max_step: int
    max_wall_time: float
    images: int


@dataclass(frozen=True)
class Step:
    run: str
    tag: str
    step: int
    wall_time: float
    keys: tuple[str, ...]  # opaque blob keys: header, maps, image_0, ...


class CamReader:
    """Caches are keyed by what the data is (run, tag, step, wall time) and bounded by `budget`'s bytes; each
    entry remembers what it was read under (experiment id, blob keys) and is read again, in its own place,
    when a request differs: requests under ever new experiment ids never add entries."""

    def __init__(self, data_provider: provider.DataProvider, downsample: int = ALL_SAMPLES,
                 budget: Budget | None = None):
        self._provider = data_provider
        self._downsample = downsample or ALL_SAMPLES
        self.budget = budget = budget or Budget()
        self._headers = ByteCache(budget.headers)  # (kind, run, tag, step, wall) -> (keys, header, kind's check)
        self._sequences = ByteCache(budget.small)  # (run, tag, step, wall) -> (header key, its "sequence")
        self._steps = ByteCache(budget.steps)  # (run, tag) -> (experiment, what the series was, its steps)
        self._kinds = ByteCache(budget.small)  # (run, tag) -> (experiment, kind): fixed by its first summary
        self._sizes = ByteCache(budget.small)  # blob key -> its size, once read
        self._counts = ByteCache(budget.small)  # (run, tag) -> its series' length, known from a whole listing
        self._gate = MemoryGate(budget.decodes)  # every header parse and data check reserves its cost here
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="cam-blobs")

    @property
    def capacity(self) -> int:
        """How many steps per series TensorBoard keeps (reservoir sampling drops steps only beyond this)."""
        return self._downsample

    @staticmethod
    def _check_experiment(experiment_id: str) -> None:
        if len(experiment_id) > MAX_EXPERIMENT_ID:
            raise errors.InvalidArgumentError(f"experiment id longer than {MAX_EXPERIMENT_ID} characters")

    def series(self, ctx, experiment_id: str) -> list[Series]:
        """Every CAM series, sorted by run then tag; foreign or newer data is skipped."""
        self._check_experiment(experiment_id)
        mapping = self._provider.list_blob_sequences(ctx, experiment_id=experiment_id, plugin_name=fmt.PLUGIN_NAME)
        found = []
        for run, tags in mapping.items():
            for tag, ts in tags.items():
                kind = self._kind(ts)
                if kind is None:
                    continue
                self._kinds.put((run, tag), (experiment_id, kind))
                found.append(
                    Series(
                        run=run,
                        tag=tag,
                        kind=kind,
                        description=ts.description,
                        max_step=int(ts.max_step),
                        max_wall_time=float(ts.max_wall_time),
                        images=_picture_blobs(kind, int(ts.max_length)),
                    )
                )
        return sorted(found, key=lambda s: (s.run, s.tag))

    @staticmethod
    def _content_kind(ts) -> str | None:
        """The kind a series' plugin content names (None: content this plugin cannot read)."""
        try:
            return fmt.parse_plugin_content(ts.plugin_content).get("kind", fmt.cam.KIND)
        except fmt.FormatError:
            return None

    @classmethod
    def _kind(cls, ts) -> str | None:
        """A series' kind from its plugin content; None for foreign, newer or unknown content, and for a
        series whose listing declares steps of more blobs than its kind may hold (damaged: reading it would
        make the Python loader build a key for each)."""
        kind = cls._content_kind(ts)
        if kind not in fmt.KINDS or int(ts.max_length) > fmt.max_blobs(kind):
            return None
        return kind

    def _time_series(self, ctx, experiment_id: str, run: str, tag: str):
        """One series' metadata (a cheap provider call: no blob keys), or None if there is no such series."""
        mapping = self._provider.list_blob_sequences(
            ctx, experiment_id=experiment_id, plugin_name=fmt.PLUGIN_NAME,
            run_tag_filter=provider.RunTagFilter(runs=[run], tags=[tag]),
        )
        return mapping.get(run, {}).get(tag)

    def kind(self, ctx, experiment_id: str, run: str, tag: str) -> str:
        """The kind of one series ("cam", "activations", "model"); 404 if there is no such series."""
        self._check_experiment(experiment_id)
        known = self._kinds.get((run, tag))
        if known is not None and known[0] == experiment_id:
            return known[1]
        ts = self._time_series(ctx, experiment_id, run, tag)
        kind = None if ts is None else self._kind(ts)
        if kind is None:
            raise errors.NotFoundError(f"no CAM series for run {run!r}, tag {tag!r}")
        self._kinds.put((run, tag), (experiment_id, kind))
        return kind

    def steps(self, ctx, experiment_id: str, run: str, tag: str) -> list[Step]:
        """The loaded steps of one series, oldest first; 404 if there is no such series (`read_steps`)."""
        return self.read_steps(ctx, experiment_id, run, tag)[0]

    def read_steps(self, ctx, experiment_id: str, run: str, tag: str) -> tuple[list[Step], int]:
        """The loaded steps of one series, oldest first, and how many steps this read could keep: TensorBoard's
        count, or fewer where their blob keys would pass the budget's share for steps (each key costs memory,
        and a step may hold up to 1,026 of them); 404 if there is no such series.

        Read again only when the series' newest step, wall time or length has
        changed (new steps, or a restarted writer); callers must not mutate it.
        """
        self._check_experiment(experiment_id)
        ts = self._time_series(ctx, experiment_id, run, tag)
        if ts is None:
            raise errors.NotFoundError(f"no CAM series for run {run!r}, tag {tag!r}")
        length = int(ts.max_length)
        limit = fmt.max_blobs(self._content_kind(ts))
        if length > limit:
            raise errors.NotFoundError(f"run {run!r}, tag {tag!r} declares steps of {length} blobs, "
                                       f"more than the {limit} a step may hold: it is damaged")
        version = (int(ts.max_step), float(ts.max_wall_time), length)
        known = self._steps.get((run, tag))
        if known is not None and known[:2] == (experiment_id, version):
            return known[2], known[3]
        per_step = max(length, 1) * (KEY_BYTES + 2 * (len(experiment_id) + len(run.encode()) + len(tag.encode())))
        kept = max(1, min(self._downsample, self.budget.steps // per_step))
        # The Python provider builds a key for every blob of every step before it downsamples, so a listing
        # costs its series' whole length: reserved from the count the last listing found (any experiment),
        # the whole gate while none is known, so that listings of large series take turns.
        count = self._counts.get((run, tag))
        with self._gate.hold(self._gate.capacity if count is None else min(count * per_step, self._gate.capacity)):
            result = self._provider.read_blob_sequences(
                ctx,
                experiment_id=experiment_id,
                plugin_name=fmt.PLUGIN_NAME,
                downsample=kept,
                run_tag_filter=provider.RunTagFilter(runs=[run], tags=[tag]),
            )
            data = result.get(run, {}).get(tag)
            if data is None:
                raise errors.NotFoundError(f"no CAM series for run {run!r}, tag {tag!r}")
            steps = [
                Step(run=run, tag=tag, step=int(d.step), wall_time=float(d.wall_time),
                     keys=tuple(ref.blob_key for ref in d.values))
                for d in data
            ]
            del result, data
        if len(steps) < kept:  # the whole series
            self._counts.put((run, tag), len(steps))
        else:  # downsampled: its length is unknown again
            self._counts.discard((run, tag))
        self._steps.put((run, tag), (experiment_id, version, steps, kept))
        return steps, kept

    def step(self, ctx, experiment_id: str, run: str, tag: str, step: int) -> Step:
        for s in self.steps(ctx, experiment_id, run, tag):
            if s.step == step:
                return s
        raise errors.NotFoundError(f"step {step} of run {run!r}, tag {tag!r} is not loaded")

    def blob(self, ctx, key: str) -> bytes:
        """A blob by its opaque key; 404 for any key the provider cannot resolve (the caller holds its cost).

        The Python provider leaks ValueError/KeyError/IndexError/RecursionError
        for garbage keys (and returns non-bytes for some crafted ones); the Rust
        one answers 400 or 404. All become the same 404.
        """
        try:
            data = self._provider.read_blob(ctx, blob_key=key)
        except (errors.InvalidArgumentError, errors.NotFoundError, ValueError, KeyError, IndexError, TypeError,
                RecursionError) as e:
            raise errors.NotFoundError("no blob for this key") from e
        if not isinstance(data, bytes):  # a crafted key can make the Python provider return an array
            raise errors.NotFoundError("no blob for this key")
        return data

    def blobs(self, ctx, keys: Sequence[str]) -> list[bytes]:
        """Several blobs at once: the Rust loader answers each read after ~40 ms, so they are read side by side."""
        pending = [self._pool.submit(self.blob, ctx, key) for key in keys[1:]]
        return [self.blob(ctx, keys[0]), *(future.result() for future in pending)] if keys else []

    def served_blob(self, ctx, key: str) -> bytes:
        """A blob for the /blob route, its read reserved on the gate: twice its size when this server has read
        it before (the Rust provider joins its chunks), UNKNOWN_READ_SHARE of the gate otherwise; 404 for one
        past any blob's limit (`fmt.MAX_BLOB_BYTES`), remembered so that asking again reads nothing."""
        known = self._sizes.get(key)
        if known is not None and known > fmt.MAX_BLOB_BYTES:
            raise errors.NotFoundError("blob larger than any this plugin writes: it is damaged")
        reserve = int(self._gate.capacity * UNKNOWN_READ_SHARE) if known is None else 2 * known
        with self._gate.hold(min(reserve, self._gate.capacity)):
            data = self.blob(ctx, key)
            self._sizes.put(key, len(data))
            if len(data) > fmt.MAX_BLOB_BYTES:
                raise errors.NotFoundError("blob larger than any this plugin writes: it is damaged")
        return data

    def _limits(self, kind: str | None) -> fmt.Limits:
        """A kind's limits (None: any kind's header), tightened to what this server's budget lets one decode hold."""
        return (fmt.HEADER_LIMITS if kind is None else fmt.kind_module(kind).LIMITS).within(self._gate.capacity)

    def _read_header(self, ctx, key: str, kind: str | None, *, checked: bool = True) -> dict:
        """A step's header read and parsed within its kind's limits (and checked as its kind says, unless not
        `checked`) while its worst case is reserved on the gate; a stored header past them is damaged."""
        limits = self._limits(kind)
        with self._gate.hold(limits.header_cost):
            data = self.blob(ctx, key)
            if len(data) > fmt.stored_bound(limits.header_bytes):
                raise fmt.FormatError(f"header blob of {len(data)} bytes, more than a header may hold")
            if kind is None or not checked:
                return fmt.parse_json_object(data, "header", limits)
            return fmt.kind_module(kind).parse_header(data, limits)

    def sequence(self, ctx, step: Step, kind: str | None = None) -> int:
        """The header's "sequence" of a step of a series of `kind` (None: any kind's limits): one blob read,
        no check of the header or maps beyond it (cheap enough for /steps)."""
        if not step.keys:
            raise fmt.FormatError("step holds no blobs")
        cache_key = (step.run, step.tag, step.step, step.wall_time)
        known = self._sequences.get(cache_key)
        sequence = known[1] if known is not None and known[0] == step.keys[fmt.HEADER_INDEX] else None
        if sequence is None:
            header = self._read_header(ctx, step.keys[fmt.HEADER_INDEX], kind, checked=False)
            sequence = header.get("sequence")
            if not isinstance(sequence, int) or isinstance(sequence, bool) or sequence < 0:
                raise fmt.FormatError("header has no non-negative integer 'sequence'")
            self._sequences.put(cache_key, (step.keys[fmt.HEADER_INDEX], sequence))
        return sequence

    def header(self, ctx, step: Step, kind: str = fmt.cam.KIND) -> dict:
        """The checked header of a step of a series of `kind` (raises `fmt.FormatError` if it is damaged)."""
        return self.checked(ctx, step, kind)[0]

    def checked(self, ctx, step: Step, kind: str = fmt.cam.KIND) -> tuple[dict, object]:
        """A step's checked header and what its kind's `check` says of its values (a CAM step: each
        map's (min, max), in the order of ``header["maps"]``).

        Every stored number is decoded once, so the tab can say which sample is
        damaged. Results are cached by the step (run, tag, step, wall time) and
        kept while its blob keys are the same; callers must not mutate them.
        """
        cache_key = (kind, step.run, step.tag, step.step, step.wall_time)
        known = self._headers.get(cache_key)
        if known is not None and known[0] == step.keys:
            return known[1], known[2]
        module = fmt.kind_module(kind)
        count = 1 + len(module.DATA)
        if len(step.keys) < count:
            raise fmt.FormatError(f"step holds {len(step.keys)} blobs, fewer than a header and its "
                                  f"{' and '.join(module.DATA) or 'nothing'}")
        header = self._read_header(ctx, step.keys[fmt.HEADER_INDEX], kind)
        limits = self._limits(kind)
        cost = module.decode_cost(header, limits)  # the data blobs as stored included
        if cost > self._gate.capacity:
            raise fmt.FormatError(f"reading and checking its data would hold {cost / MIB:.1f} MiB, more than the "
                                  f"{self._gate.capacity / MIB:.1f} MiB this server's memory budget gives it "
                                  "(--cam_memory_budget_mb)")
        with self._gate.hold(cost):
            data = self.blobs(ctx, step.keys[1:count])
            if sum(map(len, data)) > cost:
                raise fmt.FormatError(f"data blobs of {sum(map(len, data))} bytes, more than the header declares")
            for key, blob in zip(step.keys[1:count], data):
                self._sizes.put(key, len(blob))
            header, summary = module.check_data(header, *data, limits)
            del data
        if module.FIRST_PICTURE is not None:
            _check_inline_pictures(header, module.picture_count(header), len(step.keys) - module.FIRST_PICTURE)
        self._headers.put(cache_key, (step.keys, header, summary))
        return header, summary

    def picture_keys(self, ctx, experiment_id: str, run: str, tag: str, step: Step, header: dict,
                     first: int) -> list[str]:
        """The blob keys of a checked sample's pictures: its own, or the shared ones its "pictures_step" names."""
        at = fmt.pictures_step(header)
        if at is None:
            return list(step.keys[first:])
        try:
            keys = self.step(ctx, experiment_id, run, fmt.pictures_tag(tag), at).keys
        except errors.NotFoundError:
            raise fmt.FormatError(f"its pictures are stored with step {at}, which TensorBoard has not kept "
                                  "(--samples_per_plugin cam=0 keeps every step)") from None
        expected = fmt.kind_module(self.kind(ctx, experiment_id, run, tag)).picture_count(header)
        if len(keys) != expected:
            raise fmt.FormatError(f"header lists {expected} pictures, step {at} of its pictures holds {len(keys)}")
        return list(keys)

    def ranges(self, ctx, experiment_id: str, run: str, tag: str) -> list[dict]:
        """Min and max of each (method, layer) over every loaded step, image and target of a CAM series.

        The tab's "one scale over the series" normalisation: maps are stored raw,
        so one range keeps their brightness comparable as training goes on.
        Damaged steps are left out (the tab reports them where they are shown).
        """
        found: dict[tuple[str, str], list[float]] = {}
        for step in self.steps(ctx, experiment_id, run, tag):
            try:
                header, extents = self.checked(ctx, step, fmt.cam.KIND)
            except (fmt.FormatError, errors.NotFoundError):
                continue
            for entry, (lo, hi) in zip(header["maps"], extents):
                span = found.setdefault((entry["method"], entry["layer"]), [lo, hi])
                span[0], span[1] = min(span[0], lo), max(span[1], hi)
        return [{"method": m, "layer": layer, "min": lo, "max": hi} for (m, layer), (lo, hi) in sorted(found.items())]
