"""Real photos for tests, benchmarks and the demo, from scikit-image's bundled data."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from midms_core.validation import check_int


def load_photo(name: str, size: int) -> Tensor:
    """Centre square crop of ``skimage.data.<name>()`` -> (1, 3, size, size) float32 in [0, 1].

    Grayscale photos are repeated to RGB, alpha is dropped; resizing is area averaging.
    """
    import numpy as np
    import skimage.data

    size = check_int("load_photo", "size", size, 1)
    loader = getattr(skimage.data, name, None) if isinstance(name, str) and not name.startswith("_") else None
    if not callable(loader):
        raise ValueError(f"load_photo: 'name' must name a skimage.data image (astronaut, coffee, chelsea, rocket, ...), got {name!r}")
    img = np.asarray(loader())
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    if img.ndim != 3 or img.shape[-1] < 3 or img.dtype != np.uint8:
        raise ValueError(f"load_photo: 'name' {name!r} is not an 8-bit photo (shape {img.shape}, {img.dtype})")
    img = img[..., :3]
    h, w = img.shape[:2]
    s = min(h, w)
    img = np.ascontiguousarray(img[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s])
    t = torch.from_numpy(img).permute(2, 0, 1).float().unsqueeze(0) / 255
    return F.interpolate(t, size=(size, size), mode="area")
