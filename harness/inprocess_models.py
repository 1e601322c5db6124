"""Tiny seeded models built in-process from a ComfyUI host's OWN classes, with their conditionings.

Where :mod:`harness.tiny_models` writes checkpoint FILES a host detects, this module builds
``ModelPatcher`` objects directly from ``comfy.supported_models`` configs, for code that already
runs inside a host (:class:`harness.host.InProcessHost`; ``comfy.*`` must be importable):

* U-Nets of the SD1.5 and SDXL families (:func:`build_unet`): 32 base channels, two levels;
* DiTs (:func:`build_sd3`, :func:`build_flux`): an MMDiT / Flux of depth 1, 16 latent channels.
  Hosts before mid-2024 have neither class (check :func:`host_has` first).

The host's ops leave weights uninitialised, so every parameter is filled by
:func:`harness.tiny_models.init_tensor`, seeded by (seed, parameter name): a model is the same
for a given seed whatever the host version orders its parameters by. Builders run their own
``torch.inference_mode(False)``, so callers inside an inference-mode block (as the host's
executor runs nodes) get ordinary, writable weights.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from harness.tiny_models import init_tensor

IMAGE_SIDE = 64          # pixel size the SDXL size embeddings describe (latents 8 x 8)
DIT_CONTEXT_WIDTH = 64   # text-embedding width of the tiny DiTs (real SD3: 4096)
DIT_POOLED_WIDTH = 32    # pooled-text width of the tiny DiTs (real SD3: 2048)


def host_has(model_class: str) -> bool:
    """Whether the host's ``comfy.supported_models`` has ``model_class`` (e.g. "SD3", "Flux")."""
    import comfy.supported_models as sm

    return hasattr(sm, model_class)


def _patcher(base):
    import comfy.model_management as mm
    import comfy.model_patcher

    return comfy.model_patcher.ModelPatcher(base, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())


# --------------------------------------------------------------------------------------------
# U-Nets (SD1.5 and SDXL families)
# --------------------------------------------------------------------------------------------
def unet_config(family: str) -> dict:
    """Tiny U-Net config ("sd15" or "sdxl") in the layout ``comfy.model_detection.detect_unet_config``
    produces."""
    base = {"use_checkpoint": False, "image_size": 32, "use_spatial_transformer": True, "legacy": False,
            "in_channels": 4, "out_channels": 4, "model_channels": 32, "num_res_blocks": [1, 1],
            "channel_mult": [1, 2], "transformer_depth_middle": 1, "use_temporal_resblock": False,
            "use_temporal_attention": False}
    if family == "sd15":  # SD15 adds num_heads 8 -> 4 and 8 channels per head
        return {**base, "context_dim": 768, "adm_in_channels": None, "use_linear_in_transformer": False,
                "transformer_depth": [1, 1], "transformer_depth_output": [1, 1, 1, 1]}
    # SDXL: num_head_channels 64 -> transformers only at the 64-channel level and the middle
    return {**base, "context_dim": 2048, "adm_in_channels": 2816, "num_classes": "sequential",
            "use_linear_in_transformer": True, "transformer_depth": [0, 1],
            "transformer_depth_output": [0, 0, 1, 1]}


def sdxl_unet_config(model_channels: int, channel_mult: Sequence[int], num_res_blocks: int, depth: int,
                     first_level_depth: int = 0) -> dict:
    """An SDXL-family U-Net config of any width, in the layout ``comfy.model_detection`` produces
    for SDXL files: context 2048, adm 2816, linear proj_in; ``depth`` transformers at every level
    but the first (``first_level_depth``; SDXL has none there) and in the middle."""
    levels = len(channel_mult)
    per_level = [first_level_depth] + [depth] * (levels - 1)
    return {
        "use_checkpoint": False, "image_size": 32, "use_spatial_transformer": True, "legacy": False,
        "in_channels": 4, "out_channels": 4, "model_channels": model_channels,
        "num_res_blocks": [num_res_blocks] * levels, "channel_mult": list(channel_mult),
        "transformer_depth_middle": depth, "use_temporal_resblock": False, "use_temporal_attention": False,
        "context_dim": 2048, "adm_in_channels": 2816, "num_classes": "sequential", "use_linear_in_transformer": True,
        "transformer_depth": [d for d in per_level for _ in range(num_res_blocks)],
        "transformer_depth_output": [d for d in per_level for _ in range(num_res_blocks + 1)],
    }


