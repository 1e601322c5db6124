"""Tiny, seeded, SD1.5-shaped checkpoints that a real ComfyUI recognises.

Pure functions on torch + safetensors: importable without ComfyUI (no weights are downloaded;
every tensor is generated here).

What ComfyUI needs to take a file for SD1.5 (checked against the 2024-03 host, commit a28a9dc8,
``comfy/model_detection.py`` + ``comfy/supported_models.py:SD15``):

* U-Net under ``model.diffusion_model.`` with ``model_channels == 320``, cross-attention
  ``context_dim == 768`` (read off ``attn2.to_k``), conv ``proj_in`` (not linear) and no
  ``label_emb``. Depth is free: the smallest is one level (``channel_mult [1]``), one res block and
  one transformer per block, and no middle block (``transformer_depth_middle == -2``). That is
  18.7 M parameters (37.5 MB in fp16); with a middle block (res + transformer + res) 25.8 M.
* VAE under ``first_stage_model.``: a TAESD-shaped VAE (``taesd_encoder.*``, ``taesd_decoder.*``,
  ``vae_scale``; newer hosts also read ``vae_shift``, which the 2024 host ignores) is detected by
  ``taesd_decoder.1.weight`` and used as the checkpoint's VAE: 2.4 M parameters.
* CLIP under ``cond_stage_model.transformer.text_model.``: optional. Its size is fixed by the
  host's ``sd1_clip_config.json`` (CLIP-L, 123.6 M parameters, 247 MB in fp16) whatever the
  checkpoint holds, so it cannot be made tiny. Without it the loader logs "no CLIP/text encoder
  weights in checkpoint" and returns ``CLIP = None``; graphs then take CONDITIONING from
  elsewhere (``[[zeros(1, 77, 768), {}]]``; see the helper node ``MIDMSTestZeroConditioning``
  in ``harness/helper_nodes``). ``with_clip=True`` adds a random full-size CLIP-L so that
  ``CLIPTextEncode`` works too (~1-2 s and 247 MB more).

``write_tiny_sd15_controlnet`` writes an LDM-format SD1.5 ControlNet (``control_model.*``) whose
U-Net half is this U-Net's input side; ControlNetLoader detects and loads it (2024 host and
0.3.64). Its zero convolutions are small and random, not zero, so it changes the output.

Every tensor is initialised explicitly from its own generator seeded by ``(seed, key)``, so the
U-Net weights are the same with or without the optional parts, and a file is bit-identical for a
given seed and options.
"""

from __future__ import annotations

import math
import os
import zlib
from typing import Dict, Tuple

import torch

Shape = Tuple[int, ...]

MODEL_CHANNELS = 320
CONTEXT_DIM = 768
TIME_EMBED_DIM = 4 * MODEL_CHANNELS
LATENT_CHANNELS = 4
TAESD_CHANNELS = 64
CLIP_VOCAB = 49408
CLIP_TOKENS = 77
CLIP_WIDTH = 768
CLIP_LAYERS = 12
CLIP_MLP = 3072

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."


# --------------------------------------------------------------------------------------------
# key -> shape schemas
# --------------------------------------------------------------------------------------------
def _resblock(prefix: str, c_in: int, c_out: int) -> Dict[str, Shape]:
    s = {
        f"{prefix}in_layers.0.weight": (c_in,),
        f"{prefix}in_layers.0.bias": (c_in,),
        f"{prefix}in_layers.2.weight": (c_out, c_in, 3, 3),
        f"{prefix}in_layers.2.bias": (c_out,),
        f"{prefix}emb_layers.1.weight": (c_out, TIME_EMBED_DIM),
        f"{prefix}emb_layers.1.bias": (c_out,),
        f"{prefix}out_layers.0.weight": (c_out,),
        f"{prefix}out_layers.0.bias": (c_out,),
        f"{prefix}out_layers.3.weight": (c_out, c_out, 3, 3),
        f"{prefix}out_layers.3.bias": (c_out,),
    }
    if c_in != c_out:
        s[f"{prefix}skip_connection.weight"] = (c_out, c_in, 1, 1)
        s[f"{prefix}skip_connection.bias"] = (c_out,)
    return s


