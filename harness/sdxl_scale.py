"""SDXL-family models at real widths and the inputs of the pack's nodes, for benchmarks that drive
the nodes directly inside a host's process (``benchmarks/bench_sdxl.py``).

* :func:`load_host`: ComfyUI imported here, the pack's node classes as the host loaded them;
* :class:`ModelSpec` (:data:`TINY`, :data:`WIDTH`) and :func:`build_model`: SDXL U-Nets from the
  host's own classes (``comfy.supported_models.SDXL``) with seeded weights;
* :func:`make_context`, :func:`sdxl_conds`, :func:`edge_matcher`, :func:`rewarp_settings`: what
  the nodes take, built without a VAE or CLIP.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

PACK_NODES = ("MIDMsEdgeMatcher", "MIDMsDiffusionFeatureMatcher", "MIDMsRewarpSettings", "MIDMsCorrespondence",
              "MIDMsInterleavedSampler", "BasicScheduler")


def load_host(command: str, threads: int):
    """ComfyUI imported in this process, the pack loaded by the host as ``midms``;
    returns (host, pack namespace: the node classes of :data:`PACK_NODES` and ``types``).
    ``command`` names the caller in the message when no host is found."""
    from harness.host import script_host
    from harness.pack import loaded_pack

    host = script_host(command)
    torch.set_num_threads(threads)  # the in-process host pins 1 thread; benchmark with all asked
    return host, loaded_pack(host, PACK_NODES)


@dataclass(frozen=True)
class ModelSpec:
    key: str
    label: str
    model_channels: int
    channel_mult: tuple
    num_res_blocks: int
    depth: int              # transformer depth at every level that has one, and the middle
    first_level_depth: int  # SDXL has none at the first level
    dift_block: int         # output block whose input the diffusion matcher captures
    note: str = ""          # how it differs from the real SDXL

    def config(self) -> dict:
        from harness.inprocess_models import sdxl_unet_config

        return sdxl_unet_config(self.model_channels, self.channel_mult, self.num_res_blocks, self.depth,
                                self.first_level_depth)

    def describe(self, params: int) -> str:
        """One markdown list item: parameters, widths, depths, DIFT block."""
        cfg = self.config()
        depths = [self.first_level_depth] + [self.depth] * (len(self.channel_mult) - 1)
        return (f"- {self.label}: {params / 1e6:.1f} M parameters; model_channels {cfg['model_channels']}, "
                f"channel_mult {cfg['channel_mult']}, num_res_blocks {cfg['num_res_blocks'][0]}, transformer depth "
                f"per level {depths} (middle {self.depth}), context 2048, adm 2816; DIFT output block "
                f"{self.dift_block}{self.note}")


TINY = ModelSpec("tiny", "tiny SDXL (tests)", 32, (1, 2), 1, 1, 0, 2)
# SDXL's real widths, transformer depth cut from [0, 2, 10] (middle 10) to [0, 1, 1] (middle 1)
WIDTH = ModelSpec("width", "SDXL-width", 320, (1, 2, 4), 2, 1, 0, 6,
                  " (real SDXL: depth [0, 2, 10], middle 10, 2.6 B parameters)")


def build_model(spec: ModelSpec, seed: int):
    """(ModelPatcher, parameter count): the host's SDXL class, seeded weights (the harness's)."""
    from harness.inprocess_models import build_unet

    patcher = build_unet("sdxl", seed, spec.config())
    return patcher, sum(p.numel() for p in patcher.model.parameters())


def make_context(pack, side: int, seed: int = 0):
    """A MIDMsContext built directly (no VAE), latents (1, 4, side, side): the exemplar is
    skimage's astronaut, the condition kornia's Canny of it under a seeded smooth deformation
    (matching cost does not depend on the content; random latents stand in for the VAE's)."""
    from harness.photos import load_photo
    from midms_core.training.conditions import canny_condition
    from midms_core.training.synthetic import deform, smooth_displacement

    px = side * 8
    g = torch.Generator().manual_seed(seed)
    photo = load_photo("astronaut", px)
    deformed, _ = deform(photo, smooth_displacement(px, seed, px / 12.8))
    return pack.types.MIDMsContext(
        condition_image=canny_condition(deformed), exemplar_image=photo,
        condition_latent=torch.randn(1, 4, side, side, generator=g),
        exemplar_latent=2.0 * torch.randn(1, 4, side, side, generator=g))


def sdxl_conds(side: int):
    """(positive, negative) SDXL CONDITIONING for latents of ``side``: positive a random prompt
    embedding (1, 77, 2048) and pooled (1, 1280); negative zeros (an empty prompt without CLIP)."""
    g = torch.Generator().manual_seed(11)
    px = side * 8
    extra = lambda pooled: {"pooled_output": pooled, "width": px, "height": px, "crop_w": 0, "crop_h": 0,  # noqa: E731
                            "target_width": px, "target_height": px}
    positive = [[torch.randn(1, 77, 2048, generator=g), extra(torch.randn(1, 1280, generator=g))]]
    negative = [[torch.zeros(1, 77, 2048), extra(torch.zeros(1, 1280))]]
    return positive, negative


def edge_matcher(pack):
    """The MIDMsEdgeMatcher node's matcher, the benchmarks' settings."""
    return pack.MIDMsEdgeMatcher().make(canny_low=0.1, canny_high=0.2, edge_blur=2.0, x0_condition_weight=0.7)[0]


def rewarp_settings(pack, rewarp_steps: str):
    """The MIDMsRewarpSettings node's settings: ``rewarp_steps`` "" (every step but the last) or "none"."""
    return pack.MIDMsRewarpSettings().make(tau=0.005, threshold=15.75, mask_mode="hard", smooth_mask=True,
                                           rewarp_steps=rewarp_steps, eta=0.0, refine_strength=0.0,
                                           refine_steps=20)[0]
