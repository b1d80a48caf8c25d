"""CAM methods by name. Each is a short `CamMethod` subclass holding its paper's formula."""

from __future__ import annotations

from typing import Iterable, Union

from writer_ext.methods.activation import CAM, FEM, EigenCAM, RandomCAM, SobelCAM
from writer_ext.methods.base import CamInputs, CamMethod
from writer_ext.methods.contrast import FinerCAM, FinerCAMWeighted
from writer_ext.methods.gradient import (
    EigenGradCAM,
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    XGradCAM,
)
from writer_ext.methods.input_level import FullGrad, GuidedBackprop, GuidedGradCAM
from writer_ext.methods.noisy import ISCAM, SSCAM
from writer_ext.methods.perturbation import AblationCAM, ScoreCAM
from writer_ext.methods.projection import KPCACAM, SegEigenCAM
from writer_ext.methods.shapley import ShapleyCAM

METHODS: dict[str, type[CamMethod]] = {
    cls.name: cls
    for cls in (
        GradCAM, GradCAMPlusPlus, XGradCAM, LayerCAM, HiResCAM, GradCAMElementWise, EigenGradCAM,
        CAM, EigenCAM, FEM, ScoreCAM, AblationCAM, SSCAM, ISCAM, RandomCAM, SobelCAM,
        ShapleyCAM, FullGrad, GuidedBackprop, GuidedGradCAM, FinerCAM, FinerCAMWeighted, KPCACAM, SegEigenCAM,
    )
}


def get_methods(names: Union[str, Iterable[str]]) -> list[CamMethod]:
    """Method instances for names given case-insensitively (one string or several)."""
    if isinstance(names, str):
        names = [names]
    try:
        names = list(names)
    except TypeError:
        raise TypeError(f"methods must be a string or a list of strings, got {type(names).__name__}") from None
    if not names:
        raise ValueError("methods: give at least one method")
    chosen: list[CamMethod] = []
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"methods must be strings, got {type(name).__name__}")
        cls = METHODS.get(name.lower())
        if cls is None:
            raise ValueError(f"methods: unknown method {name!r}; expected one of {sorted(METHODS)}")
        if all(m.name != cls.name for m in chosen):
            chosen.append(cls())
    return chosen


__all__ = [
    "CAM", "KPCACAM", "METHODS", "AblationCAM", "CamInputs", "CamMethod", "EigenCAM", "EigenGradCAM", "FEM",
    "FinerCAM", "FinerCAMWeighted", "FullGrad", "GradCAM", "GradCAMElementWise", "GradCAMPlusPlus",
    "GuidedBackprop", "GuidedGradCAM", "HiResCAM", "ISCAM", "LayerCAM", "RandomCAM", "SSCAM", "ScoreCAM",
    "SegEigenCAM", "ShapleyCAM", "SobelCAM", "XGradCAM", "get_methods",
]