def _spatial_transformer(prefix: str, c: int, context: int, depth: int = 1,
                         linear: bool = False) -> Dict[str, Shape]:
    proj = (c, c) if linear else (c, c, 1, 1)  # conv proj_in: SD1.x; linear: SD2 / SDXL
    s = {
        f"{prefix}norm.weight": (c,),
        f"{prefix}norm.bias": (c,),
        f"{prefix}proj_in.weight": proj,
        f"{prefix}proj_in.bias": (c,),
    }
    for d in range(depth):
        b = f"{prefix}transformer_blocks.{d}."
        s.update({
            f"{b}attn1.to_q.weight": (c, c),
            f"{b}attn1.to_k.weight": (c, c),
            f"{b}attn1.to_v.weight": (c, c),
            f"{b}attn1.to_out.0.weight": (c, c),
            f"{b}attn1.to_out.0.bias": (c,),
            f"{b}ff.net.0.proj.weight": (8 * c, c),  # GEGLU: 2 * (4 * c)
            f"{b}ff.net.0.proj.bias": (8 * c,),
            f"{b}ff.net.2.weight": (c, 4 * c),
            f"{b}ff.net.2.bias": (c,),
            f"{b}attn2.to_q.weight": (c, c),
            f"{b}attn2.to_k.weight": (c, context),
            f"{b}attn2.to_v.weight": (c, context),
            f"{b}attn2.to_out.0.weight": (c, c),
            f"{b}attn2.to_out.0.bias": (c,),
            f"{b}norm1.weight": (c,),
            f"{b}norm1.bias": (c,),
            f"{b}norm2.weight": (c,),
            f"{b}norm2.bias": (c,),
            f"{b}norm3.weight": (c,),
            f"{b}norm3.bias": (c,),
        })
    s[f"{prefix}proj_out.weight"] = proj
    s[f"{prefix}proj_out.bias"] = (c,)
    return s


def sd15_unet_shapes(middle_block: bool = False) -> Dict[str, Shape]:
    """Keys (without ``model.diffusion_model.``) and shapes of the smallest SD1.5-detected U-Net:
    channel_mult [1], num_res_blocks [1], transformer_depth [1], transformer_depth_output [1, 1],
    and a middle block (res, transformer, res) only if ``middle_block``."""
    c = MODEL_CHANNELS
    s: Dict[str, Shape] = {
        "time_embed.0.weight": (TIME_EMBED_DIM, c),
        "time_embed.0.bias": (TIME_EMBED_DIM,),
        "time_embed.2.weight": (TIME_EMBED_DIM, TIME_EMBED_DIM),
        "time_embed.2.bias": (TIME_EMBED_DIM,),
        "input_blocks.0.0.weight": (c, LATENT_CHANNELS, 3, 3),
        "input_blocks.0.0.bias": (c,),
    }
    s.update(_resblock("input_blocks.1.0.", c, c))
    s.update(_spatial_transformer("input_blocks.1.1.", c, CONTEXT_DIM))
    if middle_block:
        s.update(_resblock("middle_block.0.", c, c))
        s.update(_spatial_transformer("middle_block.1.", c, CONTEXT_DIM))
        s.update(_resblock("middle_block.2.", c, c))
    for i in range(2):  # num_res_blocks + 1 output blocks, each with a skip input (2c -> c)
        s.update(_resblock(f"output_blocks.{i}.0.", 2 * c, c))
        s.update(_spatial_transformer(f"output_blocks.{i}.1.", c, CONTEXT_DIM))
    s.update({
        "out.0.weight": (c,),
        "out.0.bias": (c,),
        "out.2.weight": (LATENT_CHANNELS, c, 3, 3),
        "out.2.bias": (LATENT_CHANNELS,),
    })
    return s


