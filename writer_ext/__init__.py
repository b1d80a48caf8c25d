"""PyTorch side of tensorboard-plugin-cam: class activation maps computed
training-safely from hooks, logged as raw numbers for the "Activations & CAM"
TensorBoard tab.

Rooms: `model/` (torch plumbing), `methods/` (one class per paper), `targets/` (what a map explains),
`engine` (`compute_cams`), `metrics/` (how good a map is), `evaluation/` (over a data set), `summaries/`
(writing each series kind), `monitor` and `integrations/` (inside a training loop); docs/ARCHITECTURE.md."""

from writer_ext import metrics
from writer_ext.engine import CamResult, compute_cams
from writer_ext.evaluation.result import EvalResult
from writer_ext.methods import METHODS
from writer_ext.metrics.sanity import SanityResult, sanity_check
from writer_ext.model.capture import capture
from writer_ext.monitor import CamMonitor
from writer_ext.summaries.activations import add_activations
from writer_ext.summaries.cam import add_cam, add_cam_maps
from writer_ext.summaries.evaluation import add_evaluation, evaluate
from writer_ext.summaries.model import add_model_summary, summary
from writer_ext.summaries.sanity import add_sanity_check
from writer_ext.targets import Detection, MultiLabel, Regression, SemanticSegmentation, Similarity
from writer_ext.writer import SummaryWriter

__all__ = [
    "METHODS", "CamMonitor", "CamResult", "Detection", "EvalResult", "MultiLabel", "Regression", "SanityResult",
    "SemanticSegmentation", "Similarity", "SummaryWriter", "add_activations", "add_cam", "add_cam_maps",
    "add_evaluation", "add_model_summary", "add_sanity_check", "capture", "compute_cams", "evaluate", "metrics",
    "sanity_check", "summary",
]
