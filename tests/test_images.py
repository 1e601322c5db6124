"""midms_core.images: channel handling, fitting sizes, flow and mask pictures (pure torch, no
ComfyUI); and a check that importing midms_core never pulls in the host."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from midms_core.images import FIT_MODES, fit, flow_to_rgb, resize, round_to_multiple, to_rgb, upsample_mask

REPO = Path(__file__).resolve().parents[1]


def _rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------ to_rgb

def test_to_rgb_gray_is_repeated():
    gray = _rand(2, 5, 7, 1)
    out = to_rgb(gray)
    assert out.shape == (2, 5, 7, 3)
    for c in range(3):
        assert torch.equal(out[..., c], gray[..., 0])


def test_to_rgb_rgb_is_unchanged_and_clamped():
    rgb = _rand(1, 4, 6, 3)
    assert torch.equal(to_rgb(rgb), rgb)
    out = to_rgb(rgb * 3 - 1)
    assert out.min() >= 0 and out.max() <= 1
    assert out.is_contiguous()


def test_to_rgb_gray_alpha_composites_over_white():
    gray = _rand(1, 4, 4, 1)
    alpha = torch.zeros(1, 4, 4, 1)
    alpha[:, :2] = 1.0    # opaque top half
    alpha[:, 2:3] = 0.25  # partly transparent row
    out = to_rgb(torch.cat([gray, alpha], dim=-1))
    assert out.shape == (1, 4, 4, 3)
    expected = gray * alpha + (1 - alpha)
    torch.testing.assert_close(out, expected.expand(-1, -1, -1, 3))
    assert torch.equal(out[:, 3], torch.ones(1, 4, 3))  # fully transparent -> white


def test_to_rgb_rgba_composites_over_white():
    rgb = torch.zeros(1, 3, 3, 3)  # black line art
    alpha = torch.tensor([0.0, 0.5, 1.0]).view(1, 1, 3, 1).expand(1, 3, 3, 1)
    out = to_rgb(torch.cat([rgb, alpha], dim=-1))
    assert out.shape == (1, 3, 3, 3)
    torch.testing.assert_close(out[0, :, 0], torch.ones(3, 3))       # transparent -> white
    torch.testing.assert_close(out[0, :, 1], torch.full((3, 3), 0.5))  # half -> gray
    torch.testing.assert_close(out[0, :, 2], torch.zeros(3, 3))      # opaque -> the colour
    # a coloured pixel at alpha 0.5 over white
    px = torch.tensor([[[[1.0, 0.0, 0.2, 0.5]]]])
    torch.testing.assert_close(to_rgb(px)[0, 0, 0], torch.tensor([1.0, 0.5, 0.6]))


@pytest.mark.parametrize("channels", [5, 8])
def test_to_rgb_bad_channel_count_names_argument(channels):
    with pytest.raises(ValueError, match=r"MyNode.*'condition'.*1-4 channels.*got %d" % channels):
        to_rgb(torch.zeros(1, 4, 4, channels), "MyNode", "condition")
    with pytest.raises(ValueError, match="'image'"):
        to_rgb(torch.zeros(1, 4, 4, channels))


def test_to_rgb_bad_rank_names_argument():
    with pytest.raises(ValueError, match=r"MyNode.*'exemplar'.*\(B, H, W, C\)"):
        to_rgb(torch.zeros(4, 4, 3), "MyNode", "exemplar")


# ------------------------------------------------------------------------------------ fit

@pytest.mark.parametrize("mode", ["crop", "stretch", "pad"])
@pytest.mark.parametrize("src,dst", [((20, 40), (10, 10)), ((30, 12), (16, 24)), ((8, 8), (24, 40))])
def test_fit_output_shape(mode, src, dst):
    image = _rand(2, *src, 3)
    out = fit(image, *dst, mode)
    assert out.shape == (2, *dst, 3)
    assert out.min() >= 0 and out.max() <= 1


def test_fit_own_size_returns_image_unchanged():
    image = _rand(1, 13, 29, 3)
    out = fit(image, 64, 64, "own size")
    assert out.shape == image.shape and torch.equal(out, image)


def test_fit_modes_constant():
    assert FIT_MODES == ("crop", "stretch", "pad", "own size")
    with pytest.raises(ValueError, match=r"MyNode.*'mode'"):
        fit(_rand(1, 8, 8, 3), 8, 8, "zoom", "MyNode")


def test_fit_crop_keeps_centre():
    # 20 x 40 (h x w) to 10 x 10: scale 0.5 -> 10 x 20, the centre 10 columns survive, i.e. the
    # original columns 10..29; only they are 1, so the crop must be all ones.
    image = torch.zeros(1, 20, 40, 3)
    image[:, :, 10:30] = 1.0
    out = fit(image, 10, 10, "crop")
    assert out.shape == (1, 10, 10, 3)
    torch.testing.assert_close(out, torch.ones(1, 10, 10, 3))
    # and a tall image keeps its middle rows
    tall = torch.zeros(1, 40, 20, 3)
    tall[:, 10:30] = 1.0
    torch.testing.assert_close(fit(tall, 10, 10, "crop"), torch.ones(1, 10, 10, 3))


def test_fit_crop_keeps_aspect():
    # a circle-ish blob stays as wide as it is tall after a crop of a wide image
    h, w = 32, 64
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    disc = (((ys - h / 2) ** 2 + (xs - w / 2) ** 2) < 10 ** 2).float()
    image = disc[None, :, :, None].expand(1, h, w, 3)
    out = fit(image, 16, 16, "crop")[0, :, :, 0] > 0.5
    rows, cols = out.any(dim=1).sum(), out.any(dim=0).sum()
    assert abs(int(rows) - int(cols)) <= 1


def test_fit_stretch_scales_axes_independently():
    image = torch.zeros(1, 20, 40, 3)
    image[:, :, :20] = 1.0  # left half white
    out = fit(image, 10, 10, "stretch")
    torch.testing.assert_close(out[:, :, :5], torch.ones(1, 10, 5, 3))
    torch.testing.assert_close(out[:, :, 5:], torch.zeros(1, 10, 5, 3))


def test_fit_pad_borders_white_and_aspect_preserved():
    image = torch.zeros(2, 20, 40, 3)  # black, 1:2
    out = fit(image, 10, 10, "pad")
    # scale 0.25 -> 5 x 10 placed at rows 2..6, full width; the rest is white
    content = out[0, :, :, 0] < 0.5
    rows = torch.nonzero(content.any(dim=1)).flatten()
    cols = torch.nonzero(content.any(dim=0)).flatten()
    assert rows.tolist() == [2, 3, 4, 5, 6]
    assert cols.tolist() == list(range(10))
    assert (cols.numel() / rows.numel()) == pytest.approx(40 / 20)
    torch.testing.assert_close(out[:, :2], torch.ones(2, 2, 10, 3))
    torch.testing.assert_close(out[:, 7:], torch.ones(2, 3, 10, 3))
    torch.testing.assert_close(out[:, 2:7], torch.zeros(2, 5, 10, 3))
    # a tall image gets white side borders
    tall = fit(torch.zeros(1, 40, 20, 3), 10, 10, "pad")
    torch.testing.assert_close(tall[:, :, :2], torch.ones(1, 10, 2, 3))
    torch.testing.assert_close(tall[:, :, 7:], torch.ones(1, 10, 3, 3))


def test_fit_pad_fill_zero_for_masks():
    """A mask of ones (1:2) padded with fill 0: the border is 0 (not allowed), the content 1."""
    mask = torch.ones(2, 20, 40, 1)
    out = fit(mask, 10, 10, "pad", fill=0.0)
    want = torch.zeros(2, 10, 10, 1)
    want[:, 2:7] = 1.0  # the 5 x 10 content at rows 2..6, as for images (test above)
    torch.testing.assert_close(out, want)
    # crop and stretch have no border: fill changes nothing
    for mode in ("crop", "stretch"):
        torch.testing.assert_close(fit(mask, 10, 10, mode, fill=0.0), fit(mask, 10, 10, mode))


def test_fit_pad_keeps_everything():
    image = torch.zeros(1, 16, 32, 3)
    image[:, :, 0] = 1.0  # marks on the extreme columns survive a pad (not a crop)
    image[:, :, -1] = 1.0
    padded = fit(1 - image, 8, 8, "pad")  # 1 - image: the marks are black on white
    assert padded[0, :, 0, 0].min() < 1.0 and padded[0, :, -1, 0].min() < 1.0


def test_resize_growing_stays_in_range():
    image = _rand(1, 5, 7, 3)
    out = resize(image, 23, 31)
    assert out.shape == (1, 23, 31, 3)
    assert out.min() >= 0 and out.max() <= 1
    assert resize(image, 5, 7) is image


# ------------------------------------------------------------------------------------ round_to_multiple

@pytest.mark.parametrize("size,multiple,expected", [
    (64, 8, 64), (63, 8, 64), (67, 8, 64), (69, 8, 72), (3, 8, 8), (0, 8, 8), (1, 64, 64),
    (100, 64, 128), (90, 64, 64), (512, 64, 512),
])
def test_round_to_multiple(size, multiple, expected):
    assert round_to_multiple(size, multiple) == expected


def test_round_to_multiple_properties():
    for multiple in (1, 8, 14, 64):
        for size in range(0, 300):
            r = round_to_multiple(size, multiple)
            assert r % multiple == 0 and r >= multiple
            if size >= multiple:
                assert abs(r - size) <= multiple / 2


# ------------------------------------------------------------------------------------ flow_to_rgb

def _identity_flow(b, h, w):
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    return torch.stack([xs, ys])[None].expand(b, 2, h, w).clone()


def test_flow_to_rgb_identity_is_white():
    out = flow_to_rgb(_identity_flow(2, 6, 9), (6, 9))
    assert out.shape == (2, 6, 9, 3)
    torch.testing.assert_close(out, torch.ones(2, 6, 9, 3))


def test_flow_to_rgb_identity_on_another_grid_is_white():
    # condition grid 4 x 4 matched into an 8 x 8 exemplar grid at the same relative positions
    flow = _identity_flow(1, 4, 4) * 2
    torch.testing.assert_close(flow_to_rgb(flow, (8, 8)), torch.ones(1, 4, 4, 3))


def test_flow_to_rgb_shift_gives_one_hue():
    h, w = 8, 8
    shift = 0.25 * max(h, w)  # full brightness
    right = _identity_flow(1, h, w)
    right[:, 0] += shift
    out = flow_to_rgb(right, (h, w))
    assert out.shape == (1, h, w, 3)
    colour = out[0, 0, 0]
    torch.testing.assert_close(out, colour.expand(1, h, w, 3))
    # angle 0: the first channel's cosine peaks
    torch.testing.assert_close(colour, torch.tensor([1.0, 0.25, 0.25]))
    assert out.min() >= 0 and out.max() <= 1
    # half the shift: same hue direction, halfway to white
    half = _identity_flow(1, h, w)
    half[:, 0] += shift / 2
    torch.testing.assert_close(flow_to_rgb(half, (h, w))[0, 3, 3], (1 + colour) / 2)
    # the opposite direction is a different colour
    left = _identity_flow(1, h, w)
    left[:, 0] -= shift
    assert not torch.allclose(flow_to_rgb(left, (h, w))[0, 0, 0], colour, atol=0.1)
    # longer than a quarter of the grid saturates
    far = _identity_flow(1, h, w)
    far[:, 0] += 3 * shift
    torch.testing.assert_close(flow_to_rgb(far, (h, w)), out)


# ------------------------------------------------------------------------------------ upsample_mask

def test_upsample_mask_nearest():
    mask = torch.tensor([[[[0.0, 1.0], [1.0, 0.5]]]]).expand(3, 1, 2, 2)
    out = upsample_mask(mask, 4, 6)
    assert out.shape == (3, 4, 6)
    expected = torch.tensor([[0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 1],
                             [1, 1, 1, 0.5, 0.5, 0.5], [1, 1, 1, 0.5, 0.5, 0.5]])
    for b in range(3):
        torch.testing.assert_close(out[b], expected)
    assert upsample_mask(mask.half(), 4, 4).dtype == torch.float32


# ------------------------------------------------------------------------------------ no host imports

HOST_MODULES = ("comfy", "folder_paths", "nodes", "execution", "server", "latent_preview", "comfy_extras")


def test_import_midms_core_does_not_import_comfyui():
    code = (
        "import importlib, json, pkgutil, sys\n"
        "import midms_core\n"
        "for m in pkgutil.iter_modules(midms_core.__path__):\n"
        "    importlib.import_module('midms_core.' + m.name)\n"
        f"host = {HOST_MODULES!r}\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in host)\n"
        "print(json.dumps({'bad': bad, 'file': midms_core.__file__}))\n"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.setdefault("OMP_NUM_THREADS", "1")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["bad"] == [], f"importing midms_core imported host modules: {result['bad']}"
    assert Path(result["file"]).resolve().parent == (REPO / "midms_core").resolve()


def test_blank_images_finds_flat_images_only():
    from midms_core.images import BLANK_RANGE, blank_images

    flat = torch.full((1, 16, 16, 3), 0.3)
    faint = flat.clone()
    faint[0, 8, 8, 1] += 2 * BLANK_RANGE  # one pixel of one channel is enough structure
    nearly = flat.clone()
    nearly[0, 8, 8, 1] += 0.5 * BLANK_RANGE  # below the tolerance: still blank
    batch = torch.cat([faint, flat, nearly, torch.zeros(1, 16, 16, 3), torch.ones(1, 16, 16, 3)])
    assert blank_images(batch) == [1, 2, 3, 4]
    assert blank_images(faint) == []