def _taesd_block(prefix: str, c: int) -> Dict[str, Shape]:
    return {
        f"{prefix}conv.0.weight": (c, c, 3, 3), f"{prefix}conv.0.bias": (c,),
        f"{prefix}conv.2.weight": (c, c, 3, 3), f"{prefix}conv.2.bias": (c,),
        f"{prefix}conv.4.weight": (c, c, 3, 3), f"{prefix}conv.4.bias": (c,),
    }


def taesd_shapes(latent_channels: int = LATENT_CHANNELS) -> Dict[str, Shape]:
    """TAESD keys and shapes as ComfyUI's ``comfy/taesd/taesd.py`` builds them: ``taesd_encoder`` /
    ``taesd_decoder`` nn.Sequential indices, plus scalars. 4 latent channels: the SD1.x latent
    space; 16: SD3 / Flux (current hosts read the count from ``taesd_decoder.1.weight``)."""
    c = TAESD_CHANNELS
    s: Dict[str, Shape] = {"vae_scale": (), "vae_shift": ()}
    # Encoder: conv, Block, [conv(stride 2, no bias), Block x3] x3, conv(64 -> 4)
    s["taesd_encoder.0.weight"] = (c, 3, 3, 3)
    s["taesd_encoder.0.bias"] = (c,)
    s.update(_taesd_block("taesd_encoder.1.", c))
    idx = 2
    for _ in range(3):
        s[f"taesd_encoder.{idx}.weight"] = (c, c, 3, 3)
        for j in range(1, 4):
            s.update(_taesd_block(f"taesd_encoder.{idx + j}.", c))
        idx += 4
    s[f"taesd_encoder.{idx}.weight"] = (latent_channels, c, 3, 3)
    s[f"taesd_encoder.{idx}.bias"] = (latent_channels,)
    # Decoder: Clamp, conv(4 -> 64), ReLU, [Block x3, Upsample, conv(no bias)] x3, Block, conv(64 -> 3)
    s["taesd_decoder.1.weight"] = (c, latent_channels, 3, 3)
    s["taesd_decoder.1.bias"] = (c,)
    idx = 3
    for _ in range(3):
        for j in range(3):
            s.update(_taesd_block(f"taesd_decoder.{idx + j}.", c))
        s[f"taesd_decoder.{idx + 4}.weight"] = (c, c, 3, 3)  # idx+3 is the Upsample
        idx += 5
    s.update(_taesd_block(f"taesd_decoder.{idx}.", c))
    s[f"taesd_decoder.{idx + 1}.weight"] = (3, c, 3, 3)
    s[f"taesd_decoder.{idx + 1}.bias"] = (3,)
    return s


def clip_l_shapes() -> Dict[str, Shape]:
    """CLIP-L text encoder keys (without ``cond_stage_model.transformer.``), as the host's
    ``sd1_clip_config.json`` fixes them: 12 layers, width 768, 77 tokens."""
    w, m = CLIP_WIDTH, CLIP_MLP
    s: Dict[str, Shape] = {
        "text_model.embeddings.token_embedding.weight": (CLIP_VOCAB, w),
        "text_model.embeddings.position_embedding.weight": (CLIP_TOKENS, w),
    }
    for i in range(CLIP_LAYERS):
        p = f"text_model.encoder.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            s[f"{p}self_attn.{proj}.weight"] = (w, w)
            s[f"{p}self_attn.{proj}.bias"] = (w,)
        s.update({
            f"{p}layer_norm1.weight": (w,), f"{p}layer_norm1.bias": (w,),
            f"{p}mlp.fc1.weight": (m, w), f"{p}mlp.fc1.bias": (m,),
            f"{p}mlp.fc2.weight": (w, m), f"{p}mlp.fc2.bias": (w,),
            f"{p}layer_norm2.weight": (w,), f"{p}layer_norm2.bias": (w,),
        })
    s["text_model.final_layer_norm.weight"] = (w,)
    s["text_model.final_layer_norm.bias"] = (w,)
    # No text_projection: the 2024 host's SD15.process_clip_state_dict renames every
    # "cond_stage_model.transformer.*" key outside text_model into text_model.*, so a
    # checkpoint cannot supply it; the host initialises it to identity and logs
    # "clip missing: ['clip_l.transformer.text_projection.weight']" (as for real SD1.5 files).
    return s


