"""What a map explains: `select` turns a `targets` argument into one score per image and target;
`kinds` holds the targets beyond one class's logit (multi-label, regression, similarity, segmentation,
detection)."""

from writer_ext.targets.kinds import Detection, MultiLabel, Regression, SemanticSegmentation, Similarity, Target
from writer_ext.targets.select import Targets

__all__ = ["Detection", "MultiLabel", "Regression", "SemanticSegmentation", "Similarity", "Target", "Targets"]
