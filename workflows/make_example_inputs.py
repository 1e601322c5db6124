"""Regenerate the example inputs of the MIDMs workflows (scikit-image + Pillow, no downloads).

    python workflows/make_example_inputs.py            # writes workflows/inputs/*.png, thumbnails

* ``inputs/midms_exemplar.png``: the exemplar, skimage's astronaut photo (centre square crop).
* ``inputs/midms_condition_edges.png``: the condition, white Canny edges on black of the SAME
  photo in a different pose and crop (mirrored, rotated, zoomed, shifted and smoothly
  deformed), so the exemplar has to be matched across domains (edges vs photo) AND across a
  geometric change.
* ``<workflow>.jpg`` next to each ``<workflow>.json``: the thumbnail the ComfyUI template browser
  shows (condition | exemplar).

Copy the two PNGs into ComfyUI's ``input/`` folder (or pick them with the Load Image nodes'
upload button) before queueing a workflow.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
CONDITION_NAME = "midms_condition_edges.png"
EXEMPLAR_NAME = "midms_exemplar.png"
# several exemplars and label maps (MIDMs Exemplar Set Encode workflows)
SECOND_EXEMPLAR_NAME = "midms_exemplar_2.png"
CONDITION_LABELS_NAME = "midms_condition_labels.png"
EXEMPLAR_LABELS_NAME = "midms_exemplar_labels.png"


def exemplar_photo(size: int = 512) -> np.ndarray:
    """skimage.data.astronaut(), centre square crop, size x size, float RGB in [0, 1]."""
    import skimage.data
    import skimage.transform

    img = skimage.data.astronaut()[..., :3]
    h, w = img.shape[:2]
    s = min(h, w)
    img = img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    return skimage.transform.resize(img, (size, size), anti_aliasing=True)


def reposed(photo: np.ndarray, seed: int = 0) -> np.ndarray:
    """The photo (H x W x 3) re-posed: mirrored, rotated by 8 degrees, zoomed by 1.15, shifted,
    and smoothly deformed by ~3 % of the size (H x W x 3, float)."""
    import scipy.ndimage as ndi

    size = photo.shape[0]
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    c = (size - 1) / 2
    angle, zoom = np.deg2rad(8.0), 1.15
    shift = np.array([0.04, -0.03]) * size
    # output pixel (x, y) reads the mirrored photo at a rotated/zoomed/shifted position
    u, v = (xx - c - shift[0]) / zoom, (yy - c - shift[1]) / zoom
    src_x = np.cos(angle) * u - np.sin(angle) * v + c
    src_y = np.sin(angle) * u + np.cos(angle) * v + c
    coarse = rng.standard_normal((2, 4, 4))
    bump = np.stack([ndi.zoom(g, size / 4, order=3)[:size, :size] for g in coarse])
    bump *= 0.03 * size / np.abs(bump).mean()
    src_x, src_y = src_x + bump[0], src_y + bump[1]
    mirrored = photo[:, ::-1]
    return np.stack([ndi.map_coordinates(mirrored[..., k], [src_y, src_x], order=1, mode="reflect")
                     for k in range(3)], axis=-1)


def condition_edges(photo: np.ndarray, seed: int = 0) -> np.ndarray:
    """Canny edges (white on black, float in {0, 1}, H x W) of the photo re-posed (:func:`reposed`)."""
    import skimage.color
    import skimage.feature

    posed = skimage.color.rgb2gray(np.clip(reposed(photo, seed), 0, 1))
    edges = skimage.feature.canny(posed, sigma=2.0 * photo.shape[0] / 512)
    return edges.astype(np.float64)


def second_exemplar(size: int = 512) -> np.ndarray:
    """skimage.data.rocket() (a launch pad under a sky), centre square crop: the background the
    two-exemplar workflow takes for the right half of the picture."""
    import skimage.data
    import skimage.transform

    img = skimage.data.rocket()[..., :3]
    h, w = img.shape[:2]
    s = min(h, w)
    img = img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    return skimage.transform.resize(img, (size, size), anti_aliasing=True)


def label_maps(size: int = 512, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(condition label map, exemplar label map), H x W x 3 floats: the benchmark's quantiser
    (midms_core.training.conditions.quantised_condition: blurred colours in 3 levels per channel, painted
    with its palette) of the re-posed photo and of the exemplar photo. Same quantiser, same
    palette: labels compare by nearest condition colour."""
    import torch

    from midms_core.training.conditions import quantised_condition

    photo = exemplar_photo(size)
    out = []
    for image in (np.clip(reposed(photo, seed), 0, 1), photo):
        t = torch.from_numpy(np.ascontiguousarray(image)).float().permute(2, 0, 1)[None]
        out.append(quantised_condition(t)[0].permute(1, 2, 0).numpy())
    return out[0], out[1]


def make_inputs(size: int = 512, seed: int = 0) -> tuple[Image.Image, Image.Image]:
    """(condition, exemplar) as RGB PIL images of size x size."""
    photo = exemplar_photo(size)
    edges = condition_edges(photo, seed)
    to_u8 = lambda a: (np.clip(a, 0, 1) * 255).round().astype(np.uint8)
    condition = Image.fromarray(to_u8(np.repeat(edges[..., None], 3, axis=-1)), "RGB")
    exemplar = Image.fromarray(to_u8(photo), "RGB")
    return condition, exemplar


def thumbnail(condition: Image.Image, exemplar: Image.Image, height: int = 192) -> Image.Image:
    """condition | exemplar side by side, for the template browser."""
    pad = 8
    a, b = (im.resize((height, height), Image.LANCZOS) for im in (condition, exemplar))
    sheet = Image.new("RGB", (2 * height + 3 * pad, height + 2 * pad), (40, 40, 40))
    sheet.paste(a, (pad, pad))
    sheet.paste(b, (2 * pad + height, pad))
    return sheet


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="side of the square images (px)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the smooth deformation")
    parser.add_argument("--out", type=Path, default=HERE / "inputs", help="folder for the two PNGs")
    parser.add_argument("--no-thumbnails", action="store_true", help="skip workflows/<name>.jpg")
    args = parser.parse_args(argv)
    condition, exemplar = make_inputs(args.size, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    condition.save(args.out / CONDITION_NAME, optimize=True)
    exemplar.save(args.out / EXEMPLAR_NAME, optimize=True)
    print(f"wrote {args.out / CONDITION_NAME} and {args.out / EXEMPLAR_NAME}")
    to_u8 = lambda a: Image.fromarray((np.clip(a, 0, 1) * 255).round().astype(np.uint8), "RGB")
    to_u8(second_exemplar(args.size)).save(args.out / SECOND_EXEMPLAR_NAME, optimize=True)
    cond_labels, exem_labels = label_maps(args.size, args.seed)
    to_u8(cond_labels).save(args.out / CONDITION_LABELS_NAME, optimize=True)
    to_u8(exem_labels).save(args.out / EXEMPLAR_LABELS_NAME, optimize=True)
    print(f"wrote {SECOND_EXEMPLAR_NAME}, {CONDITION_LABELS_NAME}, {EXEMPLAR_LABELS_NAME}")
    if not args.no_thumbnails:
        thumb = thumbnail(condition, exemplar)
        for workflow in sorted(HERE.glob("*.json")):
            thumb.save(workflow.with_suffix(".jpg"), quality=85, optimize=True)
            print(f"wrote {workflow.with_suffix('.jpg')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