# --------------------------------------------------------------------------------------------
# initialisation
# --------------------------------------------------------------------------------------------
_NORM_MARKERS = (".norm.", ".norm1.", ".norm2.", ".norm3.", "in_layers.0.", "out_layers.0.",
                 "layer_norm1.", "layer_norm2.", "final_layer_norm.")


def _is_norm(key: str) -> bool:
    return any(m in key for m in _NORM_MARKERS) or key.startswith("out.0.") \
        or key.startswith(UNET_PREFIX + "out.0.")


def _generator(seed: int, key: str) -> torch.Generator:
    g = torch.Generator(device="cpu")
    g.manual_seed((int(seed) * 1_000_003 + zlib.crc32(key.encode())) % (2 ** 63))
    return g


def init_tensor(key: str, shape: Shape, seed: int) -> torch.Tensor:
    """One explicitly initialised fp32 tensor for ``key``.

    * norm scales 1 (+ small seeded jitter), norm shifts 0 (+ jitter): keeps activations sane;
    * conv / linear weights N(0, 1 / fan_in): unit-variance pre-activations;
    * biases N(0, 0.02^2); embeddings N(0, 0.02^2);
    * scalars / special tensors: ``vae_scale`` 1, ``vae_shift`` 0, ``logit_scale`` 4.6055,
      ``text_projection`` identity (what the host itself initialises them to).
    """
    name = key.rsplit(".", 1)[-1]
    if key.endswith("vae_scale"):
        return torch.tensor(1.0)
    if key.endswith("vae_shift"):
        return torch.tensor(0.0)
    if key.endswith("logit_scale"):
        return torch.tensor(4.6055)
    if key.endswith("text_projection.weight"):
        return torch.eye(shape[0])
    g = _generator(seed, key)
    noise = torch.randn(shape, generator=g, dtype=torch.float32)
    if _is_norm(key):
        return (1.0 + 0.02 * noise) if name == "weight" else 0.02 * noise
    if "embedding" in key:
        return 0.02 * noise
    if len(shape) >= 2:
        fan_in = math.prod(shape[1:])
        return noise / math.sqrt(fan_in)
    return 0.02 * noise


def tiny_sd15_state_dict(seed: int = 0, *, with_clip: bool = False, middle_block: bool = False,
                         dtype: torch.dtype = torch.float16) -> Dict[str, torch.Tensor]:
    """The full checkpoint state dict (``model.diffusion_model.*``, ``first_stage_model.*`` and,
    with ``with_clip``, ``cond_stage_model.transformer.*``)."""
    out: Dict[str, torch.Tensor] = {}
    parts = [(UNET_PREFIX, sd15_unet_shapes(middle_block)), (VAE_PREFIX, taesd_shapes())]
    if with_clip:
        parts.append((CLIP_PREFIX, clip_l_shapes()))
    for prefix, shapes in parts:
        for k, shape in shapes.items():
            key = prefix + k
            out[key] = init_tensor(key, shape, seed).to(dtype).contiguous()
    if with_clip:  # read by the host as clip_l.logit_scale; present so no key is reported missing
        out["cond_stage_model.logit_scale"] = init_tensor("logit_scale", (), seed).to(dtype)
    return out


