"""Tests of midms_core.edges: the one Canny wrapper, and each caller against what it computed
before the three wrappers became one (transcribed here from the earlier code, kornia direct)."""

from __future__ import annotations

import math

import kornia
import pytest
import torch
import torch.nn.functional as F

from midms_core.edges import canny_edges
from midms_core.matchers.edge import exemplar_edge_map
from midms_core.networks.label_maps import canny_edge_map
from midms_core.training.conditions import canny_condition

DTYPES = (torch.float32, torch.float64, torch.float16)


def _photos() -> list[torch.Tensor]:
    """Random noise (many weak edges) and, when scikit-image is there, a real photo."""
    images = [torch.rand(2, 3, 40, 56, generator=torch.Generator().manual_seed(0))]
    try:
        from harness.photos import load_photo

        images.append(load_photo("astronaut", 96))
    except ImportError:
        pass
    return images


def _grown(edges: torch.Tensor, steps: int) -> torch.Tensor:
    weak, strong = (edges > 0).to(edges.dtype), (edges == 1).to(edges.dtype)
    for _ in range(steps):
        strong = F.max_pool2d(strong, 3, stride=1, padding=1) * weak
    return strong


@pytest.mark.parametrize("dtype", DTYPES)
def test_learned_matchers_exemplar_map_is_unchanged(dtype):
    """label_maps.canny_edge_map: kornia on the RGB image in float32, cast back to its dtype."""
    for image in _photos():
        x = image.to(dtype)
        for low, high in ((0.1, 0.2), (0.05, 0.3)):
            want = kornia.filters.canny(x.float(), low_threshold=low, high_threshold=high)[1].to(dtype)
            got = canny_edge_map(x, low, high)
            assert got.dtype == dtype and got.shape == (x.shape[0], 1, *x.shape[-2:])
            assert torch.equal(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
def test_edge_matchers_exemplar_map_is_unchanged(dtype):
    """matchers.edge.exemplar_edge_map: float32 luminance, blur kernel from sigma, hysteresis exact
    (None) or grown a few steps."""
    for image in _photos():
        gray = kornia.color.rgb_to_grayscale(image.to(dtype).float())
        for sigma in (1.0, 0.6, 1.7):
            k = 2 * math.ceil(2 * sigma) + 1
            for steps in (None, 0, 4, 16):
                _, edges = kornia.filters.canny(gray, 0.1, 0.25, kernel_size=(k, k), sigma=(sigma, sigma),
                                                hysteresis=steps is None)
                want = edges if steps is None else _grown(edges, steps)
                got = exemplar_edge_map(image.to(dtype), 0.1, 0.25, sigma, steps)
                assert got.dtype == torch.float32 and torch.equal(got, want)
        assert torch.equal(exemplar_edge_map(image), exemplar_edge_map(image, 0.1, 0.2, 1.0, 16))  # its defaults


@pytest.mark.parametrize("dtype", (torch.float32, torch.float64))
def test_evaluation_condition_is_unchanged(dtype):
    """evaluation.canny_condition: kornia's defaults on the luminance in the image's own dtype, as RGB."""
    for image in _photos():
        x = image.to(dtype)
        want = kornia.filters.canny(kornia.color.rgb_to_grayscale(x))[1].repeat(1, 3, 1, 1)
        got = canny_condition(x)
        assert got.dtype == dtype and torch.equal(got, want)


def test_canny_edges_defaults_are_kornias_and_binary():
    for image in _photos():
        got = canny_edges(image)
        assert torch.equal(got, kornia.filters.canny(image)[1])
        assert set(got.unique().tolist()) <= {0.0, 1.0}
        assert torch.equal(canny_edges(image, hysteresis_steps=8), _grown(
            kornia.filters.canny(image, hysteresis=False)[1], 8))
