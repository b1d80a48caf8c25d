"""How good a map is, computed without logging: faithfulness (`confidence`: how the model's confidence moves
when the image is masked, deleted or inserted by the map), localization (`pointing`: the pointing games
against a known object) and the sanity check (`sanity`: do the maps depend on the weights)."""

from tensorboard_plugin_cam.format.scores import LOCALIZATION
from writer_ext.metrics.confidence import (
    METRICS,
    confidence_change,
    deletion_insertion,
    faithfulness,
    for_result,
    random_baseline,
    saliency,
)
from writer_ext.metrics.pointing import energy_pointing_game, localization, pointing_game
from writer_ext.metrics.sanity import SanityResult, sanity_check

__all__ = [
    "LOCALIZATION", "METRICS", "SanityResult", "confidence_change", "deletion_insertion", "energy_pointing_game",
    "faithfulness", "for_result", "localization", "pointing_game", "random_baseline", "saliency", "sanity_check",
]