def write_tiny_sd15_checkpoint(path: str | os.PathLike, seed: int = 0, *, with_clip: bool = False,
                               middle_block: bool = False,
                               dtype: torch.dtype = torch.float16) -> dict:
    """Write the smallest SD1.5-shaped checkpoint ComfyUI's CheckpointLoaderSimple accepts.

    Returns ``{"path", "bytes", "parameters", "unet_parameters", "seed", "with_clip",
    "middle_block"}``. The file is fp16 safetensors (no pickle anywhere).
    """
    from safetensors.torch import save_file

    sd = tiny_sd15_state_dict(seed, with_clip=with_clip, middle_block=middle_block, dtype=dtype)
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    meta = {"format": "pt", "midms_tiny": "sd15", "seed": str(seed), "with_clip": str(with_clip),
            "middle_block": str(middle_block)}
    tmp = path + ".partial"
    save_file(sd, tmp, metadata=meta)
    os.replace(tmp, path)
    return {
        "path": path,
        "bytes": os.path.getsize(path),
        "parameters": sum(t.numel() for t in sd.values()),
        "unet_parameters": sum(t.numel() for k, t in sd.items() if k.startswith(UNET_PREFIX)),
        "seed": seed,
        "with_clip": with_clip,
        "middle_block": middle_block,
    }


def write_tiny_vae16(path: str | os.PathLike, seed: int = 0) -> dict:
    """A 16-latent-channel TAESD (the SD3 / Flux latent space) as a VAE file for ``models/vae``:
    the host's VAELoader and ``comfy.sd.VAE`` detect it by its keys. fp32 safetensors.
    Returns ``{"path", "bytes"}``."""
    from safetensors.torch import save_file

    sd = {k: init_tensor(VAE_PREFIX + k, shape, seed).contiguous() for k, shape in taesd_shapes(16).items()}
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_file(sd, path + ".partial", metadata={"format": "pt", "midms_tiny": "taesd16", "seed": str(seed)})
    os.replace(path + ".partial", path)
    return {"path": path, "bytes": os.path.getsize(path)}


# --------------------------------------------------------------------------------------------
# SD3 (MMDiT)
# --------------------------------------------------------------------------------------------
SD3_HIDDEN = 64          # = 64 * depth: the host reads depth from x_embedder.proj.weight
SD3_CONTEXT_WIDTH = 64   # text width (real SD3: 4096), read from context_embedder.weight
SD3_POOLED_WIDTH = 32    # pooled width (real SD3: 2048), read from y_embedder.mlp.0.weight
SD3_POS_EMBED = 16       # pos_embed_max_size: 16 x 16 tokens, 32 x 32 latent cells at most


def sd3_mmdit_shapes() -> Dict[str, Shape]:
    """An MMDiT of depth 1 as ``comfy.model_detection`` reads SD3 (keys without
    ``model.diffusion_model.``): hidden 64, 16 latent channels, patch 2, one joint block whose
    context side is "pre only" (the last block has no context projection or MLP)."""
    d = SD3_HIDDEN
    s: Dict[str, Shape] = {
        "pos_embed": (1, SD3_POS_EMBED * SD3_POS_EMBED, d),
        "x_embedder.proj.weight": (d, 16, 2, 2), "x_embedder.proj.bias": (d,),
        "t_embedder.mlp.0.weight": (d, 256), "t_embedder.mlp.0.bias": (d,),
        "t_embedder.mlp.2.weight": (d, d), "t_embedder.mlp.2.bias": (d,),
        "y_embedder.mlp.0.weight": (d, SD3_POOLED_WIDTH), "y_embedder.mlp.0.bias": (d,),
        "y_embedder.mlp.2.weight": (d, d), "y_embedder.mlp.2.bias": (d,),
        "context_embedder.weight": (d, SD3_CONTEXT_WIDTH), "context_embedder.bias": (d,),
        "final_layer.linear.weight": (2 * 2 * 16, d), "final_layer.linear.bias": (2 * 2 * 16,),
        "final_layer.adaLN_modulation.1.weight": (2 * d, d), "final_layer.adaLN_modulation.1.bias": (2 * d,),
    }
    block = "joint_blocks.0."
    s.update({
        block + "context_block.attn.qkv.weight": (3 * d, d), block + "context_block.attn.qkv.bias": (3 * d,),
        block + "context_block.adaLN_modulation.1.weight": (2 * d, d),
        block + "context_block.adaLN_modulation.1.bias": (2 * d,),
        block + "x_block.attn.qkv.weight": (3 * d, d), block + "x_block.attn.qkv.bias": (3 * d,),
        block + "x_block.attn.proj.weight": (d, d), block + "x_block.attn.proj.bias": (d,),
        block + "x_block.mlp.fc1.weight": (4 * d, d), block + "x_block.mlp.fc1.bias": (4 * d,),
        block + "x_block.mlp.fc2.weight": (d, 4 * d), block + "x_block.mlp.fc2.bias": (d,),
        block + "x_block.adaLN_modulation.1.weight": (6 * d, d), block + "x_block.adaLN_modulation.1.bias": (6 * d,),
    })
    return s


