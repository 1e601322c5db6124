"""One training step: a batch of pairs -> the loss terms, and what it needs.

:func:`prepare_batch` turns collated samples of :class:`midms_core.training.data.TrainingPairs`
into the tensors of one step: label maps (B, L, h, w) of the condition and of the exemplar's
Canny edges, latents (B, c, h, w) of the truth z and the exemplar y by a frozen encoder, and
x0~ (B, c, h, w), the stand-in x0_hat of z (z blurred by ``X0_BLUR`` cells and noised by
``X0_NOISE`` of its std, each sample from its own seed, :func:`noise_seeds`).

:class:`TrainingStep` (the networks and the loss; DDP wraps it whole): encodings F_X(x),
F_Y(z), F_Y(y), head features, logits condition x exemplar and condition x truth
(:func:`midms_core.training.losses.correlation_logits`), then

    warm-up:  10 L_domain + L_cycle + L_latent + w_flow L_match
    after:    + the in-domain terms: the same cycle / latent / match losses on the iteration
              extractor's correlation F'(x0~, F_X(x)) x F_Y(y), so F' -- which drives the
              re-matches inside the sampler -- learns too. (The paper trains F' through the
              unrolled DDIM steps with the U-Net; this stand-in needs no denoiser.)

and, with VGG-19 weights and a differentiable decoder, the official feature, perceptual and
contextual losses on decoded warps. :func:`evaluate`: the same terms on fixed samples.

Latents: the "stand-in" encoder (:func:`stand_in_encode`: the image average-pooled by
``factor``, 3 channels; :func:`stand_in_decode`, its bilinear inverse) needs no weights and
runs anywhere; networks trained on it match stand-in latents (the benchmarks' setting: they
encode with the same function).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..networks.label_maps import canny_edge_map, label_map_on_grid
from ..networks.model import CorrespondenceConfig, CorrespondenceNetworks
from .data import TrainingPairs
from .losses import (
    contextual_loss,
    correlation_logits,
    cycle_loss,
    domain_alignment_loss,
    feature_matching_loss,
    latent_reconstruction_loss,
    supervised_flow_loss,
    supervised_match_loss,
)

TAU = 0.005          # the official correlation temperature, for every loss
X0_BLUR = 0.75       # stand-in x0_hat: blur (latent cells) and noise (share of the latent's std),
X0_NOISE = 0.2       # as benchmarks/warp_quality.py

__all__ = ["LossWeights", "TrainingStep", "evaluate", "prepare_batch", "stand_in_decode", "stand_in_encode",
           "noise_seeds"]


def stand_in_encode(images: Tensor, factor: int = 8) -> Tensor:
    """The weight-free latent: (B, 3, H, W) in [0, 1] -> (B, 3, H/f, W/f), average-pooled."""
    return F.avg_pool2d(images, factor)


def stand_in_decode(latents: Tensor, factor: int = 8) -> Tensor:
    """The stand-in's differentiable decoder (for the VGG losses): (B, 3, h, w) -> (B, 3, f h,
    f w), bilinear upsampling."""
    return F.interpolate(latents, scale_factor=factor, mode="bilinear", align_corners=False)


@dataclass(frozen=True)
class LossWeights:
    domain: float = 10.0   # official
    cycle: float = 1.0     # official
    latent: float = 1.0    # official (warm-up MSE of the truth latent warped by its own correlation)
    flow: float = 1.0      # beyond the paper: cross-entropy of the true cell on deformed self-exemplars
    in_domain: float = 1.0  # after warm-up: the F' terms (stand-in for the unrolled-steps loss)
    feature: float = 1.0     # official, with VGG weights: relu1_2..relu5_2 of the truth warped by its own match
    perceptual: float = 0.002  # official: relu4_2 of the warped exemplar against the truth
    contextual: float = 1.0  # official, after warm-up: relu5_2 x8, relu4_2 x4, pool2(relu3_2) x2, pool4(relu2_2) x1


def _gaussian_blur(latent: Tensor, sigma: float) -> Tensor:
    import kornia

    return kornia.filters.gaussian_blur2d(latent, (5, 5), (sigma, sigma), border_type="replicate")


class TrainingStep(nn.Module):
    """The networks and the loss of one step; ``forward(batch, full)`` returns {term: scalar}
    with "loss" the weighted total. Wrapped whole in DDP so every parameter's gradient is
    synchronised whichever encoder a term uses.

    batch: condition_map (B, L, h, w), exemplar_map (B, L, h, w), truth_latent z (B, c, h, w),
    exemplar_latent y (B, c, h, w), truth (B, 2, h, w), valid (B, h, w), x0 (B, c, h, w) the
    stand-in x0_hat of z.
    """

    def __init__(self, nets: CorrespondenceNetworks, weights: LossWeights = LossWeights(), tau: float = TAU,
                 vgg: Optional[nn.Module] = None, decode: Optional[Callable[[Tensor], Tensor]] = None,
                 clamp_negative: bool = False, match_tau: float = 0.05) -> None:
        super().__init__()
        self.nets = nets
        self.weights = weights
        self.tau = tau
        # The official code trains on cosines clamped at 0, as the warp uses them. Measured here:
        # a row whose cosines all fall <= 0 then gets no gradient at all, and at lr 1e-3 the
        # features collapsed that way within 100 steps (every warp uniform). Unclamped training
        # keeps every row learning; the warp clamps as before.
        self.clamp_negative = clamp_negative
        # the match cross-entropy at a softer temperature than the warp's: at 0.005 a random
        # init puts all of a row's mass on one wrong cell, and the quickest way down is to make
        # every row uniform (collapsed features), measured within 100 steps
        self.match_scale = tau / match_tau
        # frozen, and not a submodule: DDP must not treat it as trained state
        self._vgg = [vgg] if vgg is not None else []
        self.decode = decode

    def forward(self, batch: dict, full: bool) -> dict:
        nets, w = self.nets, self.weights
        cond_map, ex_map = batch["condition_map"], batch["exemplar_map"]
        z, y = batch["truth_latent"], batch["exemplar_latent"]
        cond_enc = nets.encode_condition(cond_map)
        truth_enc = nets.encode_exemplar(z)
        ex_enc = nets.encode_exemplar(y)
        s_x = nets.condition_head(cond_enc, cond_map)
        s_z = nets.exemplar_head(truth_enc, cond_map)  # official: the truth is aligned with the condition map
        s_y = nets.exemplar_head(ex_enc, ex_map)
        logits_y = correlation_logits(s_x, s_y, self.tau, self.clamp_negative)
        logits_z = correlation_logits(s_x, s_z, self.tau, self.clamp_negative)
        terms = {
            "domain": domain_alignment_loss(cond_enc, truth_enc, ex_enc),
            "cycle": cycle_loss(logits_y, y),
            "latent": latent_reconstruction_loss(logits_z, z),
            "match": supervised_match_loss(logits_y * self.match_scale, batch["truth"], batch["valid"]),
        }
        with torch.no_grad():  # logged, not trained: the soft-argmax error in cells
            terms["flow"] = supervised_flow_loss(logits_y, batch["truth"], batch["valid"])
        total = w.domain * terms["domain"] + w.cycle * terms["cycle"] + w.latent * terms["latent"] + w.flow * terms["match"]
        if full and w.in_domain > 0:
            x0_enc = nets.encode_iteration(batch["x0"], cond_enc)
            logits_in = correlation_logits(x0_enc, ex_enc, self.tau, self.clamp_negative)
            logits_in_z = correlation_logits(x0_enc, truth_enc, self.tau, self.clamp_negative)
            terms["in_cycle"] = cycle_loss(logits_in, y)
            terms["in_latent"] = latent_reconstruction_loss(logits_in_z, z)
            terms["in_match"] = supervised_match_loss(logits_in * self.match_scale, batch["truth"], batch["valid"])
            with torch.no_grad():
                terms["in_flow"] = supervised_flow_loss(logits_in, batch["truth"], batch["valid"])
            total = total + w.in_domain * (w.cycle * terms["in_cycle"] + w.latent * terms["in_latent"]
                                           + w.flow * terms["in_match"])
        if self._vgg and self.decode is not None:
            total = total + self._image_terms(terms, logits_y, logits_z, batch, full)
        terms["loss"] = total
        return terms

    def _image_terms(self, terms: dict, logits_y: Tensor, logits_z: Tensor, batch: dict, full: bool) -> Tensor:
        """The official VGG losses on decoded warps (adds them to ``terms``; returns their sum)."""
        vgg, w = self._vgg[0], self.weights
        z, y = batch["truth_latent"], batch["exemplar_latent"]
        grid = z.shape[-2:]

        def warped(logits: Tensor, latent: Tensor) -> Tensor:
            flat = torch.softmax(logits, dim=-1) @ latent.flatten(2).transpose(1, 2)
            return flat.transpose(1, 2).reshape(latent.shape[0], latent.shape[1], *grid)

        truth_image, exemplar_image = batch["truth_image"], batch["exemplar_image"]
        self_warp = vgg(self.decode(warped(logits_z, z)).clamp(0, 1))
        exemplar_warp = vgg(self.decode(warped(logits_y, y)).clamp(0, 1))
        with torch.no_grad():
            truth_feats = vgg(truth_image)
        terms["feature"] = feature_matching_loss(self_warp, truth_feats)
        terms["perceptual"] = F.l1_loss(exemplar_warp[3], truth_feats[3])
        total = w.feature * terms["feature"] + w.perceptual * terms["perceptual"]
        if full:
            with torch.no_grad():
                ex_feats = vgg(exemplar_image)
            terms["contextual"] = (8 * contextual_loss(exemplar_warp[4], ex_feats[4])
                                   + 4 * contextual_loss(exemplar_warp[3], ex_feats[3])
                                   + 2 * contextual_loss(F.avg_pool2d(exemplar_warp[2], 2), F.avg_pool2d(ex_feats[2], 2))
                                   + contextual_loss(F.avg_pool2d(exemplar_warp[1], 4), F.avg_pool2d(ex_feats[1], 4)))
            total = total + w.contextual * terms["contextual"]
        return total


def prepare_batch(samples: dict, config: CorrespondenceConfig, factor: int, encode: Callable[[Tensor], Tensor],
                  device: torch.device, x0_seeds: Tensor) -> dict:
    """Collated samples of :class:`TrainingPairs` -> the tensors :class:`TrainingStep` reads.

    samples: condition_image, exemplar_image, truth_image (B, 3, H, W) in [0, 1], truth
    (B, 2, h, w), valid (B, h, w), with (h, w) = (H, W) / ``factor``; ``x0_seeds`` (B,)
    (:func:`noise_seeds`). Label maps as the LearnedMatcher makes them (the condition image
    itself, the exemplar's Canny edges, both through :func:`label_map_on_grid`); latents by
    ``encode`` ((B, 3, H, W) -> (B, c, h, w)); x0~ per sample from its own seed (so a sample's
    noise does not depend on the process that reads it)."""
    cond_img = samples["condition_image"].to(device)
    ex_img = samples["exemplar_image"].to(device)
    truth_img = samples["truth_image"].to(device)
    grid = (truth_img.shape[-2] // factor, truth_img.shape[-1] // factor)
    with torch.no_grad():  # the encoder is frozen; clone: a host VAE may return inference-mode tensors
        z = encode(truth_img).to(device=device, dtype=truth_img.dtype).clone()
        y = encode(ex_img).to(device=device, dtype=truth_img.dtype).clone()
    x0 = _gaussian_blur(z, X0_BLUR)
    noise = torch.stack([torch.randn(z.shape[1:], generator=torch.Generator().manual_seed(int(s)), dtype=z.dtype)
                         for s in x0_seeds])
    x0 = x0 + X0_NOISE * z.std(dim=(1, 2, 3), keepdim=True) * noise.to(device)
    return {
        "condition_map": label_map_on_grid(cond_img, config.label_channels, grid, "train", "condition"),
        "exemplar_map": label_map_on_grid(canny_edge_map(ex_img), config.label_channels, grid, "train", "exemplar map"),
        "truth_latent": z, "exemplar_latent": y, "x0": x0, "truth_image": truth_img, "exemplar_image": ex_img,
        "truth": samples["truth"].to(device), "valid": samples["valid"].to(device),
    }


@torch.no_grad()
def evaluate(nets: CorrespondenceNetworks, dataset: TrainingPairs, indices: Sequence[int], full: bool = False,
             epoch: int = 0, encode: Optional[Callable[[Tensor], Tensor]] = None) -> dict:
    """The loss terms of ``nets`` on fixed samples (``epoch``'s draws of ``indices``), in eval
    mode: {term: float}. Comparable across networks, unlike the per-step training log."""
    dataset.set_epoch(epoch)
    items = [dataset[i] for i in indices]
    samples = {k: torch.stack([item[k] for item in items]) for k in items[0]}
    param = next(nets.parameters())
    samples = {k: (v.to(param.dtype) if v.is_floating_point() else v) for k, v in samples.items()}
    factor = dataset.config.factor
    encode = encode if encode is not None else (lambda im: stand_in_encode(im, factor))
    batch = prepare_batch(samples, nets.config, factor, encode, param.device,
                          noise_seeds(dataset.config.seed, epoch, samples["index"]))
    training = nets.training
    nets.eval()
    try:
        terms = TrainingStep(nets)(batch, full)
    finally:
        nets.train(training)
    return {k: float(v) for k, v in terms.items()}


def noise_seeds(seed: int, epoch: int, indices: Tensor) -> Tensor:
    """One seed per sample for its x0~ noise: (B,) int64 from the run's seed, the epoch and the
    sample indices (B,), so a sample's noise does not depend on the process that reads it."""
    return torch.tensor([(seed * 7919 + epoch * 104_729 + int(i)) % (2**62) for i in indices])
