"""The model sampling of a host model and its noise path (midms_core.GaussianPath).

Outside the sampler's own call, the sampling is read from the ModelPatcher a node was given:
the host shares one BaseModel between all clones of a checkpoint, and its ``model_sampling``
attribute holds the object patch of whichever clone was loaded last (a ModelSamplingSD3 /
-Flux / -Discrete node's clone), not the sampling of the clone in hand.
"""

from __future__ import annotations

from ..midms_core import EPSILON, RECTIFIED_FLOW, GaussianPath


def model_sampling(model):
    """The model sampling the host runs for the ModelPatcher ``model``: its own object patch, else
    the BaseModel's original (kept in the patch backup while another clone's patch is applied)."""
    get = getattr(model, "get_model_object", None)
    if get is not None:
        return get("model_sampling")
    # the 2024 host: no get_model_object, and a clone's backup of the original is not reliably
    # shared (unpatching rebinds it), so the BaseModel's own sampling is rebuilt the way its
    # constructor built it (from its config and model type: deterministic, cheap)
    if "model_sampling" in model.object_patches:
        return model.object_patches["model_sampling"]
    import comfy.model_base

    base = model.model
    build = getattr(comfy.model_base, "model_sampling", None)
    if build is not None and hasattr(base, "model_type") and hasattr(base, "model_config"):
        return build(base.model_config, base.model_type)
    return base.model_sampling


def base_in_call(model, fallback):
    """The BaseModel a KSAMPLER function's ``model`` (the host's denoiser: KSamplerX0Inpaint ->
    the guider / CFG wrapper -> the BaseModel) runs, else the ModelPatcher ``fallback``'s."""
    base = getattr(getattr(model, "inner_model", None), "inner_model", None)
    return base if hasattr(base, "model_sampling") else fallback.model


def sampling_in_call(model, fallback):
    """The model sampling inside a KSAMPLER function: the BaseModel's, loaded with the sampled
    clone's patches, which is what the host itself reads during the call (:func:`base_in_call`);
    ``fallback``: the ModelPatcher to read it from where that chain is not there."""
    base = getattr(getattr(model, "inner_model", None), "inner_model", None)
    return base.model_sampling if hasattr(base, "model_sampling") else model_sampling(fallback)


def path_of(sampling) -> GaussianPath:
    """The noise path of a host model sampling object: CONST (SD3.x, Flux: rectified flow,
    x = (1 - sigma) x0 + sigma eps) or the epsilon / v-prediction relation x = x0 + sigma eps
    (every other model the host samples in its sigma space). Hosts before CONST existed
    (2024-03) have only the latter."""
    import comfy.model_sampling

    check_plain_noise(sampling)
    const = getattr(comfy.model_sampling, "CONST", None)
    return RECTIFIED_FLOW if const is not None and isinstance(sampling, const) else EPSILON


def check_plain_noise(sampling) -> None:
    """ValueError for a model sampling whose noising is not x0 plus unit Gaussian noise on its
    path: newer hosts' image-to-image samplings (IMG_TO_IMG_FLOW / IMG_TO_IMG_VELOCITY, CONST
    subclasses whose noise_scaling returns the input image) and a ``noise_scale`` other than 1.
    MIDMs' noising, DDIM steps and inversion assume the plain path; read from ComfyUI 0.38's
    source, not yet run on such a model."""
    name = type(sampling).__name__
    if name.startswith("IMG_TO_IMG"):
        raise ValueError(f"this model samples as {name}: it starts from an input image, not from noise, so MIDMs' "
                         "noising and DDIM steps do not apply; use the family's text-to-image model")
    scale = getattr(sampling, "noise_scale", 1.0)
    if isinstance(scale, (int, float)) and abs(float(scale) - 1.0) > 1e-6:
        raise ValueError(f"this model's sampling scales its noise by {float(scale):g} (noise_scale): MIDMs' noising "
                         "and DDIM steps assume unit noise; set the model's noise scale to 1")


def noise_path(model) -> GaussianPath:
    """The noise path of the ModelPatcher ``model`` (its own sampling, see :func:`model_sampling`)."""
    return path_of(model_sampling(model))


def is_rectified_flow(model) -> bool:
    """True when the ModelPatcher ``model`` samples as rectified flow."""
    return noise_path(model).kind == RECTIFIED_FLOW.kind


def sampling_path(model, fallback) -> GaussianPath:
    """The noise path inside a KSAMPLER function (:func:`sampling_in_call`)."""
    return path_of(sampling_in_call(model, fallback))