def write_tiny_sd3_checkpoint(path: str | os.PathLike, seed: int = 0, *,
                              dtype: torch.dtype = torch.float16) -> dict:
    """The smallest checkpoint CheckpointLoaderSimple detects as SD3: the MMDiT above and a
    16-channel TAESD as its VAE, no text encoders (their widths cannot be tiny; workflows get
    zero conditioning of the tiny widths instead). Returns ``{"path", "bytes", "parameters"}``."""
    from safetensors.torch import save_file

    sd = {}
    for prefix, shapes in ((UNET_PREFIX, sd3_mmdit_shapes()), (VAE_PREFIX, taesd_shapes(16))):
        for k, shape in shapes.items():
            sd[prefix + k] = init_tensor(prefix + k, shape, seed).to(dtype).contiguous()
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_file(sd, path + ".partial", metadata={"format": "pt", "midms_tiny": "sd3", "seed": str(seed)})
    os.replace(path + ".partial", path)
    return {"path": path, "bytes": os.path.getsize(path), "parameters": sum(t.numel() for t in sd.values())}


# --------------------------------------------------------------------------------------------
# SDXL
# --------------------------------------------------------------------------------------------
SDXL_CONTEXT_DIM = 2048
SDXL_ADM_IN_CHANNELS = 2816      # pooled CLIP-G (1280) + 6 size embeddings of 256
SDXL_POOLED_DIM = 1280
# Segmind Vega's transformer depths per input res block: the smallest SDXL-family layout that both
# the 2024 host and ComfyUI 0.3.x detect (supported_models.Segmind_Vega, an SDXL subclass:
# model_channels 320, linear proj_in, context 2048, adm_in_channels 2816). Only the input side's
# depths are matched, so the output blocks here carry no transformers.
SDXL_TRANSFORMER_DEPTH = (0, 0, 1, 1, 2, 2)


def sdxl_unet_shapes() -> Dict[str, Shape]:
    """Keys (without ``model.diffusion_model.``) and shapes of the smallest U-Net that
    CheckpointLoaderSimple takes for SDXL: one level (channel_mult [1]) of six res blocks with
    transformer depths :data:`SDXL_TRANSFORMER_DEPTH` (linear proj_in, context 2048), seven output
    res blocks without transformers, no middle block, and the SDXL ``label_emb`` (2816 -> 1280)."""
    c = MODEL_CHANNELS
    s: Dict[str, Shape] = {
        "time_embed.0.weight": (TIME_EMBED_DIM, c),
        "time_embed.0.bias": (TIME_EMBED_DIM,),
        "time_embed.2.weight": (TIME_EMBED_DIM, TIME_EMBED_DIM),
        "time_embed.2.bias": (TIME_EMBED_DIM,),
        "label_emb.0.0.weight": (TIME_EMBED_DIM, SDXL_ADM_IN_CHANNELS),
        "label_emb.0.0.bias": (TIME_EMBED_DIM,),
        "label_emb.0.2.weight": (TIME_EMBED_DIM, TIME_EMBED_DIM),
        "label_emb.0.2.bias": (TIME_EMBED_DIM,),
        "input_blocks.0.0.weight": (c, LATENT_CHANNELS, 3, 3),
        "input_blocks.0.0.bias": (c,),
    }
    for i, depth in enumerate(SDXL_TRANSFORMER_DEPTH, start=1):
        s.update(_resblock(f"input_blocks.{i}.0.", c, c))
        if depth:
            s.update(_spatial_transformer(f"input_blocks.{i}.1.", c, SDXL_CONTEXT_DIM, depth, linear=True))
    for i in range(len(SDXL_TRANSFORMER_DEPTH) + 1):  # num_res_blocks + 1, each with a skip input
        s.update(_resblock(f"output_blocks.{i}.0.", 2 * c, c))
    s.update({
        "out.0.weight": (c,),
        "out.0.bias": (c,),
        "out.2.weight": (LATENT_CHANNELS, c, 3, 3),
        "out.2.bias": (LATENT_CHANNELS,),
    })
    return s


