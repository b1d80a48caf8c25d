"""How good a map is, computed without logging: faithfulness (`confidence`: how the model's confidence moves
when the image is masked, deleted or inserted by the map), consistency (`consistency`: coherency, complexity,
ADCC), localization (`pointing`: the pointing games against a known object) and the sanity check (`sanity`: do
the maps depend on the weights); `records` holds what `add_cam(metrics=True)` scores."""

from tensorboard_plugin_cam.format.scores import LOCALIZATION
from writer_ext.metrics.confidence import confidence_change, deletion_insertion, faithfulness, saliency
from writer_ext.metrics.consistency import consistency
from writer_ext.metrics.pointing import energy_pointing_game, localization, pointing_game
from writer_ext.metrics.records import SCORED as METRICS
from writer_ext.metrics.records import for_result, random_baseline
from writer_ext.metrics.sanity import SanityResult, sanity_check

__all__ = [
    "LOCALIZATION", "METRICS", "SanityResult", "confidence_change", "consistency", "deletion_insertion",
    "energy_pointing_game", "faithfulness", "for_result", "localization", "pointing_game", "random_baseline",
    "saliency", "sanity_check",
]
