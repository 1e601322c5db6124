"""Test-only ComfyUI nodes for the MIDMs harness. Not part of the pack.

:class:`harness.host.ComfyServer` and :class:`harness.host.InProcessHost` copy this folder into
the work dir's ``custom_nodes/midms_test_helpers`` (``HELPER_PACK_NAME``), where the host imports
it as a custom node pack of its own. It imports the host's ``folder_paths``, so it is only ever
imported by a ComfyUI host, never as ``harness.helper_nodes``.
"""
import hashlib
import os
import sys

import torch
import folder_paths


class MIDMSTestZeroConditioning:
    """CONDITIONING without a text encoder: [[zeros(B, tokens, width), {}]]; with
    pooled_width > 0 also {"pooled_output": zeros(B, pooled_width)} (SDXL: width 2048,
    pooled_width 1280); with -1 {"pooled_output": None}, what the 2025 families' text encoders
    give (Flux.2 and Chroma read the key)."""
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 64}),
            "tokens": ("INT", {"default": 77, "min": 1, "max": 1024}),
            "width": ("INT", {"default": 768, "min": 1, "max": 4096}),
        }, "optional": {
            "pooled_width": ("INT", {"default": 0, "min": -1, "max": 4096}),
        }}
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "make"
    CATEGORY = "midms/testing"

    def make(self, batch_size, tokens, width, pooled_width=0):
        extra = {"pooled_output": torch.zeros(batch_size, pooled_width)} if pooled_width > 0 else {}
        if pooled_width < 0:
            extra = {"pooled_output": None}
        return ([[torch.zeros(batch_size, tokens, width), extra]],)


class MIDMSTestRaise:
    """Output node that always raises RuntimeError(message): a runtime-error graph."""
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"message": ("STRING", {"default": "midms test failure"})},
                "optional": {"image": ("IMAGE",)}}
    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = "midms/testing"

    def run(self, message, image=None):
        raise RuntimeError(message)


class MIDMSTestSaveTensor:
    """Output node: saves a LATENT's samples and/or an IMAGE as safetensors under
    <output>/midms_test/<name>.safetensors and reports shape/mean/std/min/max in its UI."""
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"name": ("STRING", {"default": "tensor"})},
                "optional": {"latent": ("LATENT",), "image": ("IMAGE",)}}
    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True
    CATEGORY = "midms/testing"

    def save(self, name, latent=None, image=None):
        from safetensors.torch import save_file
        tensors = {}
        if latent is not None:
            tensors["latent"] = latent["samples"]
        if image is not None:
            tensors["image"] = image
        out_dir = os.path.join(folder_paths.get_output_directory(), "midms_test")
        os.makedirs(out_dir, exist_ok=True)
        path = os.path.join(out_dir, name + ".safetensors")
        save_file({k: v.detach().float().cpu().contiguous() for k, v in tensors.items()}, path)
        stats = []
        for k, v in tensors.items():
            v = v.detach().float()
            stats.append({"key": k, "shape": list(v.shape), "mean": v.mean().item(),
                          "std": v.std().item() if v.numel() > 1 else 0.0,
                          "min": v.min().item(), "max": v.max().item(),
                          "finite": bool(torch.isfinite(v).all().item()),
                          "sha256": hashlib.sha256(v.cpu().contiguous().numpy().tobytes()).hexdigest()})
        return {"ui": {"midms_stats": stats, "midms_file": [path]}}


class MIDMSTestTinyFlux:
    """A checkpoint loader's outputs (MODEL, CLIP, VAE) for a tiny Flux: the model built from
    the host's own comfy.supported_models.Flux (one double and one single stream block,
    hidden 64 = 2 heads of 32, text width 64, pooled width 32, guidance embedding), seeded
    weights; CLIP None (its consumers are replaced by MIDMSTestZeroConditioning); the VAE
    from a file in models/vae. A Flux FILE cannot be tiny: the host's detection fixes the
    width at 3072."""
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"vae_name": ("STRING", {"default": ""}),
                             "seed": ("INT", {"default": 0, "min": 0, "max": 2**31})}}
    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    FUNCTION = "load"
    CATEGORY = "midms/testing"

    def load(self, vae_name, seed):
        import comfy.model_management as mm
        import comfy.model_patcher
        import comfy.sd
        import comfy.supported_models as sm
        import comfy.utils
        config = {"image_model": "flux", "in_channels": 16, "out_channels": 16, "patch_size": 2,
                  "vec_in_dim": 32, "context_in_dim": 64, "hidden_size": 64, "mlp_ratio": 4.0,
                  "num_heads": 2, "depth": 1, "depth_single_blocks": 1, "axes_dim": [4, 14, 14],
                  "theta": 10000, "qkv_bias": True, "guidance_embed": True}
        with torch.inference_mode(False), torch.no_grad():
            base = sm.Flux(config).get_model({})
            for i, (name, p) in enumerate(sorted(base.named_parameters())):
                g = torch.Generator().manual_seed(seed * 100003 + i)
                scale = p.shape[1] ** -0.5 if p.dim() > 1 else 0.1
                p.copy_(scale * torch.randn(p.shape, generator=g))
        model = comfy.model_patcher.ModelPatcher(base, load_device=mm.get_torch_device(),
                                                 offload_device=mm.unet_offload_device())
        vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(folder_paths.get_full_path("vae", vae_name)))
        return (model, None, vae)