def tiny_sdxl_state_dict(seed: int = 0, *, dtype: torch.dtype = torch.float16) -> Dict[str, torch.Tensor]:
    """U-Net (:func:`sdxl_unet_shapes`) + a TAESD-shaped VAE; no text encoders (CLIP-L + CLIP-G
    cannot be made small: feed CONDITIONING ``[[zeros(1, 77, 2048), {"pooled_output":
    zeros(1, 1280)}]]`` instead)."""
    out: Dict[str, torch.Tensor] = {}
    for prefix, shapes in ((UNET_PREFIX, sdxl_unet_shapes()), (VAE_PREFIX, taesd_shapes())):
        for k, shape in shapes.items():
            key = prefix + k
            out[key] = init_tensor(key, shape, seed).to(dtype).contiguous()
    return out


def write_tiny_sdxl_checkpoint(path: str | os.PathLike, seed: int = 0, *,
                               dtype: torch.dtype = torch.float16) -> dict:
    """Write the smallest checkpoint CheckpointLoaderSimple detects as SDXL (the Segmind Vega
    subclass; SDXL latent format, scale 0.13025, and SDXL conditioning: cross-attention
    (B, 77, 2048) + ``pooled_output`` (B, 1280)). 64 M U-Net parameters, ~130 MB in fp16.

    Returns ``{"path", "bytes", "parameters", "unet_parameters", "seed"}``."""
    from safetensors.torch import save_file

    sd = tiny_sdxl_state_dict(seed, dtype=dtype)
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".partial"
    save_file(sd, tmp, metadata={"format": "pt", "midms_tiny": "sdxl", "seed": str(seed)})
    os.replace(tmp, path)
    return {
        "path": path,
        "bytes": os.path.getsize(path),
        "parameters": sum(t.numel() for t in sd.values()),
        "unet_parameters": sum(t.numel() for k, t in sd.items() if k.startswith(UNET_PREFIX)),
        "seed": seed,
    }


# --------------------------------------------------------------------------------------------
# ControlNet (SD1.5)
# --------------------------------------------------------------------------------------------
CONTROLNET_PREFIX = "control_model."
HINT_CHANNELS = 3
# input_hint_block (comfy/cldm/cldm.py): eight 3x3 convs with SiLU between them (Sequential
# indices 0, 2, ..., 14), three of stride 2 (pixels -> latent cells, 8x), ending at model_channels.
CONTROLNET_HINT_CHANNELS = (16, 16, 32, 32, 96, 96, 256, MODEL_CHANNELS)
# The zero convolutions are zero-initialised in a real, untrained ControlNet; here they are small
# random 1x1 convs so that the tiny ControlNet measurably changes what the U-Net predicts.
CONTROLNET_ZERO_CONV_SCALE = 0.1


