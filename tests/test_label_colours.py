"""Label maps that drifted (noise, JPEG, resampling) snapped to one palette (midms_core.exemplars.label_colours).

Expectations are the clean maps' exact colours: two cells share a label after snapping iff
their clean colours are equal, and the palette lies within a few units of the clean colours."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from midms_core.exemplars.label_colours import NO_LABEL, TooManyColours, cluster_palette, snap_colours
from midms_core.exemplars.regions import colour_labels, labels_on_grid

# four label colours, the closest two 41 apart (the shipped map's closest pair are 41 apart too)
COLOURS = torch.tensor([[242, 36, 36], [140, 70, 21], [29, 97, 191], [109, 192, 242]], dtype=torch.float32) / 255
SIZE, CELL = 128, 8
GRID = (SIZE // CELL, SIZE // CELL)


def flat_regions() -> torch.Tensor:
    """(1, 3, 128, 128) label map of four flat regions: a left band, a right band split top /
    bottom, and a disc across the middle (a curved border, not on the cell grid)."""
    index = torch.zeros(SIZE, SIZE, dtype=torch.long)
    index[:, 48:] = 1
    index[72:, 48:] = 2
    ys, xs = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    index[((ys - 64) ** 2 + (xs - 60) ** 2) < 22**2] = 3
    return COLOURS[index].permute(2, 0, 1)[None]


def noisy(image: torch.Tensor, amplitude: int = 12, seed: int = 0) -> torch.Tensor:
    """Uniform integer noise in [-amplitude, amplitude] per channel and pixel, on 8-bit values."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randint(-amplitude, amplitude + 1, image.shape, generator=g)
    return ((image * 255).round() + noise).clamp(0, 255) / 255


def jpeg(image: torch.Tensor, quality: int = 75) -> torch.Tensor:
    """A round trip through PIL's JPEG encoder (its default 4:2:0 chroma subsampling)."""
    array = (image[0].permute(1, 2, 0) * 255).round().byte().numpy()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    return torch.from_numpy(np.array(Image.open(buffer).convert("RGB"))).float().div(255).permute(2, 0, 1)[None]


def same_label(labels: torch.Tensor) -> torch.Tensor:
    """(1, 1, h, w) labels -> (h * w, h * w) bool: which cells share a label."""
    flat = labels.flatten()
    return flat[:, None] == flat[None, :]


def cell_labels(image: torch.Tensor, tolerance: float = 24) -> torch.Tensor:
    return labels_on_grid(snap_colours(image, cluster_palette(image, tolerance)), GRID)


@pytest.mark.parametrize("drift", ["clean", "noise 12", "jpeg 75", "noise 12 + jpeg 75"])
def test_drifted_maps_give_the_clean_labels_on_the_latent_grid(drift):
    clean = flat_regions()
    image = {"clean": clean, "noise 12": noisy(clean), "jpeg 75": jpeg(clean),
             "noise 12 + jpeg 75": jpeg(noisy(clean))}[drift]
    if drift != "clean":
        assert not torch.equal(colour_labels(image), colour_labels(clean))  # the drift is real
    want = same_label(labels_on_grid(colour_labels(clean), GRID))  # exact colours of the clean map
    got = same_label(cell_labels(image))
    assert torch.equal(got, want), f"{int((got != want).sum())} cell pairs differ"
    palette = cluster_palette(image)
    assert palette.shape == (4, 3)
    assert float(torch.cdist(palette * 255, COLOURS * 255).min(dim=1).values.max()) < 4  # near the true colours


def test_a_lossless_map_keeps_its_exact_colours_small_labels_included():
    image = flat_regions()
    image[..., 100:103, 10:13] = torch.tensor([0.0, 1.0, 0.0])[:, None, None]  # a fifth label of 3 x 3 pixels
    palette = cluster_palette(image)
    want = torch.unique(torch.cat([COLOURS, torch.tensor([[0.0, 1.0, 0.0]])]) * 255, dim=0)
    torch.testing.assert_close(torch.unique((palette * 255).round(), dim=0), want.round())
    torch.testing.assert_close(same_label(snap_colours(image, palette)[..., ::4, ::4]),
                               same_label(colour_labels(image)[..., ::4, ::4]))


