"""A training-free cross-domain matcher built from kornia filters: edges + DAISY-like descriptors.

Without the learned MIDMs networks (whose only released weights are gone) the condition and the
exemplar must still meet in one feature space. Edges are that space: the condition (an edge
drawing of either polarity, a pose or a segmentation colour map) is reduced to its colour
gradient magnitude, which is polarity-free and turns label regions into their boundaries; the
exemplar photo is reduced to its Canny edges. Both edge maps are then described by the same
dense descriptor, computed directly on each side's latent grid (h, w):

1. blur the edge map a little (``edge_blur``) so that a thin line and a double line (the
   gradient of a drawn line has two flanks) become the same ridge;
2. oriented-gradient histograms of that map (``orientations`` bins over 360 degrees, linear
   soft binning, weighted by magnitude);
3. a DAISY-style layout (Tola et al. 2010): the histogram of the position itself plus histograms
   sampled on rings of increasing radius and blur around it, each histogram L2-normalised.
   Rings are measured in latent cells. Large rings give the context that disambiguates edge
   fragments; the smallest ring fixes the position to about one latent cell.

The descriptor is computed on a grid ``subgrid`` times finer than the latent grid and averaged
down, which measurably sharpens localisation (PCK@1 on the tests' real photos).

The in-domain side (x0_hat against the exemplar inside the interleaved sampler) is latent
against latent; decoding is not available here, so those features are computed on the latent
itself (:meth:`EdgeDescriptorMatcher.latent_features`: a Gaussian-weighted neighbourhood of
standardised latent values plus the ring descriptor of the latent channels' gradients). As the
official F'(x0_hat, D_x) mixes the condition into the x0_hat features, the cross-domain features
of the same side are appended with a smaller weight (x0_hat with S_x, the exemplar latent with
S_y); on the tests' photos this mix beats both the pure latent and the pure edge features.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from typing import Optional, Sequence

import kornia
import torch
import torch.nn.functional as F
from torch import Tensor

from ..alignment import ALIGNMENTS, Alignment, SpatialPrior, affine_targets, search_similarity
from ..correspondence import centre_normalise
from ..edges import canny_edges
from ..validation import check_choice, check_positive, check_tensor
from .base import MatchFeatures, MatchSide, SharedConditionMatcher, require_images

__all__ = [
    "EdgeDescriptorMatcher",
    "EdgeMatcherSettings",
    "condition_edge_map",
    "exemplar_edge_map",
    "orientation_histograms",
    "ring_descriptor",
]

Rings = Sequence[tuple[float, float]]

# (blur sigma, radius) in grid cells, smallest first. Measured on the tests' deformed photos:
# dropping the (0.5, 1) ring costs ~0.1 PCK@1, dropping the (3, 7) ring ~0.05 PCK@2.
DEFAULT_RINGS: tuple[tuple[float, float], ...] = ((0.5, 1.0), (1.0, 2.0), (2.0, 4.0), (3.0, 7.0))
# Locality prior width as a fraction of the exemplar grid's larger side (0.96 cells at 32 x 32,
# 3.8 at 128 x 128).
# Measured (benchmarks/cross_instance.py, warp_quality.py): see benchmarks/README.md.
DEFAULT_LOCALITY = 0.03
DEFAULT_LATENT_RINGS: tuple[tuple[float, float], ...] = ((1.0, 2.0), (2.0, 4.0), (3.0, 7.0))


def _gaussian(x: Tensor, sigma: float) -> Tensor:
    """Gaussian blur with zero padding (content outside the image is unknown, not repeated)."""
    if sigma <= 0:
        return x
    k = 2 * math.ceil(3 * sigma) + 1
    return kornia.filters.gaussian_blur2d(x, (k, k), (sigma, sigma), border_type="constant")


def _shift(x: Tensor, dy: int, dx: int) -> Tensor:
    """out[..., y, x] = x[..., y + dy, x + dx], zero outside the grid. (B, C, h, w) -> same."""
    if dy == 0 and dx == 0:
        return x
    pad = max(abs(dy), abs(dx))
    h, w = x.shape[-2:]
    padded = F.pad(x, (pad, pad, pad, pad))
    return padded[..., pad + dy : pad + dy + h, pad + dx : pad + dx + w]


#: Sobel magnitude at or below which a condition counts as flat: kornia's sobel of a constant
#: image is sqrt(1e-6) = 1e-3 (its eps), a step of 2/255 (the blank tolerance of the encode node)
#: about 4e-3
FLAT_EDGE_STRENGTH = 2e-3


def _require_edges(edges: Tensor, name: str, why: str, of_set: str = "") -> None:
    """Raise when an edge map (B, 1, H, W) is empty for any image of the batch: matching a blank
    side gives a meaningless warp, and its cycle check still calls much of it "confident".
    ``of_set``: which member of a set of exemplars this is (e.g. "exemplar 2 of 3"), if any."""
    empty = [i for i, e in enumerate(edges.flatten(1).amax(dim=1).tolist()) if not e > 0]
    if empty:
        which = f"image {empty[0] + 1} of {edges.shape[0]}" if edges.shape[0] > 1 else "the image"
        which = f"{of_set}, {which}" if of_set else which
        raise ValueError(f"EdgeDescriptorMatcher: '{name}' ({which}) has no edges: {why}")


def condition_edge_map(image: Tensor) -> Tensor:
    """Polarity-free edge strength of a condition image.

    image: (B, 3, H, W) in [0, 1] -> (B, 1, H, W) in [0, 1].
    The Sobel magnitude, maximum over RGB, so white-on-black and black-on-white drawings give
    the same map, and a segmentation/pose colour map gives its region boundaries. Scaled by its
    per-image maximum (descriptors are normalised anyway; this only keeps numbers tame).
    """
    mag = kornia.filters.sobel(image.float()).amax(dim=1, keepdim=True)
    peak = mag.flatten(1).amax(dim=1).view(-1, 1, 1, 1)
    # a flat image (up to rounding noise) is an empty map, not amplified noise
    return torch.where(peak > FLAT_EDGE_STRENGTH, mag / peak.clamp_min(1e-6), torch.zeros_like(mag))


def exemplar_edge_map(
    image: Tensor, low: float = 0.1, high: float = 0.2, sigma: float = 1.0, hysteresis_steps: Optional[int] = 16
) -> Tensor:
    """Canny edges of an exemplar photo: (B, 3, H, W) in [0, 1] -> (B, 1, H, W) in {0, 1}, float32.

    Hysteresis keeps weak edges connected to strong ones (measured: +0.05 PCK@1 over keeping
    all weak edges). kornia runs it to convergence, ~50 sequential steps on a 512 px photo and
    half of this matcher's time; growing the strong edges ``hysteresis_steps`` pixels along
    weak chains instead gave the same PCK (4, 16 and 64 steps within 0.01) at a quarter of the
    cost. ``None`` runs kornia's exact hysteresis; 0 keeps the strong edges only.
    See :func:`midms_core.edges.canny_edges`.
    """
    return canny_edges(image.float(), low, high, sigma, hysteresis_steps)


def orientation_histograms(x: Tensor, bins: int = 8) -> Tensor:
    """Gradient-orientation channels (HOG/SIFT-style linear soft binning over 360 degrees).

    x: (B, C, H, W) -> (B, C * bins, H, W), channel c * bins + k = magnitude of the gradient of
    channel c where its angle lies within one bin of direction 2 pi k / bins, linearly weighted.
    Full 360 degrees keeps the side of an edge (bright line vs its dark flanks).
    """
    g = kornia.filters.spatial_gradient(x, mode="sobel", normalized=True)  # (B, C, 2, H, W)
    gx, gy = g[:, :, 0], g[:, :, 1]
    mag = torch.sqrt(gx * gx + gy * gy + 1e-12)
    angle = torch.atan2(gy, gx)
    centres = torch.arange(bins, device=x.device, dtype=x.dtype) * (2 * math.pi / bins)
    diff = torch.remainder(angle.unsqueeze(2) - centres.view(1, 1, -1, 1, 1) + math.pi, 2 * math.pi) - math.pi
    weight = (1 - diff.abs() * (bins / (2 * math.pi))).clamp_min(0)
    return (weight * mag.unsqueeze(2)).flatten(1, 2)


def ring_descriptor(
    hist: Tensor,
    group: int,
    rings: Rings = DEFAULT_RINGS,
    points: int = 8,
    centre_weight: float = 0.5,
    eps_fraction: float = 0.1,
) -> Tensor:
    """DAISY-style descriptor from per-cell histograms.

    hist: (B, G * group, h, w) non-negative histograms, ``group`` channels each (e.g. one
    orientation histogram per image channel). Returns (B, G * group * (1 + points * len(rings)),
    h, w): the centre histogram (weight ``centre_weight``) and, for each (sigma, radius) ring,
    the histograms blurred by sigma and sampled at ``points`` positions on the ring (nearest
    grid cell, zero outside the grid). Each histogram is L2-normalised with a floor of
    ``eps_fraction`` times the image's mean histogram norm, so textureless areas stay near 0
    instead of amplifying noise.
    """
    b, k, h, w = hist.shape
    norms = hist.reshape(b, -1, group, h, w).norm(dim=2)
    eps = (eps_fraction * norms.flatten(1).mean(dim=1)).clamp_min(1e-8).view(b, 1, 1, 1, 1)

    def normalise(x: Tensor, weight: float) -> Tensor:
        x = x.reshape(b, -1, group, h, w)
        return (weight * x / (x.norm(dim=2, keepdim=True) + eps)).reshape(b, k, h, w)

    out = [normalise(hist, centre_weight)]
    for sigma, radius in rings:
        blurred = _gaussian(hist, sigma)
        for i in range(points):
            a = 2 * math.pi * i / points
            dy, dx = int(round(radius * math.sin(a))), int(round(radius * math.cos(a)))
            out.append(normalise(_shift(blurred, dy, dx), 1.0))
    return torch.cat(out, dim=1)


def _check_rings(where: str, arg: str, rings: Rings) -> tuple[tuple[float, float], ...]:
    try:
        out = tuple((float(s), float(r)) for s, r in rings)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: '{arg}' must be a sequence of (sigma, radius) pairs in latent cells, got {rings!r}") from None
    if any(not (math.isfinite(s) and math.isfinite(r)) or s < 0 or r <= 0 for s, r in out):
        raise ValueError(f"{where}: '{arg}' needs sigma >= 0 and radius > 0 in every (sigma, radius) pair, got {rings!r}")
    return out


@dataclass(frozen=True)
class EdgeMatcherSettings:
    """The options of :class:`EdgeDescriptorMatcher`, validated once, here.

    cell_px:       working resolution, in image pixels per latent cell: each image is resized to
                   (h * cell_px, w * cell_px) before edge detection. 8 is the native resolution
                   of Stable Diffusion latents and measured clearly better than 4.
    canny_low / canny_high / canny_sigma / hysteresis_steps: exemplar Canny (kornia) settings,
                   at the working resolution (see :func:`exemplar_edge_map`).
    edge_blur:     Gaussian sigma (working pixels) applied to both edge maps before the
                   gradient histograms; merges a drawn line's two flanks into one ridge.
    orientations:  orientation bins over 360 degrees.
    rings:         ((sigma, radius), ...) in latent cells for the cross-domain descriptor.
    points:        samples per ring.
    centre_weight: weight of the centre histogram against each ring sample (1).
    subgrid:       cross-domain descriptors are computed on a grid this many times finer than
                   the latent grid, then averaged down (radii and sigmas are scaled to match).
    latent_blur / latent_patch / latent_rings: the latent descriptor
                   (:meth:`EdgeDescriptorMatcher.latent_features`): blur sigma in latent cells,
                   neighbourhood size (odd), context rings.
    x0_condition_weight: the in-domain features append the cross-domain features of the same
                   side with this weight (x0_hat with S_x, the exemplar latent with S_y), as the
                   official F'(x0_hat, D_x) mixes in the condition; 0: pure latent features.
    alignment:     "similarity" (default): :func:`~midms_core.alignment.search_similarity` lays
                   the exemplar over the condition first (scale, shift, mirror), and every warp of
                   the pair gets a locality prior around that layout (``MatchFeatures.prior``);
                   "none": features alone, no prior (``locality`` is then unused).
    mirror:        also search mirrored layouts (the exemplar's features then describe it
                   flipped, cross-domain and in-domain alike).
    locality:      prior width as a fraction of the exemplar grid's larger side; 0 = alignment
                   only changes the mirrored features, no prior.

    Sizes: cross-domain C = orientations * (1 + points * len(rings)); in-domain
    C' = c * latent_patch**2 + c * orientations * (1 + points * len(latent_rings)) (+ C when
    x0_condition_weight > 0), c = latent channels.
    """

    cell_px: int = 8
    canny_low: float = 0.1
    canny_high: float = 0.2
    canny_sigma: float = 1.0
    hysteresis_steps: Optional[int] = 16
    edge_blur: float = 2.0
    orientations: int = 8
    rings: Rings = DEFAULT_RINGS
    points: int = 8
    centre_weight: float = 0.5
    subgrid: int = 2
    latent_blur: float = 0.75
    latent_patch: int = 5
    latent_rings: Rings = DEFAULT_LATENT_RINGS
    x0_condition_weight: float = 0.7
    alignment: str = "similarity"
    mirror: bool = True
    locality: float = DEFAULT_LOCALITY

    def __post_init__(self) -> None:
        where = "EdgeDescriptorMatcher"
        check_choice(where, "alignment", self.alignment, ALIGNMENTS)
        if not isinstance(self.mirror, bool):
            raise ValueError(f"{where}: 'mirror' must be True or False, got {self.mirror!r}")
        loc = self.locality
        if isinstance(loc, bool) or not isinstance(loc, (int, float)) or not 0 <= loc <= 4 or not math.isfinite(loc):
            raise ValueError(f"{where}: 'locality' must be a number in [0, 4] (prior width as a fraction of the exemplar grid; 0 = off), got {loc!r}")
        for arg in ("cell_px", "orientations", "points", "subgrid"):
            value = getattr(self, arg)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{where}: 'cell_px', 'orientations', 'points' and 'subgrid' must be integers >= 1; '{arg}' is {value!r}")
        steps = self.hysteresis_steps
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 0):
            raise ValueError(f"{where}: 'hysteresis_steps' must be an integer >= 0 or None (exact), got {steps!r}")
        patch = self.latent_patch
        if isinstance(patch, bool) or not isinstance(patch, int) or patch < 1 or patch % 2 == 0:
            raise ValueError(f"{where}: 'latent_patch' must be an odd integer >= 1, got {patch!r}")
        check_positive(where, "canny_low", self.canny_low)
        check_positive(where, "canny_high", self.canny_high)
        if self.canny_high < self.canny_low:
            raise ValueError(f"{where}: 'canny_high' must be >= 'canny_low', got {self.canny_high} < {self.canny_low}")
        check_positive(where, "canny_sigma", self.canny_sigma)
        check_positive(where, "centre_weight", self.centre_weight)
        for arg in ("edge_blur", "latent_blur", "x0_condition_weight"):
            value = getattr(self, arg)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 64:
                raise ValueError(f"{where}: '{arg}' must be a number in [0, 64), got {value!r}")
        for arg in ("canny_low", "canny_high", "canny_sigma", "edge_blur", "centre_weight", "latent_blur", "x0_condition_weight", "locality"):
            object.__setattr__(self, arg, float(getattr(self, arg)))
        for arg in ("rings", "latent_rings"):
            object.__setattr__(self, arg, _check_rings(where, arg, getattr(self, arg)))


class EdgeDescriptorMatcher(SharedConditionMatcher):
    """Training-free matcher: edge maps + DAISY-like descriptors on each side's latent grid, with
    the options of ``settings`` (an :class:`EdgeMatcherSettings`; the defaults when omitted)."""

    name = "kornia_edges"

    def __init__(self, settings: Optional[EdgeMatcherSettings] = None) -> None:
        settings = EdgeMatcherSettings() if settings is None else settings
        if not isinstance(settings, EdgeMatcherSettings):
            raise ValueError(f"EdgeDescriptorMatcher: 'settings' must be an EdgeMatcherSettings, got {type(settings).__name__}")
        self.settings = settings
        self._plain: Optional[EdgeDescriptorMatcher] = None  # without_alignment(), made once

    # ------------------------------------------------------------------ cross-domain side

    def _work(self, image: Tensor, grid: tuple[int, int]) -> Tensor:
        """(B, 3, H, W) -> (B, 3, h * cell_px, w * cell_px), antialiased when shrinking."""
        cell = self.settings.cell_px
        size = (grid[0] * cell, grid[1] * cell)
        if tuple(image.shape[-2:]) == size:
            return image.float()
        return F.interpolate(image.float(), size=size, mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)

    def edge_features(self, edges: Tensor, grid: tuple[int, int]) -> Tensor:
        """Descriptor of an edge map on a latent grid.

        edges: (B, 1, H, W) at the working resolution -> (B, C, h, w) with grid = (h, w).
        """
        opt = self.settings
        s = opt.subgrid
        hist = orientation_histograms(_gaussian(edges, opt.edge_blur), opt.orientations)
        hist = F.interpolate(hist, size=(grid[0] * s, grid[1] * s), mode="area")
        rings = [(sigma * s, radius * s) for sigma, radius in opt.rings]
        desc = ring_descriptor(hist, opt.orientations, rings, opt.points, opt.centre_weight)
        return F.avg_pool2d(desc, s) if s > 1 else desc

    def condition_features(self, image: Tensor, grid: tuple[int, int]) -> Tensor:
        """S_x: condition image (B, 3, H, W) in [0, 1] -> (B, C, h, w)."""
        edges = condition_edge_map(self._work(image, grid))
        _require_edges(edges, "condition", "it is flat or nearly (no line or region boundary stands out), so there "
                       "is no layout to match; give the encode node's 'condition' an edge, pose or label image with "
                       "visible lines or regions")
        return self.edge_features(edges, grid)

    def exemplar_features(self, image: Tensor, grid: tuple[int, int], of_set: str = "") -> Tensor:
        """S_y: exemplar photo (B, 3, H, W) in [0, 1] -> (B, C, h, w). ``of_set`` names the
        member of a set of exemplars in the error when it has no edges (e.g. "exemplar 2 of 3")."""
        opt = self.settings
        edges = exemplar_edge_map(self._work(image, grid), opt.canny_low, opt.canny_high, opt.canny_sigma, opt.hysteresis_steps)
        _require_edges(edges, "exemplar", f"Canny (canny_low {opt.canny_low:g}, canny_high {opt.canny_high:g}) finds no edge "
                       "in it, so nothing can be matched; lower canny_low and canny_high on the edge matcher, or use a "
                       "photo with visible structure", of_set)
        return self.edge_features(edges, grid)

    # ------------------------------------------------------------------ in-domain side

    def latent_features(self, latent: Tensor) -> Tensor:
        """In-domain descriptor of a latent (raw VAE space): (B, c, h, w) -> (B, C', h, w).

        Channels are standardised over the image (x0_hat and the exemplar latent then compare
        by local structure and relative colour, not absolute latent scale) and slightly blurred
        (x0_hat is a blurry, noisy estimate; blurring both sides alike measured +0.04 PCK@1).
        Parts: the Gaussian-weighted ``latent_patch`` x ``latent_patch`` neighbourhood of values
        (precise position) and the ring descriptor of the channels' gradients (context).
        """
        check_tensor("EdgeDescriptorMatcher.latent_features", "latent", latent, 4, "(B, c, h, w)")
        opt, c = self.settings, latent.shape[1]
        z = latent.float()
        z = (z - z.mean(dim=(2, 3), keepdim=True)) / z.std(dim=(2, 3), keepdim=True, unbiased=False).clamp_min(1e-6)
        if opt.latent_blur > 0:
            k = 2 * math.ceil(3 * opt.latent_blur) + 1
            z = kornia.filters.gaussian_blur2d(z, (k, k), (opt.latent_blur, opt.latent_blur), border_type="replicate")
        r = opt.latent_patch // 2
        sigma = max(opt.latent_patch / 3.0, 1e-6)
        patch = [
            math.exp(-(dx * dx + dy * dy) / (2 * sigma * sigma)) * _shift(z, dy, dx)
            for dy in range(-r, r + 1)
            for dx in range(-r, r + 1)
        ]
        hist = orientation_histograms(z, opt.orientations)
        context = ring_descriptor(hist, opt.orientations, opt.latent_rings, opt.points, opt.centre_weight)
        return torch.cat([torch.cat(patch, dim=1) / math.sqrt(c), context], dim=1)

    # ------------------------------------------------------------------ Matcher

    def without_alignment(self) -> "EdgeDescriptorMatcher":
        """The same matcher with alignment "none" (made on the first call, then reused)."""
        if self.settings.alignment == "none":
            return self
        if self._plain is None:
            self._plain = copy.copy(self)
            self._plain.settings = replace(self.settings, alignment="none")
        return self._plain

    def bind_all(self, condition: MatchSide, exemplars: list[MatchSide]) -> list[MatchFeatures]:
        """Features of each pair, the condition's edge descriptor computed once: S_x (B, C, hx, wx),
        S_y (B, C, hy, wy), in-domain S_y' (B, C', hy, wy).

        Both sides need their image (B, 3, H, W) in [0, 1]; the grids come from their latents.
        """
        why = "this matcher computes its cross-domain features from edges of the pixels, not from latents"
        for exemplar in exemplars:
            require_images("EdgeDescriptorMatcher.bind", condition, exemplar, why)
        with torch.no_grad():
            cond = self.condition_features(condition.image, condition.grid)
        count = len(exemplars)
        return [self._bind_to(condition, cond, exemplar, f"exemplar {i + 1} of {count}" if count > 1 else "")
                for i, exemplar in enumerate(exemplars)]

    def _bind_to(self, condition: MatchSide, cond: Tensor, exemplar: MatchSide, of_set: str) -> MatchFeatures:
        """The pair's features, given the condition's descriptor ``cond`` (B, C, hx, wx)."""
        grid = condition.grid
        channels = exemplar.latent.shape[1]
        prior = aligned = None
        with torch.no_grad():
            dtype = condition.latent.dtype
            exem = self.exemplar_features(exemplar.image, exemplar.grid, of_set)
            exem_latent = self.latent_features(exemplar.latent)
            if self.settings.alignment != "none":
                aligned, exem, exem_latent = self._align(cond, exem, exem_latent, exemplar)
                if self.settings.locality > 0:
                    sigma = self.settings.locality * max(exemplar.grid)
                    prior = SpatialPrior(affine_targets(aligned.matrix, grid), sigma)
            exem_in = self._in_domain(exem_latent, exem)

        def x0_features(x0_latent: Tensor) -> Tensor:
            """x0_hat latent (B, c, hx, wx), raw VAE space like the exemplar's -> (B, C', hx, wx)."""
            if not isinstance(x0_latent, Tensor) or x0_latent.dim() != 4 or x0_latent.shape[1] != channels or tuple(x0_latent.shape[-2:]) != grid:
                raise ValueError(
                    f"EdgeDescriptorMatcher.x0_features: 'x0_latent' must be (B, {channels}, {grid[0]}, {grid[1]}) "
                    f"(exemplar latent channels, condition grid), got {tuple(getattr(x0_latent, 'shape', ()))}"
                )
            with torch.no_grad():
                return self._in_domain(self.latent_features(x0_latent), cond).to(x0_latent.dtype)

        return MatchFeatures(
            condition=cond.to(dtype), exemplar=exem.to(dtype), exemplar_in_domain=exem_in.to(dtype), x0_features=x0_features,
            prior=prior, alignment=aligned,
        )

    def _align(self, cond: Tensor, exem: Tensor, exem_latent: Tensor, exemplar: MatchSide) -> tuple[Alignment, Tensor, Tensor]:
        """Global similarity alignment of the pair; where it is mirrored, the exemplar's features
        are those of the flipped exemplar flipped back (descriptors with a mirrored layout, so a
        left-right reversed exemplar describes like the condition)."""
        mirrored_exem = None
        if self.settings.mirror:
            mirrored_exem = self.exemplar_features(exemplar.image.flip(-1), exemplar.grid).flip(-1)
        aligned = search_similarity(cond, exem, mirrored_exem)
        if bool(aligned.mirrored.any()):
            flip = aligned.mirrored.view(-1, 1, 1, 1)
            exem = torch.where(flip, mirrored_exem, exem)
            exem_latent = torch.where(flip, self.latent_features(exemplar.latent.flip(-1)).flip(-1), exem_latent)
        return aligned, exem, exem_latent

    def _in_domain(self, latent_desc: Tensor, cross: Tensor) -> Tensor:
        """cat[latent descriptor, weight * cross-domain descriptor], each part centred and
        L2-normalised per position first so the weight is the parts' relative say in the cosine.
        (B, C1, h, w), (B, C, h, w) -> (B, C1 [+ C], h, w)."""
        if self.settings.x0_condition_weight == 0:
            return latent_desc
        batch = max(cross.shape[0], latent_desc.shape[0])  # a batch of 1 broadcasts
        latent_desc = latent_desc.expand(batch, -1, -1, -1)
        cross = cross.expand(batch, -1, -1, -1)
        return torch.cat([centre_normalise(latent_desc), self.settings.x0_condition_weight * centre_normalise(cross)], dim=1)
