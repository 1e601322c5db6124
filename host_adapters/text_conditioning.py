"""The text a host model is conditioned on while the diffusion matcher reads its features: the
model's text widths and the empty prompt (DIFT's), checked against them."""

from __future__ import annotations

import torch

from .errors import NodeInputError
from .node_names import DIFFUSION_MATCHER

POOLED_DIM = 1280  # SDXL-family pooled CLIP-G output (zeros: the empty prompt)


def empty_prompt_tensors(conditioning, widths: tuple[int, int | None]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(cross_attn (1, T, context width), pooled_output (1, P) or None) of a CONDITIONING's first
    entry, checked against the model's text widths (context, pooled or None)."""
    where = f"{DIFFUSION_MATCHER}: 'empty_prompt'"
    try:
        cross, extra = conditioning[0][0], conditioning[0][1]
    except (TypeError, IndexError, KeyError):
        raise NodeInputError(f"{where} must be a CONDITIONING (connect a CLIP Text Encode with an empty text)") from None
    if not isinstance(cross, torch.Tensor) or cross.ndim != 3:
        raise NodeInputError(f"{where} must be a CONDITIONING (connect a CLIP Text Encode with an empty text)")
    context_dim, pooled_dim = widths
    if cross.shape[-1] != context_dim:
        raise NodeInputError(f"{where} has width {cross.shape[-1]} but the model's text input takes "
                             f"{context_dim}: encode it with this checkpoint's CLIP / text encoders")
    pooled = extra.get("pooled_output") if isinstance(extra, dict) else None
    if pooled is not None and pooled_dim is not None and pooled.shape[-1] != pooled_dim:
        raise NodeInputError(f"{where} has a pooled output of width {pooled.shape[-1]} but the model takes "
                             f"{pooled_dim}: encode it with this checkpoint's CLIP / text encoders")
    return cross[:1], (None if pooled is None else pooled[:1])


def text_widths(base) -> tuple[int, int | None]:
    """(context width, pooled width or None) of a host model: U-Nets' cross-attention (pooled:
    SDXL's CLIP-G), Flux.1's T5 / CLIP-L inputs (Flux.2 and Chroma: the text context only), SD3's
    context embedder / pooled (adm) input, Qwen-Image's text input (``joint_attention_dim``,
    3584 when the config leaves it out, as the host's class does)."""
    config = base.model_config.unet_config
    if config.get("context_dim"):  # a U-Net; SDXL's adm input takes the pooled CLIP-G output
        return int(config["context_dim"]), (POOLED_DIM if config.get("adm_in_channels") else None)
    if config.get("context_in_dim"):
        if config.get("image_model") in (None, "flux"):  # Flux.1: CLIP-L's pooled output (768)
            return int(config["context_in_dim"]), int(config.get("vec_in_dim") or 768)
        vec = config.get("vec_in_dim")  # Flux.2 (None), Chroma (no key): no pooled input
        return int(config["context_in_dim"]), (None if vec is None else int(vec))
    embedder = config.get("context_embedder_config")
    if embedder:
        adm = config.get("adm_in_channels")
        return int(embedder["params"]["in_features"]), (None if adm is None else int(adm))
    if config.get("image_model") == "qwen_image":
        return int(config.get("joint_attention_dim", 3584)), None
    raise NodeInputError(f"{DIFFUSION_MATCHER}: the model takes no text this node knows how to "
                         "feed; supported: text-conditioned U-Nets (SD1.x/2.x, SDXL) and Flux.1, Flux.2, Chroma, SD3 "
                         "and Qwen-Image DiTs")


def empty_text_conditions(base, x: torch.Tensor, widths: tuple[int, int | None], prompt=None) -> dict:
    """The model's extra conditions (``base.extra_conds``) for one pass on x (B, c, [t,] h, w) with the
    empty text: ``prompt`` (from :func:`empty_prompt_tensors`) or, without it, a zero context of
    77 tokens (and a zero pooled output where the model takes one)."""
    batch, height, width = x.shape[0], x.shape[-2] * 8, x.shape[-1] * 8
    context_dim, pooled_dim = widths
    cross = torch.zeros(1, 77, context_dim)
    pooled = None if pooled_dim is None else torch.zeros(1, pooled_dim)
    if prompt is not None:
        cross, given = prompt
        pooled = pooled if given is None else given
    # the key is there even without a pooled input: Flux-based models' encode_adm reads it
    kwargs = {"pooled_output": None if pooled is None else pooled.float().expand(batch, -1)}
    extra = base.extra_conds(cross_attn=cross.float().expand(batch, -1, -1), width=width, height=height,
                             target_width=width, target_height=height, device=x.device, noise=x,
                             latent_image=x, **kwargs)
    return {key: cond.cond.to(x.device) for key, cond in extra.items()}
