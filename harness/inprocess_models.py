"""Tiny seeded models built in-process from a ComfyUI host's OWN classes, with their conditionings.

Where :mod:`harness.tiny_models` writes checkpoint FILES a host detects, this module builds
``ModelPatcher`` objects directly from ``comfy.supported_models`` configs, for code that already
runs inside a host (:class:`harness.host.InProcessHost`; ``comfy.*`` must be importable):

* U-Nets of the SD1.5 and SDXL families (:func:`build_unet`): 32 base channels, two levels;
* DiTs (:func:`build_sd3`, :func:`build_flux`): an MMDiT / Flux of depth 1, 16 latent channels.
  Hosts before mid-2024 have neither class (check :func:`host_has` first).
* the 2025 families (:func:`build_new_family`: Flux.2, Z-Image, Qwen-Image, Chroma; 0.3.75 has
  all four, 0.3.64 Chroma and Qwen-Image), their conditionings as tensors of the right shape
  (:func:`new_family_conds`; no text encoders) and VAEs of their latent formats
  (:func:`build_flux2_vae`, :func:`build_wan21_vae`, :func:`build_vae16`); see
  docs/model_families.md.

The host's ops leave weights uninitialised, so every parameter is filled by
:func:`harness.tiny_models.init_tensor`, seeded by (seed, parameter name): a model is the same
for a given seed whatever the host version orders its parameters by. Builders run their own
``torch.inference_mode(False)``, so callers inside an inference-mode block (as the host's
executor runs nodes) get ordinary, writable weights.
"""

from __future__ import annotations

import zlib
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


# --------------------------------------------------------------------------------------------
# The 2025 families (Flux.2, Z-Image, Qwen-Image, Chroma): 0.3.75 has all, 0.3.64 Chroma and Qwen-Image
# --------------------------------------------------------------------------------------------
#: the family -> (the host's supported_models class, its latent format class) of each builder
NEW_FAMILIES = {"flux2": ("Flux2", "Flux2"), "zimage": ("ZImage", "Flux"), "qwen_image": ("QwenImage", "Wan21"),
                "chroma": ("Chroma", "Flux")}


def flux2_config() -> dict:
    """comfy.model_detection's Flux.2 layout (global modulation, patch 1, 128 latent channels,
    four RoPE axes, SiLU-gated MLPs, no biases, no pooled text input), narrow: hidden 64 = 2
    heads of 32 = sum(axes_dim); one double and one single stream block."""
    return {"image_model": "flux2", "in_channels": 128, "out_channels": 128, "patch_size": 1, "vec_in_dim": None,
            "context_in_dim": DIT_CONTEXT_WIDTH, "hidden_size": 64, "mlp_ratio": 3.0, "num_heads": 2, "depth": 1,
            "depth_single_blocks": 1, "axes_dim": [8, 8, 8, 8], "theta": 2000, "qkv_bias": False,
            "guidance_embed": True, "global_modulation": True, "mlp_silu_act": True, "ops_bias": False,
            "default_ref_method": "index", "ref_index_scale": 10.0}


def zimage_config() -> dict:
    """comfy.model_detection's Z-Image layout (a Lumina 2 NextDiT with Z-Image's modulation, time
    scale and 32-token padding), narrow: dim 256 (the smallest: Z-Image's timestep embedding is
    256 wide and its AdaLN reads min(dim, 256)) = 8 heads of 32 = sum(axes_dims); two layers,
    one noise / context refiner layer each."""
    return {"image_model": "lumina2", "patch_size": 2, "in_channels": 16, "dim": 256, "cap_feat_dim": DIT_CONTEXT_WIDTH,
            "n_layers": 2, "n_refiner_layers": 1, "qk_norm": True, "n_heads": 8, "n_kv_heads": 8,
            "axes_dims": [8, 12, 12], "axes_lens": [1536, 512, 512], "rope_theta": 256.0,
            "ffn_dim_multiplier": 8.0 / 3.0, "multiple_of": 64, "z_image_modulation": True, "time_scale": 1000.0,
            "pad_tokens_multiple": 32}


def qwen_image_config() -> dict:
    """comfy.model_detection's Qwen-Image layout (patch 2 over the Wan 2.1 latent: 64 inputs, 16
    outputs), narrow: 2 heads of 32 (hidden 64), text width 64, two transformer blocks."""
    return {"image_model": "qwen_image", "in_channels": 64, "out_channels": 16, "patch_size": 2, "num_layers": 2,
            "attention_head_dim": 32, "num_attention_heads": 2, "joint_attention_dim": DIT_CONTEXT_WIDTH,
            "axes_dims_rope": (8, 12, 12)}


