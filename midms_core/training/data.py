"""Training pairs for the correspondence networks, made from a folder of photos.

Each sample is one photo z (the ground truth the condition is drawn from), its condition x and
an exemplar y, as the official trainer draws them (``midms-reference.md``, "Training"):

* with probability ``self_exemplar`` (official 0.3) the exemplar is the photo itself. Unlike the
  official code, where that copy is pixel-identical (the identity match is then the answer), it
  is deformed here: the ground truth becomes the photo under a seeded thin-plate-spline
  deformation d, the exemplar the photo mirrored (with probability ``flip``) and colour-shifted.
  The true correspondence is then known: condition pixel p shows photo point p + d(p), which
  the exemplar shows at that point (mirrored when flipped); ``truth`` / ``valid`` carry it on
  the latent grid (:func:`midms_core.training.synthetic.pixel_truth_to_latent`);
* otherwise the exemplar is another photo of the folder (no known correspondence: valid = 0).

Conditions: "canny" (:func:`midms_core.training.conditions.canny_condition`: kornia's Canny of the
luminance, thresholds 0.1 / 0.2, Gaussian sigma 1, white lines on black) or "labels"
(:func:`midms_core.training.conditions.quantised_condition`: blurred photo, 3 levels per channel,
majority filter, arbitrary label colours), both made from the ground truth on the fly, or
"mixed" (either, half and half, seeded per sample); or
"folder": a parallel folder of condition maps the user made (pose, segmentation), the same
relative path with any image suffix, cropped, flipped and deformed with the photo (nearest).

Photos: every image under the folder (recursively; png, jpg, jpeg, webp, bmp, tif, tiff),
RGB (alpha over white), the shorter side scaled to 1.12 x ``size`` (the official 286 -> 256),
a seeded random square crop of ``size``. Everything is deterministic given (seed, epoch,
index): a sample does not depend on which process or worker reads it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..correspondence import coordinate_grid
from .conditions import canny_condition, quantised_condition
from .synthetic import colour_shift, deform, pixel_truth_to_latent, tps_displacement

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
CONDITIONS = ("canny", "labels", "mixed", "folder")
SCALE_BEFORE_CROP = 286 / 256  # the official resize before the random crop

__all__ = ["CONDITIONS", "IMAGE_SUFFIXES", "DataConfig", "TrainingPairs", "list_images", "read_image"]


@dataclass(frozen=True)
class DataConfig:
    """size: crop side in px (a multiple of ``factor``); factor: pixels per latent cell;
    condition: one of CONDITIONS; condition_dir: the parallel folder for "folder";
    self_exemplar: share of samples whose exemplar is the deformed photo itself; deform: mean
    TPS displacement as a share of ``size`` (0.08: 20 px at 256); flip: chance that a
    self-exemplar is mirrored; colour: colour-shift self-exemplars; seed."""

    size: int = 256
    factor: int = 8
    condition: str = "canny"
    condition_dir: Optional[str] = None
    self_exemplar: float = 0.3
    deform: float = 0.08
    flip: float = 0.5
    colour: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        where = "DataConfig"
        for name in ("size", "factor"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{where}: '{name}' must be an integer >= 1, got {value!r}")
        if self.size % self.factor or self.size // self.factor < 4:
            raise ValueError(f"{where}: 'size' {self.size} must be a multiple of 'factor' {self.factor} "
                             "giving a latent grid of at least 4 x 4")
        if self.condition not in CONDITIONS:
            raise ValueError(f"{where}: 'condition' must be one of {list(CONDITIONS)}, got {self.condition!r}")
        if (self.condition == "folder") != (self.condition_dir is not None):
            raise ValueError(f"{where}: 'condition_dir' is needed with condition 'folder' and only then")
        for name in ("self_exemplar", "flip"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ValueError(f"{where}: '{name}' must be a probability in [0, 1], got {value!r}")
        if isinstance(self.deform, bool) or not isinstance(self.deform, (int, float)) or not 0 <= self.deform < 0.5:
            raise ValueError(f"{where}: 'deform' must be a share of the size in [0, 0.5), got {self.deform!r}")


def list_images(folder: os.PathLike | str, where: str = "list_images") -> list[Path]:
    """Every image file under ``folder`` (recursively, sorted, by suffix, case-insensitive)."""
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"{where}: '{folder}' is not a folder")
    found = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise ValueError(f"{where}: no images in '{folder}' (looked for {', '.join(IMAGE_SUFFIXES)}, recursively)")
    return found


def read_image(path: os.PathLike | str, where: str = "read_image") -> Tensor:
    """An image file -> (3, H, W) float32 in [0, 1]: RGB, alpha composited over white."""
    try:
        from PIL import Image, ImageOps
    except ImportError:
        raise ImportError(f"{where}: reading images needs Pillow (pip install pillow)") from None
    import numpy as np

    try:
        with Image.open(path) as opened:
            opened.load()
            im = ImageOps.exif_transpose(opened)  # the camera's orientation
            if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
                rgba = im.convert("RGBA")
                white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                im = Image.alpha_composite(white, rgba)
            rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError) as err:
        raise ValueError(f"{where}: cannot read '{path}' as an image ({err})") from None
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255.0


def _uniform(g: torch.Generator) -> float:
    return float(torch.rand((), generator=g, dtype=torch.float64))


def _crop_box(shape: tuple[int, int], size: int, g: torch.Generator) -> tuple[float, int, int]:
    """(scale, top, left) of a random ``size`` square after scaling the shorter side to 1.12 x size."""
    h, w = shape
    scale = math.ceil(size * SCALE_BEFORE_CROP) / min(h, w)
    sh, sw = max(size, round(h * scale)), max(size, round(w * scale))
    top = int(_uniform(g) * (sh - size + 1)) if sh > size else 0
    left = int(_uniform(g) * (sw - size + 1)) if sw > size else 0
    return scale, min(top, sh - size), min(left, sw - size)


def _crop(image: Tensor, box: tuple[float, int, int], size: int, mode: str = "area") -> Tensor:
    """(C, H, W) -> (C, size, size): scale (antialiased for photos, nearest for maps), crop."""
    scale, top, left = box
    h, w = image.shape[-2:]
    sh, sw = max(size, round(h * scale)), max(size, round(w * scale))
    if mode == "nearest":
        scaled = F.interpolate(image[None], size=(sh, sw), mode="nearest")[0]
    else:
        scaled = F.interpolate(image[None], size=(sh, sw), mode="bilinear", antialias=True, align_corners=False)[0]
    return scaled[:, top : top + size, left : left + size].clamp(0, 1)


class TrainingPairs(torch.utils.data.Dataset):
    """The samples of a folder: ``len`` = number of photos; item i (for the current epoch, see
    :meth:`set_epoch`) is a dict of float32 tensors:

    truth_image (3, S, S): the ground-truth photo z (deformed when the exemplar is itself);
    condition_image (3, S, S): its condition x, in [0, 1];
    exemplar_image (3, S, S): the exemplar y;
    truth (2, h, w): exemplar latent cell (x, y) matched by each condition cell (zeros where
    unknown); valid (h, w): 1 where ``truth`` holds (self-exemplars, inside the photo);
    self (): 1.0 for a self-exemplar; index (): the item's index (int64).
    """

    def __init__(self, folder: os.PathLike | str, config: DataConfig = DataConfig(),
                 files: Optional[Sequence[Path]] = None) -> None:
        if not isinstance(config, DataConfig):
            raise ValueError(f"TrainingPairs: 'config' must be a DataConfig, got {type(config).__name__}")
        self.config = config
        self.root = Path(folder)
        self.files = list(files) if files is not None else list_images(folder, "TrainingPairs")
        if len(self.files) < 2 and config.self_exemplar < 1:
            raise ValueError(f"TrainingPairs: '{folder}' holds {len(self.files)} image; exemplars drawn from other "
                             "photos need at least 2 (or set self_exemplar to 1)")
        self.condition_files: Optional[list[Path]] = None
        if config.condition == "folder":
            self.condition_files = [self._condition_file(p) for p in self.files]
        self.epoch = 0

    def _condition_file(self, photo: Path) -> Path:
        try:
            relative = photo.relative_to(self.root)
        except ValueError:
            raise ValueError(f"TrainingPairs: '{photo}' is not under '{self.root}'; condition maps are found by the "
                             "photo's path relative to the images folder") from None
        base = Path(self.config.condition_dir) / relative.parent / relative.stem  # "frame.0001.jpg" -> "frame.0001"
        for suffix in IMAGE_SUFFIXES:
            for candidate in (base.with_name(base.name + suffix), base.with_name(base.name + suffix.upper())):
                if candidate.is_file():
                    return candidate
        raise ValueError(f"TrainingPairs: no condition map for '{photo}' in '{self.config.condition_dir}' (expected "
                         f"'{relative}' with an image suffix, the same relative path as the photo)")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.files)

    def _generator(self, index: int) -> torch.Generator:
        mixed = (self.config.seed * 1_000_003 + self.epoch * 10_007 + index) % (2**63)
        return torch.Generator().manual_seed(mixed)

    def _photo(self, index: int, g: torch.Generator, with_condition: bool = True) -> tuple[Tensor, Optional[Tensor]]:
        """(photo (3, S, S), condition map (3, S, S) from the folder or None), one crop."""
        size = self.config.size
        photo = read_image(self.files[index], "TrainingPairs")
        box = _crop_box(tuple(photo.shape[-2:]), size, g)
        cond = None
        if self.condition_files is not None and with_condition:
            cond_full = read_image(self.condition_files[index], "TrainingPairs")
            if cond_full.shape[-2:] != photo.shape[-2:]:
                raise ValueError(f"TrainingPairs: condition map '{self.condition_files[index]}' is "
                                 f"{tuple(cond_full.shape[-2:])} but its photo is {tuple(photo.shape[-2:])} (H, W)")
            cond = _crop(cond_full, box, size, "nearest")
        return _crop(photo, box, size), cond

    def __getitem__(self, index: int) -> dict:
        cfg = self.config
        size, factor = cfg.size, cfg.factor
        g = self._generator(index)
        photo, cond_map = self._photo(index, g)
        is_self = _uniform(g) < cfg.self_exemplar
        h = w = size // factor
        truth = torch.zeros(2, h, w)
        valid = torch.zeros(h, w)
        if is_self:
            seed = int(torch.randint(0, 2**31 - 1, (), generator=g))
            flip = _uniform(g) < cfg.flip
            mean_px = cfg.deform * size
            if mean_px > 0:
                displacement = tps_displacement(size, seed, mean_px)
            else:
                displacement = torch.zeros(1, 2, size, size)
            truth_image, inside = deform(photo[None], displacement)
            if cond_map is not None:
                cond_map = _deform_nearest(cond_map, displacement)
            source = coordinate_grid(1, size, size) + displacement  # photo point shown at each pixel
            exemplar = photo[None].flip(-1) if flip else photo[None]
            if flip:
                source = torch.cat([(size - 1) - source[:, :1], source[:, 1:]], dim=1)
            if cfg.colour:
                exemplar = colour_shift(exemplar, seed=seed + 1)
            truth_latent, valid_latent = pixel_truth_to_latent(source, inside, factor)
            truth, valid = truth_latent[0], valid_latent[0].float()
            truth_image, exemplar = truth_image[0], exemplar[0]
        else:
            other = int(torch.randint(0, len(self.files) - 1, (), generator=g))
            other += other >= index  # any photo but this one
            truth_image = photo
            exemplar, _ = self._photo(other, g, with_condition=False)
        kind = cfg.condition
        if kind == "mixed":
            kind = "canny" if _uniform(g) < 0.5 else "labels"
        if kind == "canny":
            condition = canny_condition(truth_image[None])[0]
        elif kind == "labels":
            condition = quantised_condition(truth_image[None])[0]
        else:
            condition = cond_map
        return {"truth_image": truth_image.float(), "condition_image": condition.float(),
                "exemplar_image": exemplar.float(), "truth": truth.float(), "valid": valid.float(),
                "self": torch.tensor(float(is_self)), "index": torch.tensor(index)}


def _deform_nearest(image: Tensor, displacement: Tensor) -> Tensor:
    """deformed(p) = image(p + d(p)) with nearest sampling (label maps keep their colours):
    (C, S, S), (1, 2, S, S) -> (C, S, S); outside the image: the border."""
    size = image.shape[-1]
    source = coordinate_grid(1, *image.shape[-2:]) + displacement
    grid = torch.stack([source[:, 0] / (size - 1) * 2 - 1, source[:, 1] / (image.shape[-2] - 1) * 2 - 1], dim=-1)
    return F.grid_sample(image[None], grid, mode="nearest", padding_mode="border", align_corners=True)[0]