def sd15_controlnet_shapes(middle_block: bool = False) -> Dict[str, Shape]:
    """Keys (without ``control_model.``) and shapes of an LDM-format ControlNet whose U-Net half
    is the tiny SD1.5 U-Net's input side (:func:`sd15_unet_shapes`: model_channels 320, context
    768, one level, one res block + one transformer): ``time_embed``, ``input_blocks.0-1``,
    ``middle_block``, ``zero_convs.0-1``, ``middle_block_out`` and ``input_hint_block``.

    The host's ``comfy.cldm.cldm.ControlNet`` always builds a middle block: a single res block
    when the file has ``middle_block.0`` only (detected as ``transformer_depth_middle == -1``),
    res + transformer + res with ``middle_block`` (matching a U-Net written with
    ``middle_block=True``). Its output goes to the U-Net's ``middle`` control slot, which the
    host applies even to a U-Net without a middle block."""
    c = MODEL_CHANNELS
    unet = sd15_unet_shapes(middle_block=middle_block)
    s: Dict[str, Shape] = {k: v for k, v in unet.items()
                           if k.startswith(("time_embed.", "input_blocks.", "middle_block."))}
    if not middle_block:
        s.update(_resblock("middle_block.0.", c, c))
    for i in range(2):  # one zero conv per input block (input_blocks.0 and .1)
        s[f"zero_convs.{i}.0.weight"] = (c, c, 1, 1)
        s[f"zero_convs.{i}.0.bias"] = (c,)
    s["middle_block_out.0.weight"] = (c, c, 1, 1)
    s["middle_block_out.0.bias"] = (c,)
    c_in = HINT_CHANNELS
    for i, c_out in enumerate(CONTROLNET_HINT_CHANNELS):
        s[f"input_hint_block.{2 * i}.weight"] = (c_out, c_in, 3, 3)
        s[f"input_hint_block.{2 * i}.bias"] = (c_out,)
        c_in = c_out
    return s


def tiny_sd15_controlnet_state_dict(seed: int = 0, *, middle_block: bool = False,
                                    dtype: torch.dtype = torch.float16) -> Dict[str, torch.Tensor]:
    """The ControlNet file's state dict (every key under ``control_model.``), each tensor from
    :func:`init_tensor`; the zero convolutions (``zero_convs.*``, ``middle_block_out.*``) are
    scaled by :data:`CONTROLNET_ZERO_CONV_SCALE` instead of being zero."""
    out: Dict[str, torch.Tensor] = {}
    for k, shape in sd15_controlnet_shapes(middle_block).items():
        key = CONTROLNET_PREFIX + k
        t = init_tensor(key, shape, seed)
        if k.startswith(("zero_convs.", "middle_block_out.")):
            t = CONTROLNET_ZERO_CONV_SCALE * t
        out[key] = t.to(dtype).contiguous()
    return out


def write_tiny_sd15_controlnet(path: str | os.PathLike, seed: int = 0, *, middle_block: bool = False,
                               dtype: torch.dtype = torch.float16) -> dict:
    """Write a tiny SD1.5 ControlNet (LDM format, 3-channel hint) that ControlNetLoader
    (``comfy.controlnet.load_controlnet``) detects as SD1.5 and loads with no missing or
    unexpected keys (checked with the 2024 host and 0.3.64). 10.5 M parameters (21 MB in fp16);
    15.3 M with ``middle_block`` (for a U-Net written with ``middle_block=True``).

    Returns ``{"path", "bytes", "parameters", "seed", "middle_block"}``."""
    from safetensors.torch import save_file

    sd = tiny_sd15_controlnet_state_dict(seed, middle_block=middle_block, dtype=dtype)
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".partial"
    save_file(sd, tmp, metadata={"format": "pt", "midms_tiny": "sd15_controlnet", "seed": str(seed),
                                 "middle_block": str(middle_block)})
    os.replace(tmp, path)
    return {
        "path": path,
        "bytes": os.path.getsize(path),
        "parameters": sum(t.numel() for t in sd.values()),
        "seed": seed,
        "middle_block": middle_block,
    }


def zero_conditioning(batch: int = 1, tokens: int = CLIP_TOKENS, dim: int = CONTEXT_DIM):
    """CONDITIONING for an SD1.5 model without a text encoder: ``[[zeros(B, 77, 768), {}]]``."""
    return [[torch.zeros(batch, tokens, dim), {}]]
