"""The TensorBoard backend of the "Activations & CAM" tab.

`CamLoader` is what the ``tensorboard_plugins`` entry point names. This module
imports only TensorBoard, werkzeug and numpy (through `format`): TensorBoard
imports it at start-up and dies if the import fails or drags in torch.
"""

from __future__ import annotations

from pathlib import Path

from tensorboard import errors, plugin_util
from tensorboard.backend import http_util
from tensorboard.plugins import base_plugin
from werkzeug import wrappers

from tensorboard_plugin_cam import budget
from tensorboard_plugin_cam import format as fmt
from tensorboard_plugin_cam.reader import CamReader

TAB_NAME = "Activations & CAM"

# Fixed MIME types by extension: the OS registry must not decide (on Windows it
# may say text/plain for .js, which browsers refuse for module scripts).
_STATIC_TYPES = {".js": "text/javascript", ".css": "text/css"}


# A series' description is rendered as Markdown at every /series request: one from a hostile log must not
# cost seconds and megabytes each time.
MAX_DESCRIPTION_CHARS = 65_536


def _description_html(text: str) -> str:
    """A series' description as safe HTML; one past MAX_DESCRIPTION_CHARS is left out, saying so."""
    if len(text) > MAX_DESCRIPTION_CHARS:
        return f"<p>(description longer than {MAX_DESCRIPTION_CHARS:,} characters left out)</p>"
    return plugin_util.markdown_to_safe_html(text)


def _frontend_dir() -> Path:
    """The installed frontend (package data), or `frontend/` of a source checkout."""
    here = Path(__file__).resolve().parent
    installed = here / "frontend"
    return installed if installed.is_dir() else here.parent / "frontend"


def _load_static_files() -> dict[str, tuple[bytes, str]]:
    """The allow-list of static files: exact relative path ("index.js", "cam/paint.js") -> (content, MIME type)."""
    root = _frontend_dir()
    files = {}
    for path in sorted(root.rglob("*")):
        content_type = _STATIC_TYPES.get(path.suffix)
        if content_type and path.is_file():
            files[path.relative_to(root).as_posix()] = (path.read_bytes(), content_type)
    return files


