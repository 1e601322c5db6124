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


def video_latent_model(base_model) -> bool:
    """True when the host model works on a video VAE's 3-D latents (B, C, T, h, w), as Qwen-Image
    on Wan 2.1's (its latent format's ``latent_dimensions`` is 3; formats before that attribute: 2)."""
    return getattr(base_model.latent_format, "latent_dimensions", 2) == 3


def to_image_latent(latent: torch.Tensor, where: str, latent_input: str) -> torch.Tensor:
    """The pack's working form (B, C, h, w) of a host latent: a video VAE's latent of one frame
    (B, C, 1, h, w) without its frame axis; 4-D latents as they are. NodeInputError for a video
    latent of several frames (the pack translates images)."""
    if latent.dim() == 5:
        if latent.shape[2] != 1:
            raise NodeInputError(
                f"{where}: '{latent_input}' is a video latent of {latent.shape[2]} frames {tuple(latent.shape)}; MIDMs "
                "translates images: encode one image per latent (a video VAE reads a batch of images as the frames of "
                "one video), or pick one frame")
        return latent[:, :, 0]
    return latent


def to_host_latent(base_model, latent: torch.Tensor) -> torch.Tensor:
    """A working-form latent (B, C, h, w) in the host model's own form: (B, C, 1, h, w) for a
    video-latent model (:func:`video_latent_model`; what its VAE Encode and samplers give), else
    as it is."""
    if video_latent_model(base_model) and latent.dim() == 4:
        return latent.unsqueeze(2)
    return latent


def process_in(base_model, latent: torch.Tensor) -> torch.Tensor:
    """``base_model.process_latent_in`` of a working-form latent, through the model's own form
    (Wan 2.1's statistics broadcast over (B, C, T, h, w) only)."""
    out = base_model.process_latent_in(to_host_latent(base_model, latent))
    return out[:, :, 0] if out.dim() == 5 and latent.dim() == 4 else out


def process_out(base_model, latent: torch.Tensor) -> torch.Tensor:
    """``base_model.process_latent_out`` of a working-form latent (as :func:`process_in`)."""
    out = base_model.process_latent_out(to_host_latent(base_model, latent))
    return out[:, :, 0] if out.dim() == 5 and latent.dim() == 4 else out
