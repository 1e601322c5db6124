"""Training pairs from a folder of photos (midms_core.training.data)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness.metrics import latent_flow_to_pixels
from midms_core.training.data import DataConfig, TrainingPairs, list_images, read_image
from midms_core.training.synthetic import sample_pixels

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    import skimage.data
    from PIL import Image

    root = tmp_path_factory.mktemp("photos")
    (root / "sub").mkdir()
    for i, name in enumerate(PHOTOS):
        folder = root / "sub" if i % 2 else root
        Image.fromarray(np.asarray(getattr(skimage.data, name)())).save(folder / f"{name}.{'png' if i < 3 else 'jpg'}")
    (root / "notes.txt").write_text("not an image")
    return root


def test_list_images_is_recursive_and_sorted(photos, tmp_path):
    found = list_images(photos)
    assert [p.stem for p in found] == ["astronaut", "chelsea", "coffee", "rocket"]
    with pytest.raises(ValueError, match="no images in"):
        list_images(tmp_path)
    with pytest.raises(ValueError, match="is not a folder"):
        list_images(tmp_path / "missing")


def test_read_image_composites_alpha_over_white_and_names_bad_files(tmp_path):
    from PIL import Image

    rgba = np.zeros((4, 5, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[:, :2, 3] = 255  # left two columns opaque red, the rest transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    img = read_image(tmp_path / "a.png")
    assert img.shape == (3, 4, 5)
    assert torch.allclose(img[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(img[:, 0, 4], torch.ones(3))
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot read .*bad.png"):
        read_image(tmp_path / "bad.png")


def test_samples_are_deterministic_per_seed_epoch_and_index(photos):
    ds = TrainingPairs(photos, DataConfig(size=64, self_exemplar=0.5, seed=1))
    a, b = ds[2], ds[2]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert a["condition_image"].shape == (3, 64, 64) and a["truth"].shape == (2, 8, 8) and a["valid"].shape == (8, 8)
    ds.set_epoch(1)
    c = ds[2]
    assert not torch.equal(a["truth_image"], c["truth_image"])
    other = TrainingPairs(photos, DataConfig(size=64, self_exemplar=0.5, seed=2))
    assert not torch.equal(other[2]["truth_image"], a["truth_image"])


@pytest.mark.parametrize("flip", [0.0, 1.0])
def test_self_exemplar_truth_carries_the_exemplar_onto_the_ground_truth(photos, flip):
    """With the colour change off, the exemplar sampled at the known correspondence (the latent
    truth upsampled to pixels) reproduces the ground truth where the truth is valid; the
    identity (no matching) does not."""
    ds = TrainingPairs(photos, DataConfig(size=128, self_exemplar=1.0, flip=flip, colour=False, seed=4))
    for index in range(len(ds)):
        s = ds[index]
        assert s["self"] == 1 and s["valid"].mean() > 0.5
        flow_px = latent_flow_to_pixels(s["truth"][None], (128, 128), 8)
        warped = sample_pixels(s["exemplar_image"][None], flow_px)
        valid_px = F.interpolate(s["valid"][None, None], scale_factor=8, mode="nearest")[0, 0] > 0.5
        err = (warped[0] - s["truth_image"]).abs().mean(0)[valid_px].mean()
        identity = (s["exemplar_image"] - s["truth_image"]).abs().mean(0)[valid_px].mean()
        assert err < 0.06, (index, float(err))
        assert identity > 2 * err, (index, float(identity), float(err))


def test_other_photo_exemplars_have_no_truth(photos):
    ds = TrainingPairs(photos, DataConfig(size=64, self_exemplar=0.0, seed=5))
    for index in range(len(ds)):
        s = ds[index]
        assert s["self"] == 0 and s["valid"].sum() == 0
        assert not torch.equal(s["exemplar_image"], s["truth_image"])


def test_mixed_conditions_draw_both_kinds(photos):
    ds = TrainingPairs(photos, DataConfig(size=64, condition="mixed", seed=0))
    binary = []
    for epoch in range(6):  # 24 draws: both kinds occur unless the coin is broken
        ds.set_epoch(epoch)
        binary += [set(torch.unique(ds[i]["condition_image"]).tolist()) <= {0.0, 1.0} for i in range(len(ds))]
    assert 4 <= sum(binary) <= 20, binary  # Canny edges (0 / 1) and label colours both occur


@pytest.mark.parametrize("kind", ["canny", "labels"])
def test_conditions_made_on_the_fly(photos, kind):
    s = TrainingPairs(photos, DataConfig(size=64, condition=kind, seed=0))[0]
    cond = s["condition_image"]
    assert cond.shape == (3, 64, 64) and 0 <= float(cond.min()) and float(cond.max()) <= 1
    if kind == "canny":
        assert set(torch.unique(cond).tolist()) <= {0.0, 1.0} and cond.mean() > 0.01


def test_condition_folder_maps_follow_the_crop_and_the_deformation(photos, tmp_path):
    """A parallel folder whose maps are the photos themselves: the condition must equal the
    ground truth (nearest vs bilinear sampling aside), for plain and deformed samples."""
    from PIL import Image

    for p in list_images(photos):
        target = tmp_path / p.relative_to(photos).parent / (p.stem + ".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.open(p).convert("RGB").save(target)
    ds = TrainingPairs(photos, DataConfig(size=64, condition="folder", condition_dir=str(tmp_path), self_exemplar=0.5,
                                          seed=6))
    for index in range(len(ds)):
        s = ds[index]
        # nearest (maps) vs antialiased (photos) scaling differ pixel by pixel: compare 8 x 8 means
        cond, truth = F.avg_pool2d(s["condition_image"][None], 8), F.avg_pool2d(s["truth_image"][None], 8)
        diff = (cond - truth).abs().mean()
        shifted = (cond - truth.roll(1, dims=-1)).abs().mean()  # one cell off: clearly worse
        assert diff < 0.03 and shifted > 1.5 * diff, (index, float(diff), float(shifted))
    (tmp_path / "sub" / "coffee.png").unlink()
    with pytest.raises(ValueError, match="no condition map for .*coffee"):
        TrainingPairs(photos, DataConfig(size=64, condition="folder", condition_dir=str(tmp_path)))


def test_config_errors():
    with pytest.raises(ValueError, match="multiple of 'factor'"):
        DataConfig(size=100)
    with pytest.raises(ValueError, match="condition_dir"):
        DataConfig(condition="folder")
    with pytest.raises(ValueError, match="probability"):
        DataConfig(self_exemplar=1.5)
    assert math.isclose(DataConfig().deform * 256, 20.48)


def test_condition_maps_of_dotted_names_are_their_own(tmp_path):
    """frame.0001.png and frame.0002.png each find their own map (not 'frame.png')."""
    from PIL import Image

    photos, maps = tmp_path / "photos", tmp_path / "maps"
    photos.mkdir()
    maps.mkdir()
    for i, colour in ((1, (255, 0, 0)), (2, (0, 0, 255))):
        Image.new("RGB", (80, 80), (128, 128, 128)).save(photos / f"frame.000{i}.png")
        Image.new("RGB", (80, 80), colour).save(maps / f"frame.000{i}.jpg")
    ds = TrainingPairs(photos, DataConfig(size=64, condition="folder", condition_dir=str(maps), self_exemplar=0.0))
    assert [p.name for p in ds.condition_files] == ["frame.0001.jpg", "frame.0002.jpg"]
    assert ds[0]["condition_image"][0].mean() > 0.9 and ds[1]["condition_image"][2].mean() > 0.9