def chroma_config() -> dict:
    """comfy.model_detection's Chroma layout (Flux blocks without modulation of their own, fed by
    the distilled guidance approximator; T5 text only), narrow: hidden 64 = 2 heads of 32, one
    double and one single block, an approximator of one layer of width 32 (its input stays 64:
    16 timestep + 16 guidance + 32 index features)."""
    return {"image_model": "chroma", "in_channels": 64, "out_channels": 64, "context_in_dim": DIT_CONTEXT_WIDTH,
            "hidden_size": 64, "mlp_ratio": 4.0, "num_heads": 2, "depth": 1, "depth_single_blocks": 1,
            "axes_dim": [4, 14, 14], "theta": 10000, "patch_size": 2, "qkv_bias": True, "in_dim": 64, "out_dim": 64,
            "hidden_dim": 32, "n_layers": 1}


_CONFIGS = {"flux2": flux2_config, "zimage": zimage_config, "qwen_image": qwen_image_config, "chroma": chroma_config}
_SEEDS = {"flux2": 21, "zimage": 22, "qwen_image": 23, "chroma": 24}


def _jitter(name: str, shape: tuple, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed((int(seed) * 1_000_003 + zlib.crc32(("jitter:" + name).encode())) % 2 ** 63)
    return 0.02 * torch.randn(shape, generator=g, dtype=torch.float32)


def seed_module(module: torch.nn.Module, seed: int, scale: float = 0.5, prefix: str = "") -> None:
    """Fill every parameter of ``module`` (a freshly built host model: the host's ops leave weights
    uninitialised) from (seed, ``prefix`` + name): ``scale`` times :func:`init_tensor`, except the
    scales of normalisation layers (any module whose class name says Norm: LayerNorm, RMSNorm,
    Wan's RMS_norm...), which are 1 plus 2 % seeded jitter, so the model is neither blown up nor
    flattened."""
    norm_scales = set()
    for mname, m in module.named_modules():
        if "norm" in type(m).__name__.lower():
            for pname, p in m.named_parameters(recurse=False):
                if p.dim() == 1 and pname in ("weight", "scale", "gamma"):
                    norm_scales.add(f"{mname}.{pname}" if mname else pname)
    with torch.inference_mode(False), torch.no_grad():
        for name, p in module.named_parameters():
            key = prefix + name
            if name in norm_scales:
                p.copy_(1.0 + _jitter(key, tuple(p.shape), seed))
            else:
                p.copy_(scale * init_tensor(key, tuple(p.shape), seed))
        for name, p in module.named_parameters():
            assert torch.isfinite(p).all(), name


def build_new_family(family: str, seed: Optional[int] = None):
    """ModelPatcher of the host's ``comfy.supported_models`` class for ``family`` ("flux2",
    "zimage", "qwen_image", "chroma"; see :data:`NEW_FAMILIES`) with its narrow config above,
    weights seeded by (seed, parameter name) at half the :func:`init_tensor` scale (as the tiny
    Flux), norm scales near 1. Check :func:`host_has` first (the 2024 host has none of these classes,
    0.3.64 only Chroma and QwenImage)."""
    import comfy.supported_models as sm

    class_name = NEW_FAMILIES[family][0]
    seed = _SEEDS[family] if seed is None else seed
    with torch.inference_mode(False), torch.no_grad():
        base = getattr(sm, class_name)(_CONFIGS[family]()).get_model({})
    seed_module(base, seed)
    assert type(base.latent_format).__name__ == NEW_FAMILIES[family][1], type(base.latent_format).__name__
    return _patcher(base)


def new_family_conds(family: str, tokens: int = 8):
    """(positive, negative) CONDITIONING for a model of :func:`build_new_family`, as the family's
    text encoder would give it, shapes only (the tests feed tensors of the right shape; no tiny
    text encoder is built): ``[[context (1, tokens, 64), {"pooled_output": None}]]`` (none of
    these families takes a pooled text vector; their text encoders return None there), positive
    zeros, negative seeded noise of scale 2. Flux.2's model pads the context to 512 tokens itself
    (``model_base.Flux2.extra_conds``); Z-Image reads ``num_tokens`` from the context's length."""
    g = torch.Generator().manual_seed(31 + sorted(NEW_FAMILIES).index(family))

    def cond(scale):
        return [[scale * torch.randn(1, tokens, DIT_CONTEXT_WIDTH, generator=g), {"pooled_output": None}]]

    return cond(0.0), cond(2.0)


def _shapes_of(make) -> dict:
    """{key: shape} of the module ``make()`` builds, built on the meta device (no memory)."""
    with torch.device("meta"):
        module = make()
    shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    del module
    return shapes


def _vae_state_dict(shapes: dict, seed: int, norm_markers=("norm", "gamma")) -> dict:
    """Seeded VAE weights: :func:`init_tensor`, scales of norms (keys of 1-D tensors naming a
    norm, Wan's ``gamma``) 1 plus jitter."""
    sd = {}
    for key, shape in shapes.items():
        leaf = key.rsplit(".", 1)[-1]
        if len(shape) == 1 and leaf in ("weight", "gamma") and any(m in key for m in norm_markers):
            sd[key] = 1.0 + _jitter(key, shape, seed)
        else:
            sd[key] = init_tensor(key, shape, seed)
    return sd


def build_flux2_vae(seed: int = 41):
    """The host's Flux.2 VAE (``comfy.sd.VAE`` detects it by its batch-normalised latent): the
    SD-VAE autoencoder with 32 latent channels, the 2 x 2 cells of its latent packed into 128
    channels at 16 pixels per cell and normalised by ``bn``. The host fixes this architecture
    (width 128, four levels; 84 M parameters): it cannot be made narrow, so it is seeded at full
    size (about 2 s to build). ``bn`` is the identity (mean 0, variance 1)."""
    import comfy.sd
    from comfy.ldm.models.autoencoder import AutoencoderKL

    ddconfig = {"double_z": True, "z_channels": 32, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0,
                "batch_norm_latent": True}
    shapes = _shapes_of(lambda: AutoencoderKL(ddconfig=ddconfig, embed_dim=32))
    with torch.inference_mode(False):
        sd = _vae_state_dict(shapes, seed)
        sd["bn.running_mean"] = torch.zeros(shapes["bn.running_mean"])
        sd["bn.running_var"] = torch.ones(shapes["bn.running_var"])
        sd["bn.num_batches_tracked"] = torch.tensor(0)
        vae = comfy.sd.VAE(sd=sd)
    assert vae.latent_channels == 128 and vae.spacial_compression_encode() == 16, (vae.latent_channels,)
    return vae


def build_wan21_vae(seed: int = 42, dim: int = 8):
    """The host's Wan 2.1 video VAE, narrow: width ``dim`` (real: 96; hosts since late 2025 read
    it from ``decoder.head.0.gamma``; older ones fix it at 96, and get that width, seeded the
    same way: about 1 s more per encode on a CPU). 16 latent channels at 8 pixels per cell, a 3-D
    latent: one image encodes to (1, 16, 1, h, w); a batch of images is read as the frames of
    one video (the host's VAE Encode does that too)."""
    import comfy.sd
    from comfy.ldm.wan.vae import WanVAE

    def make(width):
        shapes = _shapes_of(lambda: WanVAE(dim=width, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                                           attn_scales=[], temperal_downsample=[False, True, True], dropout=0.0))
        with torch.inference_mode(False):
            return comfy.sd.VAE(sd=_vae_state_dict(shapes, seed))

    try:
        vae = make(dim)
    except RuntimeError:  # a host that fixes the width (0.3.64): its size-mismatch error
        vae = make(96)
    assert vae.latent_channels == 16 and vae.latent_dim == 3, (vae.latent_channels, vae.latent_dim)
    return vae


def build_vae16(seed: int = 5):
    """A tiny TAESD with 16 latent channels (the Flux / SD3 latent space: Z-Image and Chroma use
    Flux's VAE), seeded as tests/comfy/test_flow_models_inprocess.py's ``vae16``."""
    import comfy.sd

    from harness.tiny_models import taesd_shapes

    with torch.inference_mode(False):
        sd = {k: init_tensor("first_stage_model." + k, shape, seed) for k, shape in taesd_shapes(16).items()}
        vae = comfy.sd.VAE(sd=sd)
    assert vae.latent_channels == 16
    return vae