def build_unet(family: str, seed: int, config: Optional[dict] = None):
    """ModelPatcher of the host's SD15 ("sd15": model_base.BaseModel) or SDXL ("sdxl":
    model_base.SDXL) class with ``config`` (default :func:`unet_config`), seeded weights."""
    import comfy.supported_models as sm

    with torch.inference_mode(False), torch.no_grad():
        base = (sm.SD15 if family == "sd15" else sm.SDXL)(config or unet_config(family)).get_model({})
        names = set()
        for name, p in base.named_parameters():
            assert name.startswith("diffusion_model."), name
            p.copy_(init_tensor(name, tuple(p.shape), seed))
            names.add(name)
        for name, p in base.named_parameters():
            assert torch.isfinite(p).all(), name
    assert names
    assert type(base).__name__ == ("BaseModel" if family == "sd15" else "SDXL")
    return _patcher(base)


def unet_conditioning(family: str, seed: int, scale: float, batch: int = 1):
    """CONDITIONING ``[[cross (batch, 77, 768 | 2048), extra]]``: ``scale`` times seeded noise; SDXL's
    extra holds the pooled output (batch, 1280) and the size embeddings of :data:`IMAGE_SIDE`."""
    g = torch.Generator().manual_seed(seed)
    ctx = 768 if family == "sd15" else 2048
    cross = scale * torch.randn(batch, 77, ctx, generator=g)
    extra = {}
    if family == "sdxl":
        extra = {"pooled_output": scale * torch.randn(batch, 1280, generator=g), "width": IMAGE_SIDE,
                 "height": IMAGE_SIDE, "crop_w": 0, "crop_h": 0, "target_width": IMAGE_SIDE,
                 "target_height": IMAGE_SIDE}
    return [[cross, extra]]


def unet_conds(family: str, batch: int = 1):
    """(positive, negative): positive zeros (as without CLIP); negative non-trivial (changes an
    Euler run by ~1 %)."""
    return unet_conditioning(family, 0, 0.0, batch), unet_conditioning(family, 11, 2.0, batch)


# --------------------------------------------------------------------------------------------
# DiTs (SD3 MMDiT and Flux); current hosts only
# --------------------------------------------------------------------------------------------
def build_sd3():
    """ModelPatcher of the host's SD3 class: an MMDiT of depth 1 (hidden 64, patch 2, 16 channels)."""
    import comfy.supported_models as sm

    config = {  # the layout comfy.model_detection gives an MMDiT state dict of depth 1
        "in_channels": 16, "patch_size": 2, "out_channels": 16, "depth": 1, "input_size": None,
        "adm_in_channels": DIT_POOLED_WIDTH, "num_patches": 16 * 16, "pos_embed_max_size": 16,
        "context_embedder_config": {"target": "torch.nn.Linear",
                                    "params": {"in_features": DIT_CONTEXT_WIDTH, "out_features": 64}},
        "pos_embed_scaling_factor": None, "x_block_self_attn_layers": [],
    }
    with torch.inference_mode(False), torch.no_grad():
        base = sm.SD3(config).get_model({})
        for name, p in base.named_parameters():
            p.copy_(0.5 * init_tensor(name, tuple(p.shape), 3))
        for name, b in base.named_buffers():
            if name.endswith("pos_embed"):
                b.copy_(0.1 * init_tensor(name, tuple(b.shape), 4))
    assert type(base).__name__ == "SD3"
    return _patcher(base)


def flux_config() -> dict:
    """comfy.model_detection's Flux layout, narrow: hidden 64 = 2 heads of 32 = sum(axes_dim)."""
    return {"image_model": "flux", "in_channels": 16, "out_channels": 16, "patch_size": 2,
            "vec_in_dim": DIT_POOLED_WIDTH, "context_in_dim": DIT_CONTEXT_WIDTH, "hidden_size": 64,
            "mlp_ratio": 4.0, "num_heads": 2, "depth": 1, "depth_single_blocks": 1, "axes_dim": [4, 14, 14],
            "theta": 10000, "qkv_bias": True, "guidance_embed": True}


def build_flux():
    """ModelPatcher of the host's Flux class with :func:`flux_config` (one double, one single block)."""
    import comfy.supported_models as sm

    with torch.inference_mode(False), torch.no_grad():
        base = sm.Flux(flux_config()).get_model({})
        for name, p in base.named_parameters():
            p.copy_(0.5 * init_tensor(name, tuple(p.shape), 6))
    assert type(base).__name__ == "Flux"
    return _patcher(base)


def dit_conds():
    """(positive, negative) for the tiny DiTs: ``[[context (1, 8, 64), {"pooled_output": (1, 32)}]]``,
    positive zeros, negative seeded noise of scale 2."""
    g = torch.Generator().manual_seed(11)

    def cond(scale):
        return [[scale * torch.randn(1, 8, DIT_CONTEXT_WIDTH, generator=g),
                 {"pooled_output": scale * torch.randn(1, DIT_POOLED_WIDTH, generator=g)}]]

    return cond(0.0), cond(2.0)