def two_colours(distance: float) -> torch.Tensor:
    """(1, 3, 64, 64): left half (100, 120, 140), right half that colour + distance in red."""
    image = torch.empty(1, 3, 64, 64)
    image[..., :32] = torch.tensor([100.0, 120.0, 140.0])[:, None, None] / 255
    image[..., 32:] = torch.tensor([100.0 + distance, 120.0, 140.0])[:, None, None] / 255
    return image


def test_colours_further_apart_than_the_tolerance_stay_separate():
    image = noisy(two_colours(40))
    labels = snap_colours(image, cluster_palette(image, 24))
    left, right = labels[..., :32], labels[..., 32:]
    assert left.unique().numel() == 1 and right.unique().numel() == 1
    assert int(left.flatten()[0]) != int(right.flatten()[0])
    # and a tolerance beyond their distance makes them one label
    assert cluster_palette(two_colours(40), 48).shape[0] == 1


def test_an_exemplar_colour_the_condition_lacks_matches_nothing():
    condition = two_colours(80)
    palette = cluster_palette(condition)
    exemplar = torch.empty(1, 3, 2, 2)
    exemplar[..., 0, 0] = torch.tensor([100.0, 120.0, 140.0]) / 255 + 10 / 255   # the left colour, 17 off
    exemplar[..., 0, 1] = torch.tensor([180.0, 120.0, 140.0]) / 255               # the right colour
    exemplar[..., 1, :] = torch.tensor([[20.0], [220.0], [20.0]]) / 255           # green: not in the condition
    labels = snap_colours(exemplar, palette, tolerance=24)[0, 0]
    cond = snap_colours(condition, palette)[0, 0]
    assert int(labels[0, 0]) == int(cond[0, 0]) and int(labels[0, 1]) == int(cond[0, -1])
    assert labels[1].tolist() == [NO_LABEL, NO_LABEL]
    # without the tolerance green would be forced onto the nearest condition label
    assert int(snap_colours(exemplar, palette)[0, 0, 1, 0]) != NO_LABEL


def test_border_blends_are_no_labels_of_their_own():
    """Red next to blue, downscaled and upscaled bilinearly: the border is a band of purples
    further than the tolerance from both, each a 1 px line of one exact colour; they are not
    labels, but go to the nearest side."""
    image = torch.zeros(1, 3, 64, 64)
    image[:, 0, :, :32] = 1.0
    image[:, 2, :, 32:] = 1.0
    blurred = F.interpolate(F.interpolate(image, size=(24, 24), mode="bilinear", antialias=True), size=(64, 64),
                            mode="bilinear").clamp(0, 1)
    assert colour_labels(blurred).unique().numel() >= 8  # 2 colours and their blends
    palette = cluster_palette(blurred)
    assert palette.shape[0] == 2
    torch.testing.assert_close(torch.unique((palette * 255).round(), dim=0),
                               torch.tensor([[0.0, 0.0, 255.0], [255.0, 0.0, 0.0]]), atol=3, rtol=0)
    labels = snap_colours(blurred, palette)[0, 0, 0]  # one row: red up to the middle, then blue
    assert labels[:32].unique().numel() == 1 and labels[32:].unique().numel() == 1 and labels[0] != labels[-1]


def test_a_photo_is_refused_as_a_label_map():
    photo = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with pytest.raises(TooManyColours) as info:
        cluster_palette(photo, 1, max_colours=16)
    assert info.value.limit == 16 and info.value.found > 16


@pytest.mark.parametrize("tolerance", [0, -3, float("nan")])
def test_the_tolerance_must_be_positive(tolerance):
    with pytest.raises(ValueError, match="tolerance"):
        cluster_palette(flat_regions(), tolerance)
