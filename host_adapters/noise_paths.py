"""The noise path (midms_core.GaussianPath) of a host model, read from its model sampling."""

from __future__ import annotations

from ..midms_core import EPSILON, RECTIFIED_FLOW, GaussianPath


def is_rectified_flow(base_model) -> bool:
    """True for a host model sampled as rectified flow (the host's CONST: SD3.x, Flux). Hosts
    before CONST existed (2024-03) have none."""
    import comfy.model_sampling

    const = getattr(comfy.model_sampling, "CONST", None)
    return const is not None and isinstance(base_model.model_sampling, const)


def noise_path(base_model) -> GaussianPath:
    """The model's noise path from the host's model sampling: CONST (SD3.x, Flux: rectified
    flow, x = (1 - sigma) x0 + sigma eps) or the epsilon / v-prediction relation x = x0 + sigma
    eps (every other model the host samples in its sigma space). Hosts before CONST existed
    (2024-03) have only the latter."""
    return RECTIFIED_FLOW if is_rectified_flow(base_model) else EPSILON


def sampling_path(model, fallback) -> GaussianPath:
    """The noise path of the model a KSAMPLER function is handed (KSamplerX0Inpaint -> the host's
    model wrapper -> its BaseModel), else of ``fallback`` (a ModelPatcher)."""
    base = getattr(getattr(model, "inner_model", None), "inner_model", None)
    return noise_path(base if hasattr(base, "model_sampling") else fallback.model)