class CamPlugin(base_plugin.TBPlugin):
    plugin_name = fmt.PLUGIN_NAME

    def __init__(self, context: base_plugin.TBContext):
        hint = (context.sampling_hints or {}).get(self.plugin_name)
        mb = budget.budget_mb(getattr(context.flags, budget.FLAG, None))
        budget.fix_mmap_threshold()
        self._reader = CamReader(context.data_provider, downsample=hint or 0, budget=budget.Budget(mb))
        self._static = _load_static_files()

    def get_plugin_apps(self):
        return {
            "/static/*": self._serve_static,
            "/series": self._serve_series,
            "/steps": self._serve_steps,
            "/sample": self._serve_sample,
            "/ranges": self._serve_ranges,
            "/blob": self._serve_blob,
        }

    def is_active(self) -> bool:
        return False  # TensorBoard's list_plugins check already activates the tab

    def frontend_metadata(self) -> base_plugin.FrontendMetadata:
        return base_plugin.FrontendMetadata(es_module_path="/static/index.js", tab_name=TAB_NAME)

    # -- helpers -----------------------------------------------------------------

    @staticmethod
    def _where(request) -> tuple[object, str]:
        return plugin_util.context(request.environ), plugin_util.experiment_id(request.environ)

    @staticmethod
    def _arg(request, name: str) -> str:
        value = request.args.get(name)
        if value is None or value == "":
            raise errors.InvalidArgumentError(f"missing query parameter {name!r}")
        return value

    @classmethod
    def _int_arg(cls, request, name: str) -> int:
        value = cls._arg(request, name)
        try:
            return int(value)
        except ValueError:
            raise errors.InvalidArgumentError(f"query parameter {name!r} must be an integer") from None

    # -- routes ------------------------------------------------------------------

    @wrappers.Request.application
    def _serve_static(self, request):
        name = request.path.rsplit("/static/", 1)[-1]
        entry = self._static.get(name)
        if entry is None:
            raise errors.NotFoundError("no such static file")
        content, content_type = entry
        return http_util.Respond(request, content, content_type)

    @wrappers.Request.application
    def _serve_series(self, request):
        ctx, eid = self._where(request)
        series = [{**vars(s), "description": _description_html(s.description)} for s in self._reader.series(ctx, eid)]
        return http_util.Respond(request, {"series": series}, "application/json")

    @wrappers.Request.application
    def _serve_steps(self, request):
        ctx, eid = self._where(request)
        run, tag = self._arg(request, "run"), self._arg(request, "tag")
        steps, kept = self._reader.read_steps(ctx, eid, run, tag)
        body = {
            "steps": [{"step": s.step, "wall_time": s.wall_time} for s in steps],
            "logged": self._logged_count(ctx, eid, steps, kept),
            # who may have dropped steps: this plugin's budget (it could keep no more) or TensorBoard
            "kept_by": "budget" if len(steps) >= kept and kept < self._reader.capacity else "tensorboard",
        }
        return http_util.Respond(request, body, "application/json")

    def _logged_count(self, ctx, eid: str, steps, kept: int) -> int | None:
        """How many samples the writer logged, from the newest header's sequence.

        The newest step is always kept, so comparing this with the number of
        loaded steps tells the tab whether steps were dropped. With fewer steps
        than the read could keep (`kept`), none were: no header is read.
        """
        if len(steps) < kept:
            return len(steps)
        try:
            newest = steps[-1]
            return self._reader.sequence(ctx, newest, self._reader.kind(ctx, eid, newest.run, newest.tag)) + 1
        except (fmt.FormatError, errors.NotFoundError):
            return None

    @wrappers.Request.application
    def _serve_sample(self, request):
        """A step of any kind: its checked header, the keys of its data blobs (``<name>_key``) and pictures."""
        ctx, eid = self._where(request)
        run, tag = self._arg(request, "run"), self._arg(request, "tag")
        number = self._int_arg(request, "step")
        kind = self._reader.kind(ctx, eid, run, tag)
        step = self._reader.step(ctx, eid, run, tag, number)
        module = fmt.kind_module(kind)
        body = {"step": step.step, "wall_time": step.wall_time, "kind": kind}
        try:
            header = self._reader.header(ctx, step, kind)
            sample = {"header": header, **{f"{name}_key": key for name, key in zip(module.DATA, step.keys[1:])}}
            if module.FIRST_PICTURE is not None:
                sample["image_keys"] = self._reader.picture_keys(ctx, eid, run, tag, step, header,
                                                                 module.FIRST_PICTURE)
            if header.get("skipped") is not None:
                sample["error"] = f"Skipped at step {step.step}: {header['skipped']}"
            body.update(sample)  # all or nothing: a damaged sample has only its error
        except fmt.FormatError as e:
            body["error"] = f"This sample is damaged: {e}"
        return http_util.Respond(request, body, "application/json")

    @wrappers.Request.application
    def _serve_ranges(self, request):
        ctx, eid = self._where(request)
        run, tag = self._arg(request, "run"), self._arg(request, "tag")
        if self._reader.kind(ctx, eid, run, tag) != fmt.cam.KIND:
            raise errors.NotFoundError(f"run {run!r}, tag {tag!r} holds no class activation maps")
        return http_util.Respond(request, {"ranges": self._reader.ranges(ctx, eid, run, tag)}, "application/json")

    @wrappers.Request.application
    def _serve_blob(self, request):
        ctx, _ = self._where(request)
        data = self._reader.served_blob(ctx, self._arg(request, "key"))
        content_type = fmt.image_mime_type(data) or "application/octet-stream"
        # Blobs never change once written, so the browser may keep them.
        return http_util.Respond(request, data, content_type, expires=3600)


class CamLoader(base_plugin.TBLoader):
    """Loads `CamPlugin`, adds ``--cam_memory_budget_mb`` and makes TensorBoard keep every CAM step by default.

    TensorBoard keeps 10 blob samples per tag unless told otherwise. Unless the
    user's own ``--samples_per_plugin`` names ``cam``, this adds ``cam=0``
    (keep all) before TensorBoard builds its data loader.
    """

    def define_flags(self, parser) -> None:
        parser.add_argument(
            f"--{budget.FLAG}", type=int, default=None, metavar="MB",
            help=f"Memory the CAM plugin may use for its caches and decodes (default: ${budget.ENV_VAR}, else "
                 f"{budget.DEFAULT_MB}; at least {budget.MIN_MB}). Larger steps than it allows are shown as "
                 "damaged.")

    def fix_flags(self, flags) -> None:
        hints = getattr(flags, "samples_per_plugin", None)
        if isinstance(hints, dict) and fmt.PLUGIN_NAME not in hints:
            flags.samples_per_plugin = {**hints, fmt.PLUGIN_NAME: 0}
        try:
            budget.budget_mb(getattr(flags, budget.FLAG, None))
        except ValueError as e:
            raise base_plugin.FlagsError(str(e)) from None

    def load(self, context: base_plugin.TBContext) -> CamPlugin:
        return CamPlugin(context)
