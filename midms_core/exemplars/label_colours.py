"""Label-map colours that drifted (JPEG, resizing, noise) -> labels shared by both sides.

A label map is a picture of a few flat colours, one per label. After JPEG or resampling each
flat region holds a spread of nearby colours, and region borders hold blends. Comparing exact
colours then splits every region into many labels that the other side does not have. Here the
condition map's colours are clustered into a palette with a colour ``tolerance`` (8-bit units,
Euclidean distance in RGB), and BOTH maps are snapped to that one palette:

* condition colours go to the nearest palette colour (the palette was made from them);
* an exemplar colour goes to the nearest palette colour only if it lies within the tolerance,
  else to :data:`NO_LABEL`, which matches nothing: a label the condition does not have must not
  be forced onto one it has.

Images are channels first (B, 3, H, W) in [0, 1]; palettes (K, 3) in [0, 1].
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..validation import check_tensor

__all__ = [
    "DEFAULT_TOLERANCE",
    "MAX_COLOURS",
    "NO_LABEL",
    "TooManyColours",
    "cluster_palette",
    "snap_colours",
]

#: default colour tolerance, 8-bit units: covers +-12 per channel of noise (at most 12 * sqrt(3)
#: = 20.8 from the true colour) and stays below the 41 between the closest two colours of the
#: benchmarks' label palette (``midms_core.training.conditions.label_palette(27)``)
DEFAULT_TOLERANCE = 24.0
#: most label colours a palette may have
MAX_COLOURS = 256
#: the label of an exemplar colour that is no condition colour: equal to no condition label
NO_LABEL = -1
#: a cluster of several colours is a label only if at least this share of its pixels are inside
#: a 3 x 3 block of its own (JPEG / resampling blends along borders have almost none)
MIN_CORE_SHARE = 0.05
_BIN = 8            # at most this many 8-bit units per side of the colour bins the clustering runs on
_SEED_FACTOR = 4    # seeding may find this many times MAX_COLOURS before merging (noise splits regions)
_LLOYD_STEPS = 3    # k-means steps between merges
_ROUNDS = 64        # at most this many merge rounds
_CHUNK = 1 << 16    # colours per block of the colour-to-centre distances
_MAX_BINS = 1 << 16  # bins are widened (x 2) until at most this many are occupied (photos: bounded work)


class TooManyColours(ValueError):
    """The map has more distinct colours (further apart than the tolerance) than a palette may
    hold: it is not a label map (e.g. a photo), or the tolerance is too small for its noise."""

    def __init__(self, found: int, limit: int, tolerance: float):
        self.found, self.limit, self.tolerance = found, limit, tolerance
        super().__init__(f"cluster_palette: more than {limit} colours further than {tolerance:g} apart "
                         f"(found {found}{'+' if found > limit else ''})")


def _check_image(where: str, image: Tensor) -> None:
    check_tensor(where, "image", image, 4, "(B, 3, H, W)")
    if image.shape[1] != 3:
        raise ValueError(f"{where}: 'image' must be RGB (B, 3, H, W), got {tuple(image.shape)}")


def _codes(image: Tensor) -> Tensor:
    """(B, 3, H, W) in [0, 1] -> (B, H, W) int64 8-bit colour codes r * 65536 + g * 256 + b."""
    q = (image.detach().float().clamp(0, 1) * 255).round().long()
    return q[:, 0] * 65536 + q[:, 1] * 256 + q[:, 2]


def _decode(codes: Tensor) -> Tensor:
    """Colour codes (N,) -> (N, 3) float64 in 0..255."""
    return torch.stack([codes // 65536, codes // 256 % 256, codes % 256], dim=-1).double()


def _nearest(colours: Tensor, centres: Tensor) -> tuple[Tensor, Tensor]:
    """For (N, 3) colours and (K, 3) centres: the nearest centre's index (N,) and the squared
    distance to it (N,), in blocks of rows so N x K never sits in memory at once."""
    index, dist = [], []
    for block in colours.split(_CHUNK):  # float32 is exact enough in 0..255 units
        best = torch.cdist(block.float(), centres.float()).min(dim=1)
        index.append(best.indices)
        dist.append(best.values.double().square())
    return torch.cat(index), torch.cat(dist)


def _weighted_means(colours: Tensor, weights: Tensor, index: Tensor, count: int) -> tuple[Tensor, Tensor]:
    """Per group 0..count-1 of ``index`` (N,): the weighted mean colour (count, 3) and the mass (count,)."""
    mass = torch.zeros(count, dtype=torch.float64).index_add_(0, index, weights)
    sums = torch.zeros(count, 3, dtype=torch.float64).index_add_(0, index, colours * weights[:, None])
    return sums / mass.clamp(min=1e-12)[:, None], mass


def _seed(colours: Tensor, weights: Tensor, tolerance: float, limit: int) -> Tensor:
    """Greedy seeding by frequency: going through the colours heaviest first, a colour further
    than ``tolerance`` from every centre so far becomes a new centre. Done as "the heaviest
    colour no centre covers yet becomes a centre" (the same centres, one pass over the colours
    per centre). (U, 3), (U,) -> (S, 3); TooManyColours past ``limit`` centres."""
    order = torch.argsort(weights, descending=True, stable=True)
    colours = colours[order]
    uncovered = torch.ones(colours.shape[0], dtype=torch.bool)
    centres = []
    while bool(uncovered.any()):
        if len(centres) == limit:
            raise TooManyColours(limit + 1, limit, tolerance)
        centre = colours[int(uncovered.to(torch.uint8).argmax())]  # the first (heaviest) uncovered colour
        centres.append(centre)
        uncovered &= (colours - centre).square().sum(-1) > tolerance**2
    return torch.stack(centres)


def _lloyd(colours: Tensor, weights: Tensor, centres: Tensor, steps: int) -> tuple[Tensor, Tensor]:
    """``steps`` weighted k-means (Lloyd) steps from ``centres`` (stops early when the centres
    stand still): centres (K', 3) and their masses (K',), empty clusters dropped."""
    for step in range(steps + 1):
        assign, _ = _nearest(colours, centres)
        means, mass = _weighted_means(colours, weights, assign, centres.shape[0])
        keep = mass > 0
        if step == steps or (bool(keep.all()) and torch.allclose(means, centres, rtol=0, atol=1e-6)):
            return centres[keep], mass[keep]
        centres = means[keep]
    raise AssertionError("unreachable")


def _merge(centres: Tensor, mass: Tensor, tolerance: float) -> Tensor:
    """Drop every centre within ``tolerance`` of a heavier one that is kept (heaviest first):
    (K, 3), (K,) -> (K', 3). The dropped centres' colours go to their nearest kept centre at the
    next k-means step (rather than being averaged with it)."""
    order = torch.argsort(mass, descending=True, stable=True).tolist()
    close = (torch.cdist(centres, centres) <= tolerance).tolist()
    kept: list[int] = []
    for i in order:
        if not any(close[i][j] for j in kept):
            kept.append(i)
    return centres[kept]


def _core(labels: Tensor) -> Tensor:
    """(B, H, W) integer labels -> (B, H, W) bool: the pixel's 3 x 3 neighbourhood (edges
    replicated) holds its label only."""
    x = F.pad(labels[:, None].double(), (1, 1, 1, 1), mode="replicate")
    return (F.max_pool2d(x, 3, 1) == -F.max_pool2d(-x, 3, 1))[:, 0]


def cluster_palette(image: Tensor, tolerance: float = DEFAULT_TOLERANCE, max_colours: int = MAX_COLOURS) -> Tensor:
    """The label colours of a label-map image (B, 3, H, W) in [0, 1] -> palette (K, 3) in [0, 1],
    the most frequent label first; ``tolerance`` in 8-bit units (Euclidean in RGB).

    Why this way: each label's pixels are one colour plus drift (JPEG's block and chroma
    errors, noise), different labels lie further apart than the drift, and borders hold blends.

    1. Colours are counted in bins of a third of the tolerance per channel (at most 8 units;
       the weighted mean colour of each bin; wider when more than 65536 bins are occupied): under
       noise the bins of a true colour add up, so it stands out as the heaviest. Clustering and
       the core test of step 4 label whole bins (snapping, :func:`snap_colours`, is per colour).
    2. Greedy seeding by weight (:func:`_seed`): a colour further than the tolerance from every
       centre so far starts a new cluster.
    3. Weighted k-means (:func:`_lloyd`) moves each centre to the pixel-weighted mean of its
       colours; noise may have seeded one label several times, so a centre that comes within the
       tolerance of a heavier one is dropped (:func:`_merge`, its colours join the nearest
       remaining centre) and k-means goes on, until no two centres are that close. Colours
       further apart than the tolerance thus stay separate labels.
    4. Blends along borders (JPEG's chroma subsampling and ringing, resampling) that lie further
       than the tolerance from both sides' colours form clusters of their own. They are thin:
       a cluster is kept only if some of its pixels sit inside a 3 x 3 block of its own label
       (core pixels) and, unless it is ONE exact colour (a lossless label, however small), at
       least :data:`MIN_CORE_SHARE` of them do (measured on the shipped label map after JPEG
       q75: real labels 5-90 %, blend clusters 0-4 %). Each kept centre is then the mean colour
       of its core pixels (the blends no longer pull it); the pixels of dropped clusters go to
       the nearest kept label when snapped. The price: a label no more than 2 px wide anywhere
       (a line) is taken for a blend; a lossless map with such labels wants "exact colour".

    A lossless map whose labels are further apart than the tolerance and each at least 3 x 3
    pixels somewhere gives exactly its own colours. Raises :class:`TooManyColours` when more
    than ``max_colours`` remain (or seeding finds more than 4 x ``max_colours``): not a label
    map, or a tolerance too small for its noise.
    """
    _check_image("cluster_palette", image)
    tolerance = float(tolerance)
    if not tolerance > 0:
        raise ValueError(f"cluster_palette: 'tolerance' must be > 0 (8-bit units), got {tolerance!r}")
    counted = _count_colours(image, tolerance)
    centres = _cluster_bins(counted, tolerance, max_colours)
    centres, mass = _cored_labels(counted, centres)
    if centres.shape[0] > max_colours:
        raise TooManyColours(centres.shape[0], max_colours, tolerance)
    centres = centres[torch.argsort(mass, descending=True, stable=True)]
    return (centres / 255).float().to(image.device)


class _Counted(NamedTuple):
    """A label map's colours counted (step 1 of :func:`cluster_palette`): the (B, H, W) shape of
    its pixels, each pixel's distinct colour ``inverse`` (B * H * W,), the distinct colours
    (U, 3) float64 in 0..255 with their pixel counts ``weights`` (U,), each colour's bin
    ``bin_of`` (U,), and the bins' weighted mean colours (Nb, 3) and weights (Nb,)."""

    shape: torch.Size
    inverse: Tensor
    colours: Tensor
    weights: Tensor
    bin_of: Tensor
    bin_colours: Tensor
    bin_weights: Tensor


def _count_colours(image: Tensor, tolerance: float) -> _Counted:
    """Step 1: the distinct colours and their bins of a third of the tolerance (at most _BIN
    units; twice as wide while more than _MAX_BINS bins are occupied)."""
    codes = _codes(image.cpu())
    unique, inverse, counts = torch.unique(codes.flatten(), return_inverse=True, return_counts=True)
    colours, weights = _decode(unique), counts.double()
    width = _bin_width(tolerance)
    bins, bin_of = torch.unique(_bin_codes(colours, width), return_inverse=True)
    while bins.shape[0] > _MAX_BINS and width < 64:  # a photo, or heavy noise at a small tolerance
        width *= 2
        bins, bin_of = torch.unique(_bin_codes(colours, width), return_inverse=True)
    bin_colours, bin_weights = _weighted_means(colours, weights, bin_of, bins.shape[0])
    return _Counted(codes.shape, inverse, colours, weights, bin_of, bin_colours, bin_weights)


def _cluster_bins(counted: _Counted, tolerance: float, max_colours: int) -> Tensor:
    """Steps 2 and 3: greedy seeding, then weighted k-means with close centres merged until no
    two are within the tolerance. (K, 3) centres in 0..255."""
    try:
        centres = _seed(counted.bin_colours, counted.bin_weights, tolerance, _SEED_FACTOR * max_colours)
    except TooManyColours as e:  # report against the palette's limit
        raise TooManyColours(e.found, max_colours, tolerance) from None
    for _ in range(_ROUNDS):
        centres, mass = _lloyd(counted.bin_colours, counted.bin_weights, centres, _LLOYD_STEPS)
        merged = _merge(centres, mass, tolerance)
        if merged.shape[0] == centres.shape[0]:
            break
        centres = merged
    return centres


def _cored_labels(counted: _Counted, centres: Tensor) -> tuple[Tensor, Tensor]:
    """Step 4: the clusters kept (a core, and a core share of at least MIN_CORE_SHARE unless of
    one exact colour), each centre moved to the mean colour of its core pixels: (K', 3) centres
    and their masses (K',)."""
    colours, weights, inverse = counted.colours, counted.weights, counted.inverse
    colour_label = _nearest(counted.bin_colours, centres)[0][counted.bin_of]  # (U,): each colour's bin's centre
    k = centres.shape[0]
    labels = colour_label[inverse].view(counted.shape)
    core = _core(labels).flatten()
    core_mass = torch.zeros(k, dtype=torch.float64).index_add_(0, labels.flatten(), core.double())
    _, mass = _weighted_means(colours, weights, colour_label, k)
    distinct = torch.zeros(k, dtype=torch.long).index_add_(0, colour_label, torch.ones_like(colour_label))
    keep = (core_mass > 0) & ((distinct == 1) | (core_mass >= MIN_CORE_SHARE * mass))
    if not bool(keep.any()):
        keep = mass == mass.max()
    core_colours = colours[inverse][core]  # (P, 3) colours of the core pixels
    core_means, _ = _weighted_means(core_colours, torch.ones(core_colours.shape[0], dtype=torch.float64),
                                    labels.flatten()[core], k)
    centres = torch.where((core_mass > 0)[:, None], core_means, centres)[keep]
    return centres, mass[keep]


def _bin_width(tolerance: float) -> int:
    """Bin side for ``tolerance``: a third of it (two colours of one bin are at most
    sqrt(3) / 3 = 0.58 x tolerance apart), 1 to _BIN units."""
    return int(max(1, min(_BIN, tolerance // 3)))


def _bin_codes(colours: Tensor, width: int) -> Tensor:
    """(N, 3) colours in 0..255 -> (N,) int64 codes of their bins of ``width`` units per side."""
    b = torch.div(colours.long(), width, rounding_mode="floor")
    side = 256 // width + 1
    return (b[:, 0] * side + b[:, 1]) * side + b[:, 2]


def snap_colours(image: Tensor, palette: Tensor, tolerance: Optional[float] = None) -> Tensor:
    """Labels of a label-map image (B, 3, H, W) in [0, 1] against ``palette`` (K, 3) in [0, 1]
    -> (B, 1, H, W) int64: the index of the nearest palette colour (Euclidean in RGB, on the
    8-bit colours). With ``tolerance`` (8-bit units) a colour further than that from every
    palette colour gets :data:`NO_LABEL`."""
    _check_image("snap_colours", image)
    check_tensor("snap_colours", "palette", palette, 2, "(K, 3)")
    if palette.shape[1] != 3:
        raise ValueError(f"snap_colours: 'palette' must be (K, 3) RGB, got {tuple(palette.shape)}")
    codes = _codes(image)
    unique, inverse = torch.unique(codes.flatten(), return_inverse=True)
    index, dist = _nearest(_decode(unique).to(palette.device), palette.detach().double() * 255)
    if tolerance is not None:
        index = torch.where(dist <= float(tolerance) ** 2, index, torch.full_like(index, NO_LABEL))
    return index.to(image.device)[inverse.to(image.device)].view(image.shape[0], 1, *image.shape[-2:])
