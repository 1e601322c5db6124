"""The correspondence node's outputs: the first warp on the host's output device, its confidence
at the condition's pixel size, and two previews the host can show (the warp decoded with the
context's VAE, the forward flow as colours)."""

from __future__ import annotations

import torch

from ..midms_core.images import flow_to_rgb, source_to_rgb, upsample_mask
from .devices import compute_device, empty_cache, output_device
from .encode import decode_latents
from .match import MIDMsMatch, initial_warp


def flow_preview(forward_flow: torch.Tensor, exemplar_grid: tuple[int, int], height: int, width: int) -> torch.Tensor:
    """The flow (B, 2, h, w) onto an exemplar grid (h', w') as a host IMAGE (B, height, width, 3):
    hue the direction and brightness the length of each cell's displacement, nearest-upsampled so
    cells stay visible."""
    flow = flow_to_rgb(forward_flow, exemplar_grid).movedim(-1, 1)
    return torch.nn.functional.interpolate(flow, size=(height, width), mode="nearest").movedim(1, -1)


def warp_with_previews(match: MIDMsMatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first warp of ``match`` on the compute device, returned on the output device as
    (warped latent (B, C, h, w), confidence MASK (B, H, W), warped preview IMAGE, flow preview
    IMAGE (B, H, W, 3)); the warped preview is the flow preview when the context has no VAE."""
    context = match.context
    result = initial_warp(match, compute_device())
    out = output_device()
    warped = result.warped.to(out)
    height, width = context.condition_image.shape[-2:]
    mask = upsample_mask(result.mask, height, width).to(out)
    flow = flow_preview(result.forward_flow, tuple(context.exemplar_latent.shape[-2:]), height, width).to(out)
    preview = decode_latents(context.vae, warped) if context.vae is not None else flow
    empty_cache()
    return warped, mask, preview, flow


def source_preview(match: MIDMsMatch) -> torch.Tensor:
    """Which exemplar each condition position takes its appearance from (a colour per exemplar,
    mixed by share, black where no exemplar may serve), as a host IMAGE (B, H, W, 3) at the
    condition's size; one colour everywhere for a single exemplar."""
    context = match.context
    result = initial_warp(match, compute_device())
    source = result.source
    if source is None:  # one exemplar: all from it, except where a restriction left no source
        source = (result.forward_flow[:, :1] >= 0).float()
    height, width = context.condition_image.shape[-2:]
    rgb = source_to_rgb(source).movedim(-1, 1)
    out = torch.nn.functional.interpolate(rgb, size=(height, width), mode="nearest").movedim(1, -1)
    return out.to(output_device())
