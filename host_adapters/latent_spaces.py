"""Which latent space a host model works in, and the check at every node where latents meet a
model: a latent of another family's VAE (16 channels into an SD1.5 U-Net, 4 into SD3) would
otherwise fail deep inside the model with a tensor-shape traceback."""

from __future__ import annotations

from typing import Optional

import torch

from .errors import NodeInputError


def latent_family(base_model) -> str:
    """The host's name of a BaseModel's latent format (SD15, SDXL, SD3, Flux, ...)."""
    return type(base_model.latent_format).__name__


def latent_channels(base_model) -> Optional[int]:
    """Channels of the model's latents: its format's ``latent_channels``, or where a host's
    format predates that attribute (2024), the rows of its RGB preview factors; None if neither."""
    fmt = base_model.latent_format
    channels = getattr(fmt, "latent_channels", None)
    if channels is None:
        factors = getattr(fmt, "latent_rgb_factors", None)
        channels = len(factors) if factors else None
    return int(channels) if channels is not None else None


def check_latent_space(base_model, latent: torch.Tensor, where: str, latent_input: str,
                       model_input: str = "'model'") -> None:
    """NodeInputError naming both inputs unless ``latent`` (B, C, ...) has the model's channels
    (``model_input``: how the message names the model, quoted)."""
    want = latent_channels(base_model)
    if want is None or latent.dim() < 2 or latent.shape[1] == want:
        return
    raise NodeInputError(
        f"{where}: '{latent_input}' holds {latent.shape[1]}-channel latents, but {model_input} "
        f"({latent_family(base_model)}) works on {want}-channel latents: they come from different model families. "
        f"Encode the images with the VAE of the model's own family (the checkpoint's VAE, or the VAE file made "
        f"for that model), or use a model of the VAE's family")


def check_finite_latent(latent: torch.Tensor, where: str, latent_input: str) -> None:
    """NodeInputError naming the input when a latent holds NaN or infinite values."""
    if not bool(torch.isfinite(latent).all()):
        raise NodeInputError(
            f"{where}: '{latent_input}' holds NaN or infinite values; it comes from a node that failed "
            "numerically (e.g. a VAE in half precision, or a sampler that diverged): fix that node first or "
            "encode the image again")