def _inprocess_models():
    """harness.inprocess_models from the checkout that started the server
    (``MIDMS_HARNESS_REPO``, set by harness.host.ComfyServer), appended to sys.path: the host's
    own modules (its ``nodes``) stay first."""
    repo = os.environ.get("MIDMS_HARNESS_REPO")
    if not repo:
        raise RuntimeError("MIDMS_HARNESS_REPO is not set: start the server with harness.host.ComfyServer")
    if repo not in sys.path:
        sys.path.append(repo)
    from harness import inprocess_models
    return inprocess_models


TINY_FAMILIES = ["flux2", "zimage", "qwen_image", "chroma"]
TINY_VAES = {"flux2": "flux2", "zimage": "vae16", "qwen_image": "wan21", "chroma": "vae16"}


def _tiny_vae(kind):
    im = _inprocess_models()
    return {"flux2": im.build_flux2_vae, "wan21": im.build_wan21_vae, "vae16": im.build_vae16}[kind]()


class MIDMSTestTinyCheckpoint:
    """A loader's outputs (MODEL, CLIP, VAE) for a tiny 2025 family built in the server from the
    host's own comfy.supported_models class (harness.inprocess_models.build_new_family: Flux.2,
    Z-Image, Qwen-Image, Chroma), with a tiny VAE of its latent format (Flux.2's VAE, a narrow
    Wan 2.1 video VAE, a 16-channel TAESD). CLIP is None: its consumers are replaced by
    MIDMSTestZeroConditioning. Stands in for Load Diffusion Model (MODEL is output 0) or a
    checkpoint loader: these families' real files cannot be tiny (the host's detection fixes
    their widths)."""
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"family": (TINY_FAMILIES,)}}
    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    FUNCTION = "load"
    CATEGORY = "midms/testing"

    def load(self, family):
        model = _inprocess_models().build_new_family(family)
        return (model, None, _tiny_vae(TINY_VAES[family]))


class MIDMSTestTinyVAE:
    """Load VAE's output for the tiny families: "flux2" (the host's Flux.2 VAE, 128 channels at
    16 px, seeded at its fixed full width), "wan21" (a narrow Wan 2.1 video VAE, Qwen-Image's),
    "vae16" (a 16-channel TAESD: Flux's latent space, Z-Image's and Chroma's)."""
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"kind": (sorted(set(TINY_VAES.values())),)}}
    RETURN_TYPES = ("VAE",)
    FUNCTION = "load"
    CATEGORY = "midms/testing"

    def load(self, kind):
        return (_tiny_vae(kind),)


class MIDMSTestString:
    """A STRING output from a text widget: what a points editor (KJNodes) or a text node hands a
    STRING input that only takes links (``forceInput``). The 2024 host has no core node with a
    STRING output, and a PrimitiveNode cannot feed one over the API."""
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"default": "", "multiline": True})}}
    RETURN_TYPES = ("STRING",)
    FUNCTION = "make"
    CATEGORY = "midms/testing"

    def make(self, text):
        return (text,)


NODE_CLASS_MAPPINGS = {
    "MIDMSTestString": MIDMSTestString,
    "MIDMSTestTinyFlux": MIDMSTestTinyFlux,
    "MIDMSTestTinyCheckpoint": MIDMSTestTinyCheckpoint,
    "MIDMSTestTinyVAE": MIDMSTestTinyVAE,
    "MIDMSTestZeroConditioning": MIDMSTestZeroConditioning,
    "MIDMSTestRaise": MIDMSTestRaise,
    "MIDMSTestSaveTensor": MIDMSTestSaveTensor,
}
NODE_DISPLAY_NAME_MAPPINGS = {k: k for k in NODE_CLASS_MAPPINGS}
