"""Tests for vitprune.data and vitprune.digits: folders, timm-exact eval preprocessing, batching,
subsets, the bundled digits and their training-data guard."""
import dataclasses
import glob
import io
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import unicodedata
import warnings

import numpy as np
import pytest
from PIL import Image

from vitprune import data
from vitprune import digits
from vitprune.config import Preprocessing

PLAIN = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def _png(path, array):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(np.asarray(array, np.uint8)).save(path)


def _gray(h, w, value=0):
  return np.full((h, w), value, np.uint8)


# ----------------------------------------------------------------------------------------------
# Preprocessing.
# ----------------------------------------------------------------------------------------------


def test_constant_image_gives_exact_normalised_constant():
  colour = (10, 128, 250)
  img = Image.new("RGB", (37, 53), colour)  # PIL size is (w, h)
  prep = Preprocessing(input_size=16, crop_pct=0.875)  # ImageNet mean/std, bicubic
  out = data.preprocess_image(img, prep)
  assert out.shape == (16, 16, 3) and out.dtype == np.float32
  expect = ((np.float32(colour) / np.float32(255) - np.float32(prep.mean))
            / np.float32(prep.std))
  np.testing.assert_array_equal(out, np.broadcast_to(expect, out.shape))


def test_two_colour_nearest_upscale_exact_positions():
  arr = _gray(4, 4)
  arr[:, 2:] = 255  # left half black, right half white
  prep = Preprocessing(input_size=8, crop_pct=1.0, interpolation="nearest", **PLAIN)
  out = data.preprocess_image(Image.fromarray(arr), prep)
  assert out.shape == (8, 8, 3)
  np.testing.assert_array_equal(out[:, :4], 0.0)
  np.testing.assert_array_equal(out[:, 4:], 1.0)


@pytest.mark.parametrize("width, left", [(10, 2), (11, 2), (13, 4), (7, 0)])
def test_center_crop_positions_use_round_half_even(width, left):
  # Height 6 == input_size with crop_pct 1.0: no resize, only torchvision's CenterCrop.
  # (11 - 6) / 2 = 2.5 -> 2 and (7 - 6) / 2 = 0.5 -> 0 (Python round), (13 - 6) / 2 = 3.5 -> 4.
  arr = np.tile(np.arange(width, dtype=np.uint8) * 20, (6, 1))
  prep = Preprocessing(input_size=6, crop_pct=1.0, interpolation="nearest", **PLAIN)
  out = data.preprocess_image(Image.fromarray(arr), prep)
  expect = np.arange(left, left + 6, dtype=np.float32) * 20 / np.float32(255)
  np.testing.assert_array_equal(out[0, :, 0], expect)
  np.testing.assert_array_equal(out[:, :, 1], out[:, :, 0])


def test_resize_and_crop_sizes_on_odd_shapes():
  # scale_size = floor(32 / 0.875) = 36; 37 wide x 53 high -> 36 x int(36 * 53 / 37) = 36 x 51.
  prep = Preprocessing(input_size=32, crop_pct=0.875)
  assert data.scale_size(prep) == 36
  assert data.scale_size(Preprocessing(input_size=224, crop_pct=0.9)) == 248
  assert data.resize_shorter_side(53, 37, 36) == (51, 36)
  assert data.resize_shorter_side(37, 53, 36) == (36, 51)
  assert data.resize_shorter_side(40, 40, 36) == (36, 36)
  assert data.center_crop_offsets(51, 36, 32) == (10, 2)  # round(9.5) = 10
  rng = np.random.default_rng(0)
  arr = rng.integers(0, 256, (53, 37, 3), dtype=np.uint8)
  out = data.preprocess_image(Image.fromarray(arr), prep)
  ref = np.asarray(Image.fromarray(arr).resize((36, 51), Image.Resampling.BICUBIC))
  ref = ref[10:42, 2:34].astype(np.float32) / np.float32(255)
  ref = (ref - np.float32(prep.mean)) / np.float32(prep.std)
  np.testing.assert_array_equal(out, ref)


def test_center_crop_pads_odd_sides_like_torchvision():
  """torchvision's CenterCrop pads (crop - size) // 2 before (top, left) and the rest after,
  and pads a side that is too short even when the other is long enough."""
  arr = np.arange(1, 13, dtype=np.uint8).reshape(3, 4, 1)
  out = data._center_crop(arr, 6)
  assert out.shape == (6, 6, 1)
  want = np.zeros((6, 6), np.uint8)
  want[1:4, 1:5] = arr[..., 0]                   # 3 rows: 1 above, 2 below; 4 columns: 1 and 1
  np.testing.assert_array_equal(out[..., 0], want)
  wide = np.arange(30, dtype=np.uint8).reshape(3, 10, 1)
  out = data._center_crop(wide, 6)                # short rows padded, long columns cropped
  assert out.shape == (6, 6, 1)
  np.testing.assert_array_equal(out[1:4, :, 0], wide[:, 2:8, 0])
  assert not out[0].any() and not out[4:].any()


def test_balanced_subset_gives_the_remainder_to_random_classes():
  """n % K samples go to classes drawn by the seed, not always to the first ones."""
  labels = np.repeat([0, 1, 2], 10)
  extra = set()
  for seed in range(20):
    idx = data.balanced_subset(labels, 4, seed)
    counts = np.bincount(labels[idx], minlength=3)
    assert sorted(counts) == [1, 1, 2]
    extra.add(int(np.argmax(counts)))
  assert extra == {0, 1, 2}


def test_crop_larger_than_image_zero_pads_like_torchvision():
  # crop_pct 2.0: scale_size 4 < input_size 8, CenterCrop pads 2 pixels of 0 on each side.
  prep = Preprocessing(input_size=8, crop_pct=2.0, interpolation="nearest",
                       mean=(0.5,) * 3, std=(0.5,) * 3)
  out = data.preprocess_image(Image.fromarray(_gray(4, 4, 255)), prep)
  np.testing.assert_array_equal(out[2:6, 2:6], 1.0)
  assert (out[:2] == -1.0).all() and (out[:, 6:] == -1.0).all()


def test_each_interpolation_resizes_with_its_own_pil_filter():
  """timm's interpolation names resize with PIL's filter of that name (a mutation audit: only
  the output shape was checked, so 'bilinear' or 'lanczos' could resize as bicubic unseen)."""
  filters = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
             "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS,
             "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING}
  arr = np.random.default_rng(7).integers(0, 256, (23, 17, 3), dtype=np.uint8)
  # floor(8 / 0.5) = 16: 17 wide x 23 high -> 16 x int(16 * 23 / 17) = 16 x 21, crop (6, 4)
  refs = {}
  for name, pil_filter in filters.items():
    prep = Preprocessing(input_size=8, crop_pct=0.5, interpolation=name,
                         mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6))
    out = data.preprocess_image(Image.fromarray(arr), prep)
    ref = np.asarray(Image.fromarray(arr).resize((16, 21), pil_filter))[6:14, 4:12]
    ref = (ref.astype(np.float32) / np.float32(255) - np.float32(prep.mean)) / np.float32(
        prep.std)
    np.testing.assert_array_equal(out, ref, err_msg=name)
    refs[name] = ref
  names = sorted(refs)                  # (the image tells every pair of filters apart)
  assert all(not np.array_equal(refs[a], refs[b]) for a in names for b in names if a < b)


def test_grayscale_replicates_and_single_channel_mode():
  arr = np.random.default_rng(1).integers(0, 256, (9, 9), dtype=np.uint8)
  prep3 = Preprocessing(input_size=9, crop_pct=1.0, **PLAIN)
  out3 = data.preprocess_image(Image.fromarray(arr), prep3)
  np.testing.assert_array_equal(out3[..., 0], arr / np.float32(255))
  np.testing.assert_array_equal(out3[..., 0], out3[..., 2])
  prep1 = Preprocessing(input_size=9, crop_pct=1.0, mean=(0.5,), std=(0.25,), channels=1)
  rgb = Image.fromarray(np.stack([arr] * 3, -1))
  out1 = data.preprocess_image(rgb, prep1)
  assert out1.shape == (9, 9, 1)
  np.testing.assert_allclose(out1[..., 0], (arr / 255 - 0.5) / 0.25, atol=1e-6)


def test_preprocessing_validation_errors():
  img = Image.new("RGB", (4, 4))
  with pytest.raises(ValueError, match="mean has 3 values"):
    data.preprocess_image(img, Preprocessing(channels=1))
  with pytest.raises(ValueError, match="interpolation"):
    data.preprocess_image(img, Preprocessing(interpolation="cubic"))
  with pytest.raises(ValueError, match="crop_pct"):
    data.preprocess_image(img, Preprocessing(crop_pct=0.0))



@pytest.mark.parametrize("fields, message", [
    # A NaN std normalised every image to NaN (read as class 0); a negative one inverted them.
    (dict(std=(float("nan"),) * 3), r"^preprocessing.std must be finite numbers > 0, got \(nan"),
    (dict(std=(-0.5,) * 3), r"preprocessing.std must be finite numbers > 0, got \(-0.5"),
    (dict(std=(1e-300,) * 3), "preprocessing.std must be finite numbers > 0"),  # 0 in float32
    (dict(mean=(float("inf"),) * 3), "preprocessing.mean must be finite numbers, got"),
    (dict(mean=(1e300,) * 3), "preprocessing.mean must be finite numbers"),     # inf in float32
    (dict(mean=("0.5",) * 3), "preprocessing.mean must be finite numbers"),
    (dict(mean=(0.5, 0.5)), "preprocessing.mean has 2 values but channels=3"),
    # mmcv's 0-255 units (read in [0, 1] pixels: every image near one value)
    (dict(mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375)),
     r"^preprocessing.mean \(123.675, 116.28, 103.53\) is in 0-255 pixel units; pixels are "
     r"scaled to \[0, 1\] first, as timm's are: divide it by 255$"),
    (dict(std=(58.395, 57.12, 57.375)), r"^preprocessing.std \(58.395, 57.12, 57.375\) is in "
     "0-255 pixel units"),
    (dict(crop_pct=float("nan")), "preprocessing.crop_pct must be a finite number > 0, got nan"),
    (dict(input_size=True), "preprocessing.input_size must be a positive integer, got True"),
    (dict(channels=2), "preprocessing.channels must be 1 or 3, got 2"),
    (dict(interpolation="cubic"), "preprocessing.interpolation 'cubic' is unknown"),
])
def test_preprocessing_is_checked_when_built(fields, message):
  with pytest.raises(ValueError, match=message):
    Preprocessing(**fields)
  Preprocessing(mean=(1.0, 0.0, 0.5), std=(1.0, 1.0, 1.0))          # ([0, 1] units: the ends)


def test_every_timm_interpolation_is_a_preprocessing_and_lists_become_tuples():
  """Only bicubic/bilinear/nearest passed the new check: weights, estimates and artifacts whose
  config said 'lanczos' (timm's names, which the data layer resizes with) no longer loaded."""
  from vitprune import config  # pylint: disable=g-import-not-at-top
  img = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8))
  for name in ("lanczos", "box", "hamming", "bicubic", "bilinear", "nearest"):
    prep = Preprocessing(input_size=4, crop_pct=1.0, interpolation=name, **PLAIN)
    assert data.preprocess_image(img, prep).shape == (4, 4, 3)
    d = config.config_to_dict(config.ViTConfig(name="x", img_size=32, patch_size=8,
                                               embed_dim=32, depth=1, num_heads=2,
                                               mlp_hidden=64, preprocessing=dataclasses.replace(
                                                   prep, input_size=32)))
    assert config.config_from_dict(d).preprocessing.interpolation == name
  d["preprocessing"]["std"] = [0.0, 1.0, 1.0]          # a JSON config names its model
  with pytest.raises(ValueError, match=r"^invalid preprocessing of x: preprocessing.std must be "
                                       r"finite numbers > 0"):
    config.config_from_dict(d)
  prep = Preprocessing(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])
  assert prep.mean == (0.5,) * 3 and hash(prep) == hash(Preprocessing(mean=(0.5,) * 3,
                                                                      std=(0.5,) * 3))


# ----------------------------------------------------------------------------------------------
# ImageFolder.
# ----------------------------------------------------------------------------------------------


def test_class_order_and_file_selection_like_torchvision(tmp_path):
  for name in ("b", "a", "B", "10", "2"):
    _png(str(tmp_path / name / "x.png"), _gray(3, 3, 7))
  _png(str(tmp_path / "a" / "sub" / "deep.png"), _gray(3, 3))
  Image.new("RGB", (3, 3)).save(tmp_path / "a" / "UPPER.JPG", format="JPEG")
  _png(str(tmp_path / "a" / ".hidden.png"), _gray(3, 3))
  (tmp_path / "a" / "notes.txt").write_text("not an image")
  _png(str(tmp_path / ".cache" / "y.png"), _gray(3, 3))  # hidden dir: not a class
  ds = data.ImageFolder(tmp_path)
  assert ds.labelled
  assert ds.classes == ("10", "2", "B", "a", "b")
  assert ds.class_to_idx == {"10": 0, "2": 1, "B": 2, "a": 3, "b": 4}
  assert ds.files == ("10/x.png", "2/x.png", "B/x.png", "a/UPPER.JPG", "a/x.png",
                      "a/sub/deep.png", "b/x.png")
  assert ds.labels.tolist() == [0, 1, 2, 3, 3, 3, 4]
  assert ds.label(6) == 4 and len(ds) == 7
  assert ds.samples[0] == (str(tmp_path / "10" / "x.png"), 0)
  assert np.asarray(ds.load(0)).tolist() == _gray(3, 3, 7).tolist()


def test_class_folders_are_read_in_sorted_walk_order_without_hidden_subfolders(tmp_path):
  """torchvision reads `sorted(os.walk(class_dir))`: by folder path ('a-b' before 'a/c', which
  no walk order gives), and a hidden or `__MACOSX` folder inside a class holds no samples."""
  for rel in ("x.png", "a/1.png", "a-b/2.png", "a/c/3.png", ".ipynb_checkpoints/4.png",
              "a/.cache/5.png", "__MACOSX/6.png"):
    _png(str(tmp_path / "cat" / rel), _gray(3, 3))
  ds = data.ImageFolder(tmp_path)
  assert ds.files == ("cat/x.png", "cat/a/1.png", "cat/a-b/2.png", "cat/a/c/3.png")
  assert ds.labels.tolist() == [0] * 4


def test_a_folder_named_exactly_as_a_class_takes_that_class_not_its_other_spelling(tmp_path):
  """With both Unicode spellings among the model's names, a folder takes the index of the name
  it is spelled as (the exact name first); only an unmatched spelling falls back to NFC."""
  nfc, nfd = "caf\u00e9", "cafe\u0301"
  for folder in (nfc, "tea"):
    _png(str(tmp_path / folder / "a.png"), _gray(3, 3))
  ds = data.ImageFolder(str(tmp_path), class_names=[nfc, nfd, "tea"])
  assert ds.files == (f"{nfc}/a.png", "tea/a.png") and ds.labels.tolist() == [0, 2]


def test_fewer_class_folders_than_unnamed_model_classes_are_refused(tmp_path):
  """Without class names, folders '3' and '5' of a 10-class model would be labelled 0 and 1."""
  for c in ("3", "5"):
    _png(str(tmp_path / c / "a.png"), _gray(3, 3))
  with pytest.raises(ValueError, match="has 2 class folders .* the model has 10 classes"):
    data.ImageFolder(tmp_path, num_classes=10)
  assert data.ImageFolder(tmp_path, num_classes=2).labels.tolist() == [0, 1]


def test_a_dangling_link_named_like_a_file_with_a_five_letter_extension_is_ignored(tmp_path):
  """`_check_folder_link`: an alphabetic extension of up to 5 letters (.jsonl) names a file,
  not a folder; such a dangling link is not a class folder that is missing."""
  _png(str(tmp_path / "cat" / "a.png"), _gray(3, 3))
  os.symlink("/nonexistent/log.jsonl", tmp_path / "cat" / "log.jsonl")
  os.symlink("/nonexistent/log.jsonl", tmp_path / "log.jsonl")
  assert data.ImageFolder(tmp_path).files == ("cat/a.png",)


def test_unlabelled_flat_folder(tmp_path):
  for name in ("c.png", "a.png", "b.PNG"):
    _png(str(tmp_path / name), _gray(5, 5, 100))
  (tmp_path / "readme.md").write_text("x")
  ds = data.ImageFolder(tmp_path)
  assert not ds.labelled and ds.classes == () and ds.class_to_idx == {}
  assert ds.files == ("a.png", "b.PNG", "c.png")
  assert ds.labels.tolist() == [-1, -1, -1] and ds.label(0) is None
  prep = Preprocessing(input_size=4, crop_pct=1.0, **PLAIN)
  images, labels, idx = next(data.iterate_batches(ds, prep, 4))
  assert labels.tolist() == [-1] * 4 and idx.tolist() == [0, 1, 2, -1]
  np.testing.assert_array_equal(images[:3], np.float32(100) / np.float32(255))
  with pytest.raises(FileNotFoundError, match="no class subfolders"):
    data.ImageFolder(tmp_path, labelled=True)


def test_labelled_folder_warns_about_images_outside_class_folders(tmp_path):
  _png(str(tmp_path / "cat" / "a.png"), _gray(5, 5, 1))
  _png(str(tmp_path / "loose.png"), _gray(5, 5, 2))
  (tmp_path / "notes.txt").write_text("not an image: no warning for it")
  with pytest.warns(UserWarning) as record:
    ds = data.ImageFolder(tmp_path)
  assert [str(w.message) for w in record] == [
      f"1 image file directly in labelled dataset root {str(tmp_path)!r} ('loose.png') belongs "
      "to no class folder and is not evaluated"]
  assert ds.labelled and ds.files == ("cat/a.png",)
  assert data.ImageFolder(tmp_path, labelled=False).files == ("loose.png",)
  _png(str(tmp_path / "loose2.png"), _gray(5, 5, 3))
  with pytest.warns(UserWarning) as record:
    data.ImageFolder(tmp_path)
  assert [str(w.message) for w in record] == [
      f"2 image files directly in labelled dataset root {str(tmp_path)!r} (e.g. 'loose.png') "
      "belong to no class folder and are not evaluated"]


def test_folders_warn_about_images_in_formats_that_are_not_read(tmp_path):
  """A GIF or HEIC among the PNGs was skipped without a word (torchvision does too), so the
  evaluation ran on fewer images than the folder holds: one warning per dataset names them."""
  _png(str(tmp_path / "cat" / "a.png"), _gray(5, 5, 1))
  (tmp_path / "cat" / "sub").mkdir()
  (tmp_path / "cat" / "sub" / "b.GIF").write_bytes(b"GIF89a")
  (tmp_path / "cat" / "c.heic").write_bytes(b"x")
  (tmp_path / "cat" / ".hidden.gif").write_bytes(b"x")      # hidden: never read, no word
  (tmp_path / "cat" / "notes.txt").write_text("not an image: no word either")
  _png(str(tmp_path / "dog" / "d.png"), _gray(5, 5, 2))
  with pytest.warns(UserWarning) as record:
    ds = data.ImageFolder(tmp_path)
  assert [str(w.message) for w in record] == [
      f"2 files in dataset {str(tmp_path)!r} named like images of a format that is not read "
      "(.gif, .heic; e.g. 'cat/c.heic') are not evaluated; convert them to one of "
      + ", ".join(data.IMG_EXTENSIONS)]
  assert ds.files == ("cat/a.png", "dog/d.png")
  flat = tmp_path / "flat"
  _png(str(flat / "a.png"), _gray(5, 5, 1))
  (flat / "b.avif").write_bytes(b"x")
  with pytest.warns(UserWarning, match=r"^1 file in dataset .*/flat' named like images of "
                                       r"a format that is not read \(.avif; e.g. 'b.avif'\) is "
                                       r"not evaluated; convert it to one of "):
    assert data.ImageFolder(flat).files == ("a.png",)
  (flat / "b.avif").unlink()
  with warnings.catch_warnings():
    warnings.simplefilter("error")           # (only readable images: no warning)
    assert data.ImageFolder(flat).files == ("a.png",)
  # A class folder of such images alone: the refusal says what it holds (it said only which
  # extensions it lacks).
  (tmp_path / "cat" / "a.png").unlink()
  with pytest.raises(FileNotFoundError, match=re.escape(
      f"class folder '{tmp_path / 'cat'}' contains no image files with extensions "
      f"{', '.join(data.IMG_EXTENSIONS)} (it holds 2 of formats not read, e.g. 'c.heic')")):
    data.ImageFolder(tmp_path)


def test_folders_warn_about_jpegs_named_jpe(tmp_path):
  """A JPEG saved as .jpe (or .jif/.jfi, a camera's .mpo) among the .jpg files was skipped
  without a word: the evaluation ran on fewer images than the folder holds."""
  _png(str(tmp_path / "cat" / "a.png"), _gray(5, 5, 1))
  for name in ("b.JPE", "c.jif", "d.jfi", "e.mpo"):
    (tmp_path / "cat" / name).write_bytes(b"\xff\xd8\xff")
  with pytest.warns(UserWarning, match=re.escape(
      "4 files in dataset " + repr(str(tmp_path)) + " named like images of a format that is "
      "not read (.jfi, .jif, .jpe, .mpo; e.g. 'cat/b.JPE') are not evaluated")):
    assert data.ImageFolder(tmp_path).files == ("cat/a.png",)


def test_folder_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    data.ImageFolder(tmp_path / "missing")
  os.symlink("loop", tmp_path / "loop")            # (a probe was told it does not exist)
  with pytest.raises(FileNotFoundError, match="/loop' is a symbolic link that leads nowhere "
                                              r"\(to itself, a loop of links or a missing"):
    data.ImageFolder(tmp_path / "loop")
  (tmp_path / "file.txt").write_text("x")
  with pytest.raises(FileNotFoundError, match="is neither a directory nor an image file"):
    data.ImageFolder(tmp_path / "file.txt")
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(FileNotFoundError, match="no image files"):
    data.ImageFolder(empty)
  root = tmp_path / "ds"
  _png(str(root / "cat" / "0.png"), _gray(3, 3))
  (root / "dog").mkdir()
  (root / "dog" / "notes.txt").write_text("x")
  with pytest.raises(FileNotFoundError, match="dog"):
    data.ImageFolder(root)


@pytest.mark.parametrize("unreadable", ["cat/sub", "cat"])
def test_a_folder_that_cannot_be_listed_is_named_not_skipped(tmp_path, monkeypatch, unreadable):
  """os.walk skipped an unreadable sub-folder silently (its images left out of the evaluation);
  an unreadable class folder was reported as holding no images."""
  root = tmp_path / "ds"
  _png(str(root / "cat" / "0.png"), _gray(3, 3))
  _png(str(root / "cat" / "sub" / "1.png"), _gray(3, 3))
  _png(str(root / "dog" / "2.png"), _gray(3, 3))
  denied, scandir = str(root / unreadable), os.scandir

  def refusing_scandir(path="."):
    if os.fspath(path) == denied:
      raise PermissionError(13, "Permission denied", os.fspath(path))
    return scandir(path)

  monkeypatch.setattr(os, "scandir", refusing_scandir)
  with pytest.raises(ValueError, match=rf"^dataset folder '{re.escape(denied)}' cannot be read "
                     r"\(Permission denied\)$"):
    data.ImageFolder(root)


def test_an_extreme_aspect_ratio_is_refused_before_the_resize(tmp_path):
  """A 100000x1 PNG (a few hundred bytes) became 3200000x32 pixels before the crop; 1000000x1
  took GBs and died with an empty MemoryError."""
  path = tmp_path / "ds" / "cls" / "thin.png"
  _png(str(path), np.zeros((1, 100_000), np.uint8))
  assert path.stat().st_size < 2000
  ds, prep = data.ImageFolder(tmp_path / "ds"), digits.digits_preprocessing()
  msg = (r"a 100000x1 image would be resized to 3200000x32 pixels before the 32x32 center "
         r"crop \(more than 89478485\): its aspect ratio is too extreme$")
  with pytest.raises(ValueError, match="^" + msg):
    data.preprocess_image(ds.load(0), prep)
  with pytest.raises(ValueError, match=rf"^image file '{re.escape(str(path))}': " + msg):
    list(data.iterate_batches(ds, prep, 1))
  wide = Image.fromarray(np.zeros((30, 8000), np.uint8))        # a panorama is still fine
  assert data.preprocess_image(wide, prep).shape == (32, 32, 3)


def test_corrupt_and_truncated_images_name_the_file(tmp_path):
  _png(str(tmp_path / "cls" / "good.png"), np.random.default_rng(0).integers(
      0, 256, (64, 64), dtype=np.uint8))
  (tmp_path / "cls" / "junk.png").write_bytes(b"definitely not a png")
  good = (tmp_path / "cls" / "good.png").read_bytes()
  (tmp_path / "cls" / "trunc.png").write_bytes(good[:len(good) // 2])
  ds = data.ImageFolder(tmp_path)  # scanning does not decode
  assert ds.files == ("cls/good.png", "cls/junk.png", "cls/trunc.png")
  ds.load(0)
  with pytest.raises(ValueError, match=r"junk.png': not an image PIL can identify \(another "
                                       r"format, or corrupt\)$"):   # named PIL's file object
    ds.load(1)
  with pytest.raises(ValueError, match="trunc.png"):
    ds.load(2)
  prep = Preprocessing(input_size=8, crop_pct=1.0)
  with pytest.raises(ValueError, match="junk.png"):
    list(data.iterate_batches(ds, prep, 2))


def test_empty_and_unopenable_images_say_so_not_cannot_decode(tmp_path, monkeypatch):
  (tmp_path / "cls").mkdir()
  empty, locked = tmp_path / "cls" / "empty.png", tmp_path / "cls" / "locked.png"
  empty.write_bytes(b"")
  _png(str(locked), _gray(3, 3))
  with pytest.raises(ValueError, match=rf"^image file '{re.escape(str(empty))}' is empty "
                     r"\(0 bytes\)$"):
    data.load_image(str(empty))
  real_open = open

  def refusing_open(path, *args, **kwargs):       # root reads any file: deny it here
    if str(path) == str(locked):
      raise PermissionError(13, "Permission denied", str(path))
    return real_open(path, *args, **kwargs)

  monkeypatch.setattr("builtins.open", refusing_open)
  with pytest.raises(ValueError, match=rf"^image file '{re.escape(str(locked))}' cannot be "
                     r"opened \(Permission denied\)$"):
    data.load_image(str(locked))


def test_an_image_rewritten_after_its_folder_was_hashed_is_refused(tmp_path):
  """A probe rewrote class 9's files while estimate decoded a folder: it exited 0, recording
  the accuracy of the new pixels (0.8802) under the content_sha256 of the old ones (the clean
  folder's, 0.9721). A file whose bytes no longer hash to the digest is refused, naming it."""
  for name in ("a", "b"):
    _png(str(tmp_path / "ds" / name / "0.png"), _gray(3, 3))
  ds = data.ImageFolder(str(tmp_path / "ds"))
  before = data.images_content_sha256(ds)
  assert np.asarray(ds.load(1)).max() == 0          # unchanged: read as before
  changed = str(tmp_path / "ds" / "b" / "0.png")
  _png(changed, _gray(3, 3, 255))
  with pytest.raises(ValueError, match=rf"^image file '{re.escape(changed)}' changed while "
                     r"the run read it \(its bytes are not those hashed when its folder was "
                     r"read\): rerun once nothing writes to the folder$"):
    ds.load(1)
  assert np.asarray(ds.load(0)).max() == 0          # the others still load
  fresh = data.ImageFolder(str(tmp_path / "ds"))    # a new read hashes and loads the new bytes
  assert data.images_content_sha256(fresh) != before
  assert np.asarray(fresh.load(1)).min() == 255
  assert np.asarray(data.ImageFolder(str(tmp_path / "ds")).load(1)).min() == 255   # unhashed


def test_an_unreadable_root_or_image_file_is_named_when_hashed(tmp_path, monkeypatch):
  """A probe (without root's override): estimate printed a raw '[Errno 13] Permission denied:
  ...' for an unreadable image (its content digest reads every file before any is decoded) and
  every CLI did for an unreadable dataset root."""
  for name in ("a", "b"):
    _png(str(tmp_path / "ds" / name / "0.png"), _gray(3, 3))
  locked = str(tmp_path / "ds" / "b" / "0.png")
  ds = data.ImageFolder(str(tmp_path / "ds"))
  real_open, real_scandir = open, os.scandir

  def refusing_open(path, *args, **kwargs):       # root reads any file: deny it here
    if str(path) == locked:
      raise PermissionError(13, "Permission denied", str(path))
    return real_open(path, *args, **kwargs)

  monkeypatch.setattr("builtins.open", refusing_open)
  with pytest.raises(ValueError, match=rf"^image file '{re.escape(locked)}' cannot be opened "
                     r"\(Permission denied\)$"):
    data.images_content_sha256(ds)
  monkeypatch.setattr("builtins.open", real_open)
  os.remove(locked)
  for digest in (data.images_content_sha256, data.dataset_fingerprint):   # (sizes: a raw errno)
    with pytest.raises(FileNotFoundError, match=rf"^image file '{re.escape(locked)}' does not "
                       r"exist \(removed since its folder was read\?\)$"):
      digest(ds)

  def refusing_scandir(path):
    if str(path) == str(tmp_path / "ds"):
      raise PermissionError(13, "Permission denied", str(path))
    return real_scandir(path)

  monkeypatch.setattr(os, "scandir", refusing_scandir)
  with pytest.raises(ValueError, match=rf"^dataset root '{re.escape(str(tmp_path / 'ds'))}' "
                     r"cannot be read \(Permission denied\)$"):
    data.find_classes(str(tmp_path / "ds"))


def test_an_image_above_pils_pixel_limit_is_named_each_time(tmp_path, monkeypatch):
  """PIL's DecompressionBombWarning named no file and, its text repeated, was shown once for
  two such images (a probe)."""
  for name in ("a", "b"):
    _png(str(tmp_path / f"{name}.png"), _gray(4, 5))
  monkeypatch.setattr(data.Image, "MAX_IMAGE_PIXELS", 12)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for name in ("a", "b"):
      assert data.load_image(str(tmp_path / f"{name}.png")).size == (5, 4)
  ours = [w for w in caught if "image file" in str(w.message)]
  assert [str(w.message) for w in ours] == [
      f"image file '{tmp_path / name}.png' has 20 pixels, above PIL's limit of 12 (a "
      "decompression bomb?): decoded anyway" for name in ("a", "b")]
  assert all(w.category is data.Image.DecompressionBombWarning for w in caught)
  # As a CLI prints them: one line per file, not PIL's unnamed one besides (a review).
  script = ("import sys, warnings; from PIL import Image; from vitprune import console, data\n"
            "warnings.formatwarning = console.one_line_warning\n"
            "Image.MAX_IMAGE_PIXELS = 12\n"
            "for p in sys.argv[1:]: data.load_image(p)\n")
  run = subprocess.run([sys.executable, "-c", script, str(tmp_path / "a.png"),
                        str(tmp_path / "b.png")], capture_output=True, text=True, check=True,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert run.stderr.splitlines() == [
      f"warning: DecompressionBombWarning: image file '{tmp_path / name}.png' has 20 pixels, "
      "above PIL's limit of 12 (a decompression bomb?): decoded anyway" for name in ("a", "b")]
  # The filter of PIL's text comes last: a caller who makes PIL's warning an error keeps it
  # one (a review: a first, process-wide filter silenced it), on load_image's path too.
  with warnings.catch_warnings():
    warnings.simplefilter("error", data.Image.DecompressionBombWarning)
    with pytest.raises(data.Image.DecompressionBombWarning):
      data.load_image(str(tmp_path / "a.png"))
  monkeypatch.setattr(data.Image, "MAX_IMAGE_PIXELS", 9)         # twice the limit: an error
  with pytest.raises(ValueError, match=r"cannot decode image file .*a.png': Image size \(20 "
                     r"pixels\) exceeds limit of 18 pixels"):
    data.load_image(str(tmp_path / "a.png"))


@pytest.mark.parametrize("link, target, again", [
    ("cat/up", "..", "is '{root}' again"),               # the root: every class read again
    ("cat/loop", ".", "is '{root}/cat' again"),          # a loop
    ("cat/dogs", "../dog", "is '{root}/cat/dogs' again"),  # another class's folder
    ("cat/d.png", "../dog/0.png",                         # another class's image
     "'{root}/cat/d.png' is a link to '{root}/dog/0.png', which the dataset also reads as an "
     "image of its own"),
])
def test_images_reached_twice_through_links_are_refused(tmp_path, link, target, again):
  """torchvision follows the links and reads such images twice (or under another class): the
  probe's `cat/up -> ..` counted 14719 digits of 359 at accuracy 0.12, with exit 0."""
  root = tmp_path / "ds"
  for name in ("cat", "dog"):
    _png(str(root / name / "0.png"), _gray(3, 3))
  assert len(data.ImageFolder(root)) == 2
  os.symlink(target, root / link)
  with pytest.raises(ValueError, match=re.escape(again.format(root=root)) +
                     r".*every image of a dataset must be reached once, under one class"):
    data.ImageFolder(root)


def test_a_flat_folder_refuses_a_link_to_its_own_image(tmp_path):
  _png(str(tmp_path / "a.png"), _gray(3, 3))
  os.symlink("a.png", tmp_path / "b.png")
  with pytest.raises(ValueError, match=re.escape(f"'{tmp_path}/b.png' is a link to "
                                                 f"'{tmp_path}/a.png', which the dataset")):
    data.ImageFolder(tmp_path)
  os.unlink(tmp_path / "b.png")
  outside = tmp_path.parent / f"{tmp_path.name}_blob.png"
  _png(str(outside), _gray(3, 3))
  os.symlink(outside, tmp_path / "b.png")
  os.symlink(outside, tmp_path / "c.png")               # a deduplicating store: fine
  assert data.ImageFolder(tmp_path).files == ("a.png", "b.png", "c.png")


@pytest.mark.parametrize("flat", [False, True])
@pytest.mark.parametrize("make, message", [
    (os.mkfifo, "is named like an image but is not a regular file (a FIFO"),
    (lambda p: os.symlink("/dev/zero", p), "is named like an image but is not a regular file"),
    (lambda p: os.symlink("missing.png", p), "is a link to nothing (dangling symbolic link)"),
])
def test_an_image_name_that_is_not_a_regular_file_is_refused_at_scan(tmp_path, flat, make,
                                                                     message):
  """A FIFO named `b.png` blocked every `--data` CLI in open() for ever (labelled folders), or
  was skipped without a word (flat folders); a dangling link failed only when read."""
  folder = tmp_path if flat else tmp_path / "3"
  _png(str(folder / "a.png"), _gray(3, 3))
  make(str(folder / "b.png"))
  with pytest.raises(ValueError, match=re.escape(f"'{folder}/b.png' {message}")):
    data.ImageFolder(tmp_path)


def test_names_that_are_not_utf8_are_refused_by_path(tmp_path):
  """torchvision reads them; here the dataset fingerprint failed on them with a message naming
  nothing ('utf-8' codec can't encode ...)."""
  _png(str(tmp_path / "3" / "a.png"), _gray(3, 3))
  with open(os.path.join(os.fsencode(tmp_path / "3"), b"\xff.png"), "wb") as f:
    Image.fromarray(_gray(3, 3)).save(f, format="PNG")
  with pytest.raises(ValueError, match=re.escape(f"'{tmp_path}/3/\\udcff.png': the file name "
                                                 "is not valid UTF-8")):
    data.ImageFolder(tmp_path)
  os.unlink(os.path.join(os.fsencode(tmp_path / "3"), b"\xff.png"))
  os.mkdir(os.path.join(os.fsencode(tmp_path), b"\xfe"))
  with pytest.raises(ValueError, match=re.escape(f"'{tmp_path}/\\udcfe': the class folder's "
                                                 "name is not valid UTF-8")):
    data.ImageFolder(tmp_path)
  os.mkdir(os.path.join(os.fsencode(tmp_path / "3"), b"\xfd"))
  assert data.ImageFolder(tmp_path / "3", labelled=False).files == ("a.png",)   # unused


def test_a_root_below_a_folder_that_is_not_utf8_is_fine(tmp_path):
  """Only the names below the root are recorded (files, fingerprint): the root's own path may
  hold any bytes."""
  root = os.path.join(os.fsencode(tmp_path), b"caf\xe9")
  _png(os.path.join(os.fsdecode(root), "3", "a.png"), _gray(3, 3))
  assert data.ImageFolder(os.fsdecode(root)).files == ("3/a.png",)
  assert len(data.dataset_fingerprint(data.ImageFolder(os.fsdecode(root)))) == 64


def test_a_jpeg_frame_header_is_found_behind_tables_and_fill_bytes():
  """The training-data guard reads a large JPEG's size from its frame header (SOF): behind
  Huffman tables (DHT, C4, which lies among the SOF codes; some encoders write it first),
  application segments, restart markers and 0xFF fill bytes (a mutation audit: each misread
  made a padded 8x8 digit unscanned); no frame header before the scan: None."""
  seg = lambda marker, payload: (b"\xff" + bytes([marker]) + (len(payload) + 2).to_bytes(2, "big")
                                 + payload)
  sof = seg(0xC0, b"\x08" + (6).to_bytes(2, "big") + (9).to_bytes(2, "big") + b"\x01\x01\x11\x00")
  dht, app = seg(0xC4, bytes(20)), seg(0xE0, b"JFIF\x00" + bytes(9))
  for stream in (app + sof, dht + app + sof, app + b"\xff\xff" + sof, b"\xff\xd0" + dht + sof,
                 app + seg(0xC2, sof[4:])):                        # (C2: progressive)
    assert digits._jpeg_size(io.BytesIO(b"\xff\xd8" + stream)) == (9, 6), stream
  for stream in (app + seg(0xDA, bytes(4)) + sof, app, app + b"\x00" + sof):
    assert digits._jpeg_size(io.BytesIO(b"\xff\xd8" + stream)) is None, stream


def test_links_outside_the_dataset_are_read_once_each(tmp_path):
  """A linked folder outside the dataset, and a deduplicating store (git-annex, DVC, a hub
  cache: images are links into a blob folder, two identical images one blob) are fine."""
  root, outside, blobs = tmp_path / "ds", tmp_path / "elsewhere", tmp_path / "blobs"
  _png(str(root / "cat" / "0.png"), _gray(3, 3))
  _png(str(outside / "1.png"), _gray(3, 3))
  blobs.mkdir()
  Image.fromarray(_gray(3, 3).astype(np.uint8)).save(blobs / "ab12", format="PNG")
  os.symlink(outside, root / "cat" / "more")
  (root / "dog").mkdir()
  os.symlink(blobs / "ab12", root / "dog" / "a.png")
  os.symlink(blobs / "ab12", root / "dog" / "b.png")
  ds = data.ImageFolder(root)
  assert ds.files == ("cat/0.png", "cat/more/1.png", "dog/a.png", "dog/b.png")
  assert ds.labels.tolist() == [0, 0, 1, 1]
  # An image of the linked-in folder linked again from another class: read as a cat and as a
  # dog (counted twice, a probe: 32 images of 31); refused whichever class comes first.
  for name in ("dog/x.png", "ant/x.png"):
    (root / os.path.dirname(name)).mkdir(exist_ok=True)
    os.symlink(outside / "1.png", root / name)
    with pytest.raises(ValueError, match=re.escape(
        f"'{root / name}' is a link to '{outside / '1.png'}', which the dataset also reads as "
        "an image of its own: every image of a dataset must be reached once, under one class")):
      data.ImageFolder(root)
    os.unlink(root / name)
  (root / "ant").rmdir()
  # ... also through a link of another class (a link to a link: only the last target was
  # looked at, a review).
  os.symlink(blobs / "ab12", root / "cat" / "l.png")
  os.symlink(os.path.join("..", "cat", "l.png"), root / "dog" / "x.png")
  with pytest.raises(ValueError, match=re.escape(
      f"'{root / 'dog' / 'x.png'}' is a link to '{root / 'dog' / '..' / 'cat' / 'l.png'}', "
      "which the dataset also reads as an image of its own")):
    data.ImageFolder(root)
  # ... and through two hops, relative, via a folder outside the dataset (a mutation audit:
  # only the first hop was followed, or the second resolved from the first link's folder).
  (tmp_path / "hop").mkdir()
  os.unlink(root / "dog" / "x.png")
  os.symlink(os.path.join("..", "ds", "cat", "l.png"), tmp_path / "hop" / "h.png")
  os.symlink(os.path.join("..", "..", "hop", "h.png"), root / "dog" / "x.png")
  with pytest.raises(ValueError, match=re.escape(
      f"'{root / 'dog' / 'x.png'}' is a link to "
      f"'{root / 'dog' / '..' / '..' / 'hop' / '..' / 'ds' / 'cat' / 'l.png'}', which the "
      "dataset also reads")):
    data.ImageFolder(root)
  os.unlink(root / "dog" / "x.png")
  os.unlink(root / "cat" / "l.png")
  # A link to an image directly in the root, which a labelled folder does not read (it warns
  # about it), is read once: the root is not a folder whose images the dataset reads.
  shutil.copy(root / "cat" / "0.png", root / "x.png")
  os.symlink(os.path.join("..", "x.png"), root / "cat" / "r.png")
  with pytest.warns(UserWarning):
    assert "cat/r.png" in data.ImageFolder(root).files
  os.unlink(root / "cat" / "r.png")
  os.unlink(root / "x.png")
  # A link to a file no folder reads as an image (a .dat beside the images) is read once: it
  # was refused as "also read as an image of its own".
  shutil.copy(root / "cat" / "0.png", root / "cat" / "raw.dat")
  os.symlink(root / "cat" / "raw.dat", root / "dog" / "c.png")
  assert data.ImageFolder(root).files[-1] == "dog/c.png"


@pytest.mark.parametrize("mode, array", [
    ("I;16", (np.arange(64).reshape(8, 8) * 1000).astype(np.uint16)),
    ("F", np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)),
])
def test_wide_pixels_are_refused_not_clipped(tmp_path, mode, array):
  """16-bit and float images: timm's convert('RGB') clips them to 255 (a 16-bit scan reads as
  mostly white: accuracy 0.9443 instead of 0.9749 on the digits in the probe)."""
  path = tmp_path / "cls" / ("x.png" if mode == "I;16" else "x.tif")
  path.parent.mkdir()
  Image.fromarray(array).save(path)
  ds = data.ImageFolder(tmp_path)
  msg = rf"image file '{path}' has mode '{re.escape(mode)}' \(more than 8 bits per channel\)"
  with pytest.raises(ValueError, match=msg):
    ds.load(0)
  with pytest.raises(ValueError, match=msg):
    list(data.iterate_batches(ds, Preprocessing(input_size=8, crop_pct=1.0), 1))
  with pytest.raises(ValueError, match=f"image has mode '{re.escape(mode)}'"):
    data.preprocess_image(Image.open(path), Preprocessing(input_size=8, crop_pct=1.0))


def test_16bit_pixels_of_either_byte_order_are_refused():
  """A big-endian 16-bit image (a TIFF from some scanners: mode 'I;16B') clips as 'I;16' does."""
  prep = Preprocessing(input_size=2, crop_pct=1.0)
  for dtype, mode in (("<u2", "I;16"), (">u2", "I;16B")):
    image = Image.fromarray(np.full((2, 2), 1000, dtype))
    assert image.mode == mode
    with pytest.raises(ValueError, match=f"image has mode '{re.escape(mode)}'"):
      data.preprocess_image(image, prep)


def test_images_read_unlike_a_viewer_shows_them_are_said_once_per_folder(tmp_path):
  """A probe: white digits on a transparent page scored 0.10, EXIF-rotated digits 0.08, and
  palette transparency printed PIL's advice twice, naming no file. Each is read as timm reads
  it (the numbers are timm's), and one such file of the folder is named, once, also from
  loader threads (a review: a catch_warnings there left every warning ignored)."""
  white_ink = np.zeros((8, 8, 4), np.uint8)
  white_ink[..., :3] = 255
  white_ink[2:6, 2:6, 3] = 255
  (tmp_path / "a").mkdir()
  (tmp_path / "b").mkdir()
  for i in range(12):
    Image.fromarray(white_ink, "RGBA").save(tmp_path / "a" / f"{i:02d}.png")
  opaque = white_ink.copy()
  opaque[..., 3] = 255
  Image.fromarray(opaque, "RGBA").save(tmp_path / "b" / "opaque.png")
  Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8), "P").save(
      tmp_path / "b" / "pal.png", transparency=bytes([128] * 256))    # (bytes: partial alpha)
  for orientation, name in ((6, "rot.jpg"), (0, "zero.jpg"), (9, "nine.jpg")):
    exif = Image.Exif()
    exif[0x0112] = orientation          # (0 and 9: invalid, viewers ignore them: not said)
    Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(tmp_path / "b" / name, exif=exif)
  prep = Preprocessing(input_size=8, crop_pct=1.0)
  filters = list(warnings.filters)
  for workers in (0, 4):
    ds = data.ImageFolder(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter("always")
      batch = np.concatenate([b[0] for b in data.iterate_batches(ds, prep, 2,
                                                                 num_workers=workers)])
    said = sorted(str(w.message) for w in caught)
    assert len(said) == 2 and re.fullmatch(
        re.escape(f"image file '{tmp_path}/a/") + r"\d\d\.png" + re.escape(
            "' has transparent pixels (mode RGBA): read as timm reads it, the colour under them "
            "kept and the transparency dropped; flatten it onto its background first if the "
            f"model should see what a viewer shows (said for one such file of '{tmp_path}' "
            "only)"), said[0]), said
    assert said[1] == (
        f"image file '{tmp_path}/b/rot.jpg' has EXIF orientation 6 (a viewer shows it rotated or "
        "mirrored): read as stored, as timm reads it; rotate it upright first "
        f"(PIL.ImageOps.exif_transpose) if the model should see it so (said for one such file "
        f"of '{tmp_path}' only)")
    assert warnings.filters == filters
    for i in range(len(ds)):        # the pixels as timm's convert('RGB') gives them, unchanged
      with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = data.preprocess_image(Image.open(ds.path(i)).convert("RGB"), prep)
      np.testing.assert_array_equal(batch[i], want)
  pal = Image.open(tmp_path / "b" / "pal.png")
  assert isinstance(pal.info["transparency"], bytes)
  assert [k for k, _ in data.read_unlike_shown(pal)] == ["transparency"]
  with warnings.catch_warnings(record=True) as caught:      # (PIL's advice, naming no file)
    warnings.simplefilter("always")
    data.preprocess_image(pal, prep)
  assert not caught, [str(w.message) for w in caught]
  assert data.read_unlike_shown(Image.open(tmp_path / "b" / "opaque.png")) == []


def test_a_macos_zips_folder_and_an_unexpanded_tilde_are_named(tmp_path, monkeypatch):
  """A probe: a macOS zip's __MACOSX/ was refused as a class folder (or made a flat folder read
  as labelled, then 'contains no image files'), and --data=~/digits (no shell expands '~' after
  '=') was 'neither digits nor a directory' (the CLIs now expand it, `console.expand_home`; the
  library takes a path as given, as `open` does)."""
  from vitprune import estimate  # pylint: disable=g-import-not-at-top
  _png(str(tmp_path / "d" / "tea" / "a.png"), _gray(3, 3))
  _png(str(tmp_path / "d" / "__MACOSX" / "tea" / "._a.png"), _gray(3, 3))
  for names in (["tea"], None):
    ds = data.ImageFolder(str(tmp_path / "d"), class_names=names)
    assert (ds.files, ds.classes) == (("tea/a.png",), ("tea",))
  _png(str(tmp_path / "flat" / "a.png"), _gray(3, 3))
  _png(str(tmp_path / "flat" / "__MACOSX" / "._a.png"), _gray(3, 3))
  ds = data.ImageFolder(str(tmp_path / "flat"))
  assert (ds.files, ds.labelled) == (("a.png",), False)
  monkeypatch.setenv("HOME", str(tmp_path))
  with pytest.raises(FileNotFoundError, match=re.escape(
      "data '~/d' is neither 'digits' nor an existing directory")):
    estimate.load_eval_data("~/d")


def test_preprocess_image_and_iterate_batches_name_bad_arguments():
  """A numpy image was "no attribute 'mode'", a 0-wide one a ZeroDivisionError; batch_size=True
  ran as 1, num_workers=None was a TypeError and 1.5 was taken."""
  prep = Preprocessing(input_size=8, crop_pct=1.0)
  with pytest.raises(TypeError, match=r"image must be a PIL image \(PIL.Image.open\(path\) or "
                                      r"PIL.Image.fromarray\(array\)\), got ndarray"):
    data.preprocess_image(np.zeros((8, 8, 3), np.uint8), prep)
  with pytest.raises(ValueError, match=r"image is empty \(0x8 pixels\)"):
    data.preprocess_image(Image.new("RGB", (0, 8)), prep)
  ds = data.ArrayDataset(np.zeros((3, 8, 8, 3), np.uint8), np.zeros(3, np.int32))
  for bad in (True, 0, 1.5, None):
    with pytest.raises(ValueError, match=f"batch_size must be a positive int, got {bad!r}"):
      data.iterate_batches(ds, prep, bad)
  for bad in (None, 1.5, -1, False):
    with pytest.raises(ValueError, match=f"num_workers must be an int >= 0, got {bad!r}"):
      data.iterate_batches(ds, prep, 2, num_workers=bad)
  assert len(list(data.iterate_batches(ds, prep, 2, num_workers=np.int64(2)))) == 2
  for switch in ("drop_remainder", "pad_remainder"):       # ('no' is truthy: an image dropped)
    with pytest.raises(TypeError, match=f"^{switch} must be True or False, got 'no'$"):
      data.iterate_batches(ds, prep, 2, **{switch: "no"})
  assert [len(b[0]) for b in data.iterate_batches(ds, prep, 2, pad_remainder=np.bool_(False))
          ] == [2, 1]


def test_image_folder_labelled_given_as_a_string_is_refused(tmp_path):
  with pytest.raises(TypeError, match="^labelled must be True or False, got 'no'$"):
    data.ImageFolder(str(tmp_path), labelled="no")


def test_array_dataset_labels_are_whole_class_indices():
  """Labels were cast to int32 whatever they were: 0.9 / 1.5 / 2.99 became 0 / 1 / 2, 2**32 + 3
  wrapped to 3, NaN made the whole set unlabelled, -5 counted as unlabelled."""
  images = np.zeros((3, 8, 8), np.uint8)
  for bad in ([0.9, 1.5, 2.99], [2**32 + 3, 0, 1], [np.nan, 0, 1], [True, False, True],
              [-5, 0, 1], ["a", "b", "c"]):
    with pytest.raises(ValueError, match=r"^ArrayDataset labels must be integers >= -1 "
                                         r"\(-1: unlabelled\), got "):
      data.ArrayDataset(images, np.array(bad))
  with pytest.raises(ValueError, match="labels go up to 3 but there are 3 classes"):
    data.ArrayDataset(images, np.array([0, 1, 3]), ("x", "y", "z"))
  with pytest.raises(ValueError, match="ArrayDataset classes must be a list of non-empty"):
    data.ArrayDataset(images, np.array([0, 1, 1]), "ab")          # (was two classes 'a', 'b')
  ds = data.ArrayDataset(images, np.array([2, 1, 0], np.uint64), ["x", "y", "z"])
  assert ds.labels.dtype == np.int32 and ds.labels.tolist() == [2, 1, 0]
  assert ds.classes == ("x", "y", "z") and ds.labelled
  assert not data.ArrayDataset(images, np.array([2, -1, 0])).labelled
  assert len(data.ArrayDataset(images[:0], np.zeros(0, np.int64))) == 0
  assert len(data.ArrayDataset(images[:0], [])) == 0           # ([] is float64: no labels)
  named = data.ArrayDataset(images, [0, 1, 1], np.array(["a", "b"]))   # (an array of names)
  assert named.classes == ("a", "b") and named.labelled
  for bad in (None, "ab", ["a", "a"]):
    with pytest.raises(ValueError, match="ArrayDataset classes"):
      data.ArrayDataset(images, [0, 1, 1], bad)


# ----------------------------------------------------------------------------------------------
# Batching.
# ----------------------------------------------------------------------------------------------


def _array_ds(n=10, size=8):
  rng = np.random.default_rng(3)
  images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
  return data.ArrayDataset(images, np.arange(n) % 3, ("x", "y", "z"))


def test_batches_padded_with_mask():
  ds = _array_ds()
  prep = Preprocessing(input_size=8, crop_pct=1.0, **PLAIN)
  batches = list(data.iterate_batches(ds, prep, 4))
  assert len(batches) == 3
  for images, labels, idx in batches:
    assert images.shape == (4, 8, 8, 3) and images.dtype == np.float32
    assert labels.dtype == np.int32 and idx.shape == (4,)
  images, labels, idx = batches[-1]
  assert idx.tolist() == [8, 9, -1, -1] and labels.tolist() == [2, 0, -1, -1]
  assert data.batch_valid_mask(idx).tolist() == [True, True, False, False]
  np.testing.assert_array_equal(images[2:], 0.0)
  np.testing.assert_array_equal(images[0, ..., 0], ds.images[8] / np.float32(255))
  assert len(list(data.iterate_batches(ds, prep, 4, drop_remainder=True))) == 2
  short = list(data.iterate_batches(ds, prep, 4, pad_remainder=False))[-1]
  assert short[0].shape[0] == 2 and short[2].tolist() == [8, 9]


def test_batches_custom_order_and_threads_are_deterministic():
  ds = _array_ds()
  prep = Preprocessing(input_size=16, crop_pct=0.875)
  order = [9, 0, 5, 5, 2]
  serial = list(data.iterate_batches(ds, prep, 2, indices=order))
  threaded = list(data.iterate_batches(ds, prep, 2, indices=order, num_workers=3))
  assert [b[2].tolist() for b in serial] == [[9, 0], [5, 5], [2, -1]]
  for a, b in zip(serial, threaded):
    for x, y in zip(a, b):
      np.testing.assert_array_equal(x, y)
  with pytest.raises(ValueError, match="indices must lie"):
    data.iterate_batches(ds, prep, 2, indices=[10])
  with pytest.raises(ValueError, match="batch_size"):
    data.iterate_batches(ds, prep, 0)


def test_labels_below_minus_one_and_fractional_indices_are_refused():
  """-1 is the only unlabelled mark (-2 is no class); an index 1.7 would be truncated to 1."""
  images = np.zeros((3, 8, 8), np.uint8)
  with pytest.raises(ValueError, match=r"labels must be integers >= -1"):
    data.ArrayDataset(images, np.array([-2, 0, 1]))
  ds = _array_ds(3)
  prep = Preprocessing(input_size=8, crop_pct=1.0, **PLAIN)
  for bad in ([1.7], np.array([0.0, 1.0])):
    with pytest.raises(ValueError, match="indices must be a 1-D integer array"):
      data.iterate_batches(ds, prep, 2, indices=bad)
    with pytest.raises(ValueError, match="indices must be a 1-D integer array"):
      data.dataset_fingerprint(ds, bad)


def test_batches_in_a_custom_order_carry_each_samples_own_label():
  """The labels of a batch follow its indices, in the order given (not sorted)."""
  ds = _array_ds()
  prep = Preprocessing(input_size=8, crop_pct=1.0, **PLAIN)
  order = [5, 0, 7, 3, 2]
  for workers in (0, 2):
    batches = list(data.iterate_batches(ds, prep, 2, indices=order, num_workers=workers))
    for images, labels, idx in batches:
      real = data.batch_valid_mask(idx)
      assert labels[real].tolist() == ds.labels[idx[real]].tolist()
      np.testing.assert_array_equal(images[real, ..., 0],
                                    ds.images[idx[real]] / np.float32(255))
    assert [b[1].tolist() for b in batches] == [[2, 0], [1, 0], [2, -1]]


def test_an_array_dataset_is_labelled_only_when_it_has_labels_all_set():
  """No samples, no labels: an empty ArrayDataset is unlabelled, as is one with any -1 label
  (a mutation audit: np.all of no labels is True, and an empty set read as labelled)."""
  empty = data.ArrayDataset(np.zeros((0, 4, 4), np.uint8), np.zeros((0,), np.int32))
  assert len(empty) == 0 and empty.labelled is False
  some = data.ArrayDataset(np.zeros((2, 4, 4), np.uint8), [0, -1], classes=("a",))
  assert some.labelled is False and (some.label(0), some.label(1)) == (0, None)
  assert data.ArrayDataset(np.zeros((2, 4, 4), np.uint8), [0, 0], classes=("a",)).labelled


def test_single_channel_array_images_load_as_grayscale():
  """`ArrayDataset` takes `[N, H, W, 1]` (PIL cannot make an image of such an array as it is)."""
  images = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4, 1)
  ds = data.ArrayDataset(images, np.array([0, 1]))
  image = ds.load(1)
  assert image.mode == "L" and np.asarray(image).tolist() == images[1, ..., 0].tolist()
  prep = Preprocessing(input_size=4, crop_pct=1.0, **PLAIN)
  got = next(data.iterate_batches(ds, prep, 2))[0]
  np.testing.assert_array_equal(got[..., 1], images[..., 0] / np.float32(255))


def test_pad_to_batch():
  images = np.ones((3, 2, 2, 1), np.float32)
  out, labels, idx, valid = data.pad_to_batch(images, np.array([4, 5, 6]), np.array([7, 8, 9]), 5)
  assert out.shape == (5, 2, 2, 1) and out[3:].sum() == 0 and out[:3].min() == 1
  assert labels.tolist() == [4, 5, 6, -1, -1] and idx.tolist() == [7, 8, 9, -1, -1]
  assert valid.tolist() == [True] * 3 + [False] * 2
  with pytest.raises(ValueError, match="more than batch_size"):
    data.pad_to_batch(images, np.zeros(3), np.zeros(3), 2)


def test_batches_mask_index_zero_as_real_and_refuse_negative_indices():
  """Index 0 is a real sample (only -1 pads); a negative index would wrap to the last sample
  and be masked as padding; a dataset smaller than one batch yields nothing when dropping."""
  ds = _array_ds(3)
  prep = Preprocessing(input_size=8, crop_pct=1.0, **PLAIN)
  assert data.batch_valid_mask(np.array([0, 2, -1])).tolist() == [True, True, False]
  _, labels, idx = next(data.iterate_batches(ds, prep, 4))
  assert data.batch_valid_mask(idx).tolist() == [True, True, True, False]
  assert labels.tolist() == [0, 1, 2, -1]
  for bad in ([-1], [0, -2]):
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 3\)"):
      data.iterate_batches(ds, prep, 2, indices=bad)
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 3\)"):
      data.dataset_fingerprint(ds, bad)
  assert not list(data.iterate_batches(ds, prep, 4, drop_remainder=True))
  assert len(list(data.iterate_batches(ds, prep, 3, drop_remainder=True))) == 1


# ----------------------------------------------------------------------------------------------
# Balanced subsets.
# ----------------------------------------------------------------------------------------------


def test_balanced_subset_counts_and_determinism():
  labels = np.repeat(np.arange(10), 50)
  sub = data.balanced_subset(labels, 25, seed=0)
  counts = np.bincount(labels[sub], minlength=10)
  assert sub.size == 25 and np.unique(sub).size == 25
  assert sorted(counts.tolist()) == [2] * 5 + [3] * 5
  np.testing.assert_array_equal(sub, data.balanced_subset(labels, 25, seed=0))
  assert not np.array_equal(sub, data.balanced_subset(labels, 25, seed=1))
  first = np.concatenate([np.flatnonzero(labels == c)[:q] for c, q in enumerate(counts)])
  assert not np.array_equal(np.sort(first), sub)  # random, not the first files per class
  assert set(labels[data.balanced_subset(labels, 10, seed=5)]) == set(range(10))
  np.testing.assert_array_equal(data.balanced_subset(labels, 500, seed=2), np.arange(500))


def test_balanced_subset_redistributes_small_classes():
  labels = np.array([0] * 2 + [1] * 100 + [2] * 100)
  counts = np.bincount(labels[data.balanced_subset(labels, 30, seed=0)])
  assert counts.tolist() == [2, 14, 14]
  counts = np.bincount(labels[data.balanced_subset(labels, 31, seed=0)])
  assert counts[0] == 2 and sorted(counts[1:].tolist()) == [14, 15]


@pytest.mark.parametrize("sizes, n, want", [
    ([10, 8, 8, 12], 34, [9, 8, 8, 9]),        # the 12-image class got 8 while the 10 got 10
    ([2, 2, 13, 7, 11, 3, 17], 48, None),     # 13 and 17 left with 11-12 each, not 13 and 10
    ([5, 50, 50], 60, [5, 28, 27]),
])
def test_balanced_subset_is_as_even_as_the_class_sizes_allow(sizes, n, want):
  labels = np.repeat(np.arange(len(sizes)), sizes)
  for seed in range(40):
    got = np.bincount(labels[data.balanced_subset(labels, n, seed)], minlength=len(sizes))
    assert got.sum() == n and np.all(got <= sizes)
    room = got < np.array(sizes)                     # classes that could have given more
    assert got[room].max() - got[room].min() <= 1 and got[room].min() >= got[~room].max(
        initial=0), (seed, got)
    if want is not None:
      assert sorted(got[room]) == sorted(np.array(want)[room])


def test_balanced_subset_draws_of_a_seed_are_pinned():
  """Estimates record a selection as `subset_seed`: a seed must go on drawing the images it
  drew. A share that fills every class exactly (6 of 3 x 4) draws no remainder: drawing one
  anyway (all classes +1 from a level lower) gives the same counts but consumes the stream,
  and other images."""
  labels = np.repeat(np.arange(3), 4)
  assert data.balanced_subset(labels, 6, 0).tolist() == [2, 3, 4, 5, 8, 11]
  assert data.balanced_subset(labels, 7, 0).tolist() == [1, 2, 4, 7, 8, 10, 11]


def test_balanced_subset_errors():
  labels = np.array([0, 0, 1, 1])
  for n in (0, -1, 2.0, True):
    with pytest.raises(ValueError, match=rf"^subset size n must be a positive int, got {n}$"):
      data.balanced_subset(labels, n, seed=0)
  with pytest.raises(ValueError, match=r"^subset size n=5 exceeds the dataset size 4$"):
    data.balanced_subset(labels, 5, seed=0)
  assert sorted(data.balanced_subset(labels, 4, seed=0).tolist()) == [0, 1, 2, 3]
  with pytest.raises(ValueError, match="labelled"):
    data.balanced_subset(np.array([-1, -1]), 1, seed=0)


# ----------------------------------------------------------------------------------------------
# Digits.
# ----------------------------------------------------------------------------------------------


def test_digits_arrays_and_stratified_split():
  images, labels = digits.load_digits_arrays()
  assert images.shape == (1797, 8, 8) and images.dtype == np.uint8
  assert images.min() == 0 and images.max() == 255 and labels.shape == (1797,)
  train, test = digits.digits_split()
  assert np.intersect1d(train, test).size == 0 and train.size + test.size == 1797
  for c in range(10):
    n_c = int((labels == c).sum())
    assert int((labels[test] == c).sum()) == round(n_c * 0.2)
  again = digits.digits_split(seed=0)
  np.testing.assert_array_equal(test, again[1])
  assert not np.array_equal(test, digits.digits_split(seed=1)[1])
  with pytest.raises(ValueError, match="test_fraction"):
    digits.digits_split(test_fraction=1.0)


def test_digits_read_from_the_shipped_csv_equal_sklearn_load_digits(monkeypatch):
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  bunch = load_digits()
  want = np.round(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
  images, labels = digits.load_digits_arrays()
  np.testing.assert_array_equal(images, want)
  np.testing.assert_array_equal(labels, bunch.target)
  labels[0] = 9                           # callers get copies: the cached table is untouched
  assert digits.load_digits_arrays()[1][0] == bunch.target[0]
  # Without the CSV (no sklearn package directory found), the sklearn loader gives the same.
  digits._digits_table.cache_clear()
  monkeypatch.setattr(digits.importlib.util, "find_spec", lambda name: None)
  try:
    fb_images, fb_labels = digits.load_digits_arrays()
  finally:
    digits._digits_table.cache_clear()
  np.testing.assert_array_equal(fb_images, want)
  np.testing.assert_array_equal(fb_labels, bunch.target)


def test_digits_preprocessing_matches_embedded_model():
  from vitprune.registry import get_config
  prep = digits.digits_preprocessing(32)
  assert prep == get_config("test_tiny_vit").preprocessing
  images, labels, idx = next(digits.digits_batches("test", 16, limit=20))
  assert images.shape == (16, 32, 32, 3) and images.min() >= -1.0 and images.max() <= 1.0
  _, test = digits.digits_split()
  assert np.isin(idx, test).all()
  np.testing.assert_array_equal(labels, digits.load_digits_arrays()[1][idx])
  batches = list(digits.digits_batches("test", 16, limit=20))
  valid = np.concatenate([data.batch_valid_mask(b[2]) for b in batches])
  assert valid.sum() == 20 and len(batches) == 2


def test_write_digits_imagefolder_round_trip(tmp_path):
  root = digits.write_digits_imagefolder(tmp_path / "digits", split="test", limit=30)
  assert sorted(os.listdir(tmp_path)) == ["digits"]  # no temp dirs left behind
  ds = data.ImageFolder(root)
  images, labels = digits.load_digits_arrays()
  idx = np.array([int(os.path.splitext(os.path.basename(f))[0]) for f in ds.files])
  assert ds.classes == digits.DIGITS_CLASSES and len(ds) == 30
  assert np.isin(idx, digits.digits_split()[1]).all()
  np.testing.assert_array_equal(ds.labels, labels[idx])
  for i in range(3):
    np.testing.assert_array_equal(np.asarray(ds.load(i)), images[idx[i]])
  prep = digits.digits_preprocessing()
  from_disk = np.concatenate([b[0] for b in data.iterate_batches(ds, prep, 30)])
  from_mem = np.concatenate([b[0] for b in data.iterate_batches(
      digits.digits_dataset(), prep, 30, indices=idx)])
  np.testing.assert_array_equal(from_disk, from_mem)
  with pytest.raises(FileExistsError):
    digits.write_digits_imagefolder(root, limit=10)
  digits.write_digits_imagefolder(root, limit=10, overwrite=True)
  assert len(data.ImageFolder(root)) == 10 and sorted(os.listdir(tmp_path)) == ["digits"]


def test_fingerprints(tmp_path):
  images, labels = digits.load_digits_arrays()
  fp = data.dataset_fingerprint((images, labels), [3, 1, 2])
  assert fp == data.dataset_fingerprint(digits.digits_dataset(), [1, 2, 3, 3])
  assert fp != data.dataset_fingerprint((images, labels), [1, 2, 4])
  assert len(fp) == 64
  root = digits.write_digits_imagefolder(tmp_path / "d", limit=10)
  ds = data.ImageFolder(root)
  before = data.dataset_fingerprint(ds)
  assert before == data.dataset_fingerprint(data.ImageFolder(root))
  assert before != data.dataset_fingerprint(ds, [0, 1])
  with open(ds.path(0), "ab") as f:
    f.write(b"\0")
  assert before != data.dataset_fingerprint(ds)
  info = data.dataset_info(ds, name="digits-test")
  assert info.num_examples == 10 and info.kind == "imagefolder" and info.labelled
  assert info.to_dict()["classes"] == list(digits.DIGITS_CLASSES)


def test_fingerprints_of_names_with_tabs_and_line_breaks(tmp_path):
  """'a.png<TAB>N<LF>b.png' named one file wrote the fingerprint lines of two: a folder of one
  image had the fingerprint of a folder of two. Such names are quoted; others keep the digest
  estimates recorded (the lines 'name<TAB>size<LF>')."""
  import hashlib  # pylint: disable=g-import-not-at-top
  png = io.BytesIO()
  Image.fromarray(np.zeros((8, 8), np.uint8)).save(png, "PNG")
  png, two, one = png.getvalue(), tmp_path / "two", tmp_path / "one"
  two.mkdir(), one.mkdir()
  (two / "a.png").write_bytes(png)
  (two / "b.png").write_bytes(png)
  (one / f"a.png\t{len(png)}\nb.png").write_bytes(png)
  ds_two, ds_one = data.ImageFolder(str(two)), data.ImageFolder(str(one))
  assert len(ds_two) == 2 and len(ds_one) == 1
  assert data.dataset_fingerprint(ds_two) != data.dataset_fingerprint(ds_one)
  old = hashlib.sha256(b"imagefolder labelled=False\n" + b"".join(
      f"{n}\t{len(png)}\n".encode() for n in ("a.png", "b.png"))).hexdigest()
  assert data.dataset_fingerprint(ds_two) == old
  (two / "c\\d.png").write_bytes(png)          # a backslash is kept as it is
  old = hashlib.sha256(b"imagefolder labelled=False\n" + b"".join(
      f"{n}\t{len(png)}\n".encode() for n in ("a.png", "b.png", "c\\d.png"))).hexdigest()
  assert data.dataset_fingerprint(data.ImageFolder(str(two))) == old


def test_fingerprints_cover_labels_class_names_and_distinct_selections(tmp_path):
  """Labels are part of a dataset's identity: the same images under other labels (arrays, or
  a folder read with the model's names in another order) fingerprint differently; an
  unlabelled folder does not depend on names it cannot use; duplicates count once."""
  images, labels = digits.load_digits_arrays()
  fp = data.dataset_fingerprint((images, labels), [0, 1, 2])
  assert fp != data.dataset_fingerprint((images, (labels + 1) % 10), [0, 1, 2])
  assert fp != data.dataset_fingerprint(images, [0, 1, 2])
  for c in ("a", "b"):
    _png(str(tmp_path / "lab" / c / "x.png"), _gray(3, 3))
  ab = data.ImageFolder(tmp_path / "lab", class_names=["a", "b"])
  ba = data.ImageFolder(tmp_path / "lab", class_names=["b", "a"])
  assert ab.labels.tolist() == [0, 1] and ba.labels.tolist() == [1, 0]
  assert data.dataset_fingerprint(ab) != data.dataset_fingerprint(ba)
  _png(str(tmp_path / "flat" / "x.png"), _gray(3, 3))
  named = data.ImageFolder(tmp_path / "flat", class_names=["a", "b"])
  assert not named.labelled and not named.labelled_by_name
  assert data.dataset_fingerprint(named) == data.dataset_fingerprint(
      data.ImageFolder(tmp_path / "flat"))
  info = data.dataset_info(ab, [1, 1, 0, 1])
  assert info.num_examples == 2 and info.fingerprint == data.dataset_fingerprint(ab)
  assert data.dataset_info(digits.digits_dataset(), [5, 5]).num_examples == 1


def test_a_name_starting_with_a_quote_is_quoted_in_the_fingerprint(tmp_path):
  """The documented lines: a name that starts with a quote is JSON-quoted like one with a tab
  (a quoted name starts with a quote, a plain one never does)."""
  import hashlib  # pylint: disable=g-import-not-at-top
  _png(str(tmp_path / '"q.png'), _gray(3, 3))
  size = os.path.getsize(tmp_path / '"q.png')
  want = hashlib.sha256(b"imagefolder labelled=False\n" + json.dumps('"q.png').encode()
                        + f"\t{size}\n".encode()).hexdigest()
  assert data.dataset_fingerprint(data.ImageFolder(tmp_path)) == want


def test_a_name_with_a_line_feed_alone_cannot_forge_the_class_names_line(tmp_path):
  """A class folder named "class_names=['c']<LF>c", read by position, wrote the lines of a
  folder 'c' read by the model's name 'c' (same image, same label): one fingerprint."""
  forged = "class_names=['c']\nc"
  for root, folder in (("forged", forged), ("named", "c")):
    _png(str(tmp_path / root / folder / "b.png"), _gray(3, 3))
  forged_ds = data.ImageFolder(tmp_path / "forged")
  named_ds = data.ImageFolder(tmp_path / "named", class_names=["c"])
  assert forged_ds.files == (f"{forged}/b.png",) and forged_ds.labels.tolist() == [0]
  assert named_ds.labels.tolist() == [0]
  assert data.dataset_fingerprint(forged_ds) != data.dataset_fingerprint(named_ds)


def test_array_fingerprints_cover_the_selected_images_only():
  """An array subset is identified by its own pixels: two selections of equal labels (or of
  unlabelled images) differ, and pixels outside the selection do not count."""
  images, labels = digits.load_digits_arrays()
  same = np.flatnonzero(labels == labels[0])[:2]
  assert data.dataset_fingerprint((images, labels), same[:1]) != data.dataset_fingerprint(
      (images, labels), same[1:])
  assert data.dataset_fingerprint(images, [0]) != data.dataset_fingerprint(images, [1])
  other = images.copy()
  other[5] = 255 - other[5]
  assert data.dataset_fingerprint(other, [0, 1]) == data.dataset_fingerprint(images, [0, 1])
  assert data.dataset_fingerprint(other, [5]) != data.dataset_fingerprint(images, [5])


def test_the_content_digest_covers_the_file_names(tmp_path):
  """`images_content_sha256` hashes each file with its name: the same bytes under another
  name are other data."""
  _png(str(tmp_path / "one" / "a.png"), _gray(3, 3, 9))
  shutil.copytree(tmp_path / "one", tmp_path / "two")
  os.rename(tmp_path / "two" / "a.png", tmp_path / "two" / "b.png")
  one, two = (data.ImageFolder(tmp_path / d) for d in ("one", "two"))
  assert data.images_content_sha256(one) != data.images_content_sha256(two)
  assert data.images_content_sha256(one) == data.images_content_sha256(
      data.ImageFolder(tmp_path / "one"))


def test_imagefolder_num_classes_without_names_and_foreign_overwrite(tmp_path):
  root = digits.write_digits_imagefolder(tmp_path / "d", limit=20)
  ds = data.ImageFolder(root, num_classes=10)      # exactly the model's classes: by position
  np.testing.assert_array_equal(ds.labels, data.ImageFolder(root).labels)
  assert not ds.labelled_by_name and ds.folder_classes == digits.DIGITS_CLASSES
  with pytest.raises(ValueError, match="has 10 class folders .* the model has 5 classes"):
    data.ImageFolder(root, num_classes=5)
  with pytest.raises(ValueError, match="num_classes must be a non-negative int"):
    data.ImageFolder(root, num_classes=-1)
  foreign = tmp_path / "mine"
  foreign.mkdir()
  (foreign / "NOTES.txt").write_text("x")
  with pytest.raises(FileExistsError, match="refusing to replace"):
    digits.write_digits_imagefolder(foreign, limit=10, overwrite=True)
  assert os.listdir(foreign) == ["NOTES.txt"]


def test_a_digits_folder_without_its_inventory_keeps_a_users_images(tmp_path):
  """`digits_images --overwrite` into a digits folder whose inventory was lost deleted a user's
  NOTES.txt, a photo and a folder added to a class folder: its layout (<class>/<index>.png)
  refuses them; holding nothing else, the folder is replaced (by fewer images)."""
  from tests.conftest import lose_inventory_beside_notes  # pylint: disable=g-import-not-at-top
  from vitprune import atomic  # pylint: disable=g-import-not-at-top
  root = digits.write_digits_imagefolder(tmp_path / "d", split="all")    # every class and index
  lose_inventory_beside_notes(root, digits.is_digits_imagefolder)
  photo = os.path.join(root, "3", "my_photo.png")
  os.rename(os.path.join(root, "NOTES.txt"), photo)
  os.mkdir(os.path.join(root, "3", "mine"))
  with pytest.raises(atomic.ForeignOutputError, match=r"it holds 3/mine/, 3/my_photo\.png, which "
                                                      r"vitprune did not write there \(its list"):
    digits.write_digits_imagefolder(root, limit=10, overwrite=True)
  assert os.path.isfile(photo) and len(data.ImageFolder(root)) == 1798
  os.remove(photo)
  os.rmdir(os.path.join(root, "3", "mine"))
  digits.write_digits_imagefolder(root, limit=10, overwrite=True)
  assert len(data.ImageFolder(root)) == 10


def test_digits_images_cli_counts_one_digit_in_the_singular(tmp_path, capsys):
  """`digits_images --limit=1` printed 'wrote 1 digits (test split)'."""
  from experiments import common, digits_images   # pylint: disable=g-import-not-at-top
  out = tmp_path / "imgs"
  common.run_in_process(digits_images.main, digits_images.define_flags,
                        [f"--out={out}", "--limit=1"])
  assert capsys.readouterr().out == f"wrote 1 digit (test split) to {out}\n"
  assert len(data.ImageFolder(out)) == 1


def test_digits_images_cli_writes_the_split_and_replaces_only_its_own_folder(tmp_path, capsys):
  from experiments import common, digits_images   # pylint: disable=g-import-not-at-top
  out = tmp_path / "imgs"
  common.run_in_process(digits_images.main, digits_images.define_flags,
                        [f"--out={out}", "--limit=20", "--seed=3"])
  assert capsys.readouterr().out == f"wrote 20 digits (test split) to {out}\n"
  ds = data.ImageFolder(out)
  idx = sorted(int(os.path.splitext(os.path.basename(f))[0]) for f in ds.files)
  test = digits.digits_split(seed=0)[1]        # the split of --data=digits; --seed: the subset
  labels = digits.load_digits_arrays()[1]
  assert idx == sorted(test[data.balanced_subset(labels[test], 20, 3)].tolist())
  common.run_in_process(digits_images.main, digits_images.define_flags,
                        [f"--out={out}", "--split=all", "--overwrite"])
  assert len(data.ImageFolder(out)) == len(labels)
  assert sorted(os.listdir(tmp_path)) == ["imgs"]


def test_digits_images_seed_draws_the_subset_of_the_bundled_split(tmp_path):
  """`digits_images --seed=1` also moved the train/test split: 84 of 100 "test" digits were the
  bundled model's training images. The seed now draws only the subset, as `estimate --seed`."""
  from vitprune import estimate as estimate_lib  # pylint: disable=g-import-not-at-top
  root = digits.write_digits_imagefolder(tmp_path / "d", split="test", limit=100, seed=1)
  files = sorted(int(os.path.basename(p)[:-4]) for p in glob.glob(f"{root}/*/*.png"))
  want = estimate_lib.load_eval_data("digits", num_images=100, seed=1).indices
  assert files == sorted(int(i) for i in want)
  assert set(files) <= set(digits.digits_split(0)[1].tolist())


@pytest.mark.parametrize("target, message", [
    ("/nonexistent/mount/4", "is a link to nothing (dangling symbolic link): a folder on "
                             "storage that is not there?"),
    ("4", "is a symbolic link that cannot be followed (Too many levels of symbolic links)")])
def test_a_folder_link_that_leads_nowhere_is_refused(tmp_path, target, message):
  """A class folder linked to storage that is not mounted was not a class: its images were
  left out and the accuracy reported over the other classes (exit 0, no warning); the same
  for such a folder inside a class."""
  for c in "0123":
    _png(str(tmp_path / c / "a.png"), _gray(3, 3))
  os.symlink(target, tmp_path / "4")
  with pytest.raises(ValueError, match=re.escape(f"'{tmp_path}/4' {message}")):
    data.ImageFolder(tmp_path, class_names=[str(d) for d in range(10)])
  with pytest.raises(ValueError, match=re.escape(f"'{tmp_path}/4' {message}")):
    data.ImageFolder(tmp_path, labelled=False)
  os.unlink(tmp_path / "4")
  os.symlink(target, tmp_path / "3" / "4")
  with pytest.raises(ValueError, match=re.escape(f"'{tmp_path}/3/4' {message}")):
    data.ImageFolder(tmp_path)
  os.unlink(tmp_path / "3" / "4")
  os.symlink(target if target.startswith("/") else "v1.2", tmp_path / "v1.2")   # a version
  with pytest.raises(ValueError, match=re.escape(f"'{tmp_path}/v1.2' {message}")):
    data.ImageFolder(tmp_path)
  os.unlink(tmp_path / "v1.2")
  for name in ("notes.txt", ".cache"):      # not named like a folder, or hidden: as before
    os.symlink("/nonexistent/x", tmp_path / name)
    os.symlink("/nonexistent/x", tmp_path / "3" / name)
  assert len(data.ImageFolder(tmp_path)) == 4


def test_a_digits_folder_is_checked_by_its_marker_where_the_digits_table_is_missing(
    tmp_path, monkeypatch):
  """A board without scikit-learn's digits table cannot list the weights' training split: the
  folder's marker (split, split seed) decides instead of a traceback."""
  train = digits.write_digits_imagefolder(tmp_path / "train", split="train", limit=10)
  test = digits.write_digits_imagefolder(tmp_path / "test", split="test", limit=10)
  meta = {"dataset": "sklearn_digits", "split": {"seed": 0, "test_fraction": 0.2}}

  def missing(*args, **kw):
    raise ModuleNotFoundError("No module named 'sklearn'")

  monkeypatch.setattr(digits, "digits_split", missing)
  monkeypatch.setattr(digits, "load_digits_arrays", missing)      # (no pixels to compare)
  digits.check_digits_folder(str(test), meta, "W")
  digits.check_digits_folder(str(tmp_path), meta, "W")     # no marker: nothing to judge it by
  digits.check_digits_folder(str(train), {"dataset": "other"}, "W")       # not digits weights
  with pytest.raises(ValueError, match=re.escape(
      f"{train} holds the digits' train split of seed 0 (its .vitprune-imagefolder.json says "
      "so), and W were trained on the split of seed 0 (test fraction 0.2): some of its images "
      "are their training data")):
    digits.check_digits_folder(str(train), meta, "W")
  with pytest.raises(ValueError, match="holds the digits' test split of seed 0 .*, and W were "
                                       "trained on the split of seed 1"):
    digits.check_digits_folder(str(test), {**meta, "split": {"seed": 1}}, "W")


def test_digits_re_saved_as_jpeg_are_found_by_their_pixels(tmp_path):
  """Training digits re-saved as RGB JPEG into a folder of its own (no marker) matched no digit
  exactly and were scored as held-out images (a probe: accuracy 1.0000 on 50 training digits).
  Each lossy copy is the one digit within `_LOSSY_COPY_LEVELS` grey levels: no two digits are
  that close to one image, and every digit's quality-95 copy finds itself."""
  images = digits.load_digits_arrays()[0].astype(np.int16).reshape(-1, 64)
  closest = min(int(np.abs(images[i + 1:] - images[i]).max(axis=1).min())
                for i in range(len(images) - 1))
  assert closest > 2 * digits._LOSSY_COPY_LEVELS   # pylint: disable=protected-access
  every = tmp_path / "every"
  digits.write_digits_imagefolder(every, split="all")
  for png in sorted(every.glob("*/*.png")):
    with Image.open(png) as img:
      img.convert("RGB").save(png.with_suffix(".jpg"), quality=95)
    png.unlink()
  jpgs = sorted(every.glob("*/*.jpg"))
  assert len(jpgs) == len(images)
  assert digits.digits_copied_into(str(every)) == set(range(len(images)))
  train, test = (tmp_path / "train_jpg", tmp_path / "test_jpg")
  split = digits.digits_split(0)
  for folder, part in ((train, split[0]), (test, split[1])):
    for i in part[:50]:
      src = every / str(int(digits.load_digits_arrays()[1][i])) / f"{int(i):04d}.jpg"
      (folder / src.parent.name).mkdir(parents=True, exist_ok=True)
      shutil.copy(src, folder / src.parent.name / f"photo_{int(i)}.jpg")
  tinted = tmp_path / "tinted" / "0"                 # a colour-shifted copy: still that digit
  tinted.mkdir(parents=True)
  grey = digits.load_digits_arrays()[0][split[0][0]].astype(np.int16)
  rgb = np.stack([grey + 20, grey, grey - 20], axis=-1).clip(0, 255).astype(np.uint8)
  Image.fromarray(rgb).save(tinted / "t.png")
  assert digits.digits_copied_into(str(tinted.parent)) == {int(split[0][0])}
  # A JPEG padded past 64 KiB (an ICC profile) was never scanned (a probe: scored at 1.0000).
  padded = tmp_path / "padded" / "0"
  padded.mkdir(parents=True)
  Image.fromarray(grey.astype(np.uint8)).convert("RGB").save(
      padded / "p.jpg", quality=95, icc_profile=bytes(70000))
  assert os.path.getsize(padded / "p.jpg") > 1 << 16
  assert digits.digits_copied_into(str(padded.parent)) == {int(split[0][0])}
  meta = {"dataset": "sklearn_digits", "split": {"seed": 0, "test_fraction": 0.2}}
  digits.check_digits_folder(str(test), meta, "W")                     # held out: scored
  with pytest.raises(ValueError, match=re.escape(
      f"50 of the 50 digits in {train} are training images of W (digits split of seed 0")):
    digits.check_digits_folder(str(train), meta, "W")


def test_a_folder_whose_pixels_find_some_digits_but_not_all_is_judged_by_its_marker(tmp_path):
  """Re-saved at PIL's default JPEG quality, some digits move beyond `_LOSSY_COPY_LEVELS`: a
  folder of the 'all' split whose test digit was found and whose training digit was not was
  scored (the marker was asked only when no digit was found at all; a review)."""
  root = tmp_path / "mixed"
  digits.write_digits_imagefolder(root, split="all")
  train, test = digits.digits_split(0)
  keep = {f"{int(train[0]):04d}", f"{int(test[0]):04d}"}
  for png in sorted(root.glob("*/*.png")):
    if png.stem not in keep:
      png.unlink()
    elif png.stem == f"{int(train[0]):04d}":           # the training digit, heavily re-saved
      with Image.open(png) as img:
        img.convert("L").save(png.with_suffix(".jpg"), quality=5)
      png.unlink()
  assert digits.digits_copied_into(str(root)) == {int(test[0])}
  meta = {"dataset": "sklearn_digits", "split": {"seed": 0, "test_fraction": 0.2}}
  with pytest.raises(ValueError, match=re.escape(
      f"{root} holds the digits' all split of seed 0 (its .vitprune-imagefolder.json says so)")):
    digits.check_digits_folder(str(root), meta, "W")
  for jpg in root.glob("*/*.jpg"):                     # only found digits: the pixels decide
    jpg.unlink()
  digits.check_digits_folder(str(root), meta, "W")


def test_a_test_folder_within_the_weights_held_out_digits_is_scored_by_its_marker(tmp_path):
  """Weights of test fraction 0.3 hold out every digit of the 0.2 test split of their seed: a
  digits_images test folder with one image of the user's (8x8, no digit: the marker decides)
  was refused as their training data (a review)."""
  root = digits.write_digits_imagefolder(tmp_path / "t", split="test", limit=20)
  icon = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
  Image.fromarray(icon).save(os.path.join(root, "3", "icon.png"))
  assert digits._scan_for_digits(root)[1] == 1       # pylint: disable=protected-access
  for fraction in (0.2, 0.3):
    digits.check_digits_folder(root, {"dataset": "sklearn_digits",
                                      "split": {"seed": 0, "test_fraction": fraction}}, "W")
  for png in glob.glob(os.path.join(root, "*", "[0-9]*.png")):   # the icon alone: the marker
    os.unlink(png)
  digits.check_digits_folder(root, {"dataset": "sklearn_digits",
                                    "split": {"seed": 0, "test_fraction": 0.3}}, "W")
  with pytest.raises(ValueError, match="holds the digits' test split of seed 0 .* trained on "
                                       r"the split of seed 1 \(test fraction 0.3\)"):
    digits.check_digits_folder(root, {"dataset": "sklearn_digits",
                                      "split": {"seed": 1, "test_fraction": 0.3}}, "W")


def test_a_digits_training_folder_re_saved_with_heavy_loss_is_refused_by_its_marker(tmp_path):
  """Training digits re-saved as JPEG of quality 10 no longer lie near the table's 8x8 pixels:
  they were scored (0.9944 on 1438 training digits) although the folder's marker says
  'train'."""
  train = tmp_path / "train"
  digits.write_digits_imagefolder(train, split="train", limit=10)
  meta = {"dataset": "sklearn_digits", "split": {"seed": 0, "test_fraction": 0.2}}
  for png in sorted(train.glob("*/*.png")):
    with Image.open(png) as img:
      img.convert("L").save(png.with_suffix(".jpg"), quality=10)
    png.unlink()
  assert digits.digits_copied_into(str(train)) == set()         # the pixels no longer tell
  with pytest.raises(ValueError, match=re.escape(
      f"{train} holds the digits' train split of seed 0 (its .vitprune-imagefolder.json says "
      "so)")):
    digits.check_digits_folder(str(train), meta, "W")


def test_an_older_digits_marker_names_its_split_seed_seed(tmp_path):
  """Before `split_seed`, `digits_images --seed=3` wrote the test split of seed 3 with a marker
  {"split", "seed"}: read as split seed 0, weights of split seed 3 refused a folder of their own
  held-out digits. The pixels decide where they find digits; an old marker's seed otherwise."""
  root = digits.write_digits_imagefolder(tmp_path / "t3", "test", split_seed=3, limit=20)
  marker = os.path.join(root, digits.DIGITS_MARKER)
  doc = json.load(open(marker))
  json.dump({"format": doc["format"], "split": "test", "seed": 3}, open(marker, "w"))
  meta = {"dataset": "sklearn_digits", "split": {"seed": 3, "test_fraction": 0.2}}
  digits.check_digits_folder(root, meta, "W")                  # the pixels: all held out
  for png in glob.glob(os.path.join(root, "*", "*.png")):     # no pixels to go by: the marker
    os.unlink(png)
  digits.check_digits_folder(root, meta, "W")
  with pytest.raises(ValueError, match="holds the digits' test split of seed 3 .*trained on "
                                       "the split of seed 0"):
    digits.check_digits_folder(root, dict(meta, split={"seed": 0}), "W")


def test_a_dangling_link_named_as_a_class_is_an_error_whatever_its_name(tmp_path):
  """A class folder linked from storage that is not mounted, named mr.pig (read like a file
  name: `_check_folder_link` let it by), was left out without a word: its class vanished from
  the evaluation (a probe)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  root = tmp_path / "d"
  (root / "cat").mkdir(parents=True)
  Image.new("RGB", (8, 8)).save(root / "cat" / "a.png")
  (root / "mr.pig").symlink_to(tmp_path / "not_mounted" / "pigs")
  with pytest.raises(ValueError, match=re.escape(
      f"{str(root / 'mr.pig')!r} is a link to nothing (dangling symbolic link, or a loop), "
      "named as a class of the model")):
    data.ImageFolder(str(root), class_names=["cat", "mr.pig"])
  assert data.ImageFolder(str(root), class_names=["cat", "dog"]).classes == ("cat", "dog")


def test_class_folders_match_the_models_names_in_either_unicode_spelling(tmp_path):
  """A folder made on macOS names 'cafe' with an 'e' and a combining acute (NFD), the model the
  precomposed one (NFC): both print alike, and the folder was refused as not a class of the
  model. Matched as NFC now; the same class spelled both ways is refused, both names shown."""
  nfc, nfd = "caf\u00e9", "cafe\u0301"
  assert nfc != nfd and unicodedata.normalize("NFC", nfd) == nfc
  root = tmp_path / "d"
  for folder in (nfd, "tea"):
    _png(str(root / folder / "a.png"), _gray(3, 3))
  ds = data.ImageFolder(str(root), class_names=["tea", nfc])
  assert ds.classes == ("tea", nfc) and [ds.label(i) for i in range(len(ds))] == [1, 0]
  _png(str(root / nfc / "b.png"), _gray(3, 3))
  with pytest.raises(ValueError, match=re.escape(
      f"class folders 'cafe\\u0301' and 'caf\\xe9' in {str(root)!r} are both the model's "
      f"class {nfc!r} (one name in two Unicode spellings): merge them")):
    data.ImageFolder(str(root), class_names=["tea", nfc])
  with pytest.raises(ValueError, match="are not among the model's class names"):
    data.ImageFolder(str(root), class_names=["tea", "coffee"])
  os.remove(root / nfd / "a.png")
  os.rmdir(root / nfd)                  # the other way round: a model that spells it NFD
  ds = data.ImageFolder(str(root), class_names=[nfd, "tea"])
  assert ds.classes == (nfd, "tea") and [ds.label(i) for i in range(len(ds))] == [0, 1]


def test_an_output_named_like_an_image_is_refused_inside_the_image_folder(tmp_path):
  """run_deployed --output=IMAGES/3/r.png was read back as an image and broke every later run;
  a .json there is never read (ImageFolder reads IMG_EXTENSIONS only) and stays allowed."""
  (tmp_path / "imgs" / "3").mkdir(parents=True)
  images = str(tmp_path / "imgs")
  with pytest.raises(ValueError, match=re.escape(
      f"--output={images}/3/r.PNG is inside --images={images} and named like an image")):
    data.check_not_read_as_an_image(f"{images}/3/r.PNG", images, "output", "images")
  for fine in (f"{images}/3/r.json", f"{images}/3/.r.png", str(tmp_path / "r.png"),
               str(tmp_path / "imgs2" / "r.png"), f"{images}/r.json"):
    data.check_not_read_as_an_image(fine, images, "output", "images")
  data.check_not_read_as_an_image(f"{images}/r.png", str(tmp_path / "absent"), "o", "i")
  # A .json in a folder the write makes: the next run read that folder as a class (a flat
  # folder became a labelled one; a labelled one was refused: a probe).
  with pytest.raises(ValueError, match=re.escape(
      f"--output={images}/res/p.json is inside --images={images}, in a folder that does not "
      "exist yet: made there, the next run would read it as a class of images")):
    data.check_not_read_as_an_image(f"{images}/res/p.json", images, "output", "images")
  # A class folder linked from elsewhere is read too: a plot written where it points was read
  # as an image of that class.
  store = tmp_path / "store5"
  store.mkdir()
  (tmp_path / "imgs" / "5").symlink_to(store)
  assert data.read_folders(images) == [images, f"{images}/5"]
  with pytest.raises(ValueError, match="named like an image"):
    data.check_not_read_as_an_image(str(store / "plot.png"), images, "output", "images")
  data.check_not_read_as_an_image(str(store / "r.json"), images, "output", "images")
  # ... at any depth (a folder linked inside a class folder is read too), and not through a
  # hidden link, which is never read (a review).
  extra, work = tmp_path / "extra", tmp_path / "work"
  extra.mkdir(), work.mkdir()
  (tmp_path / "imgs" / "3" / "more").symlink_to(extra)
  (tmp_path / "imgs" / ".cache").symlink_to(work)
  assert sorted(data.read_folders(images)) == sorted([images, f"{images}/5",
                                                      f"{images}/3/more"])
  with pytest.raises(ValueError, match="named like an image"):
    data.check_not_read_as_an_image(str(extra / "plot.png"), images, "output", "images")
  data.check_not_read_as_an_image(str(work / "results" / "plot.png"), images, "output",
                                  "images")


def test_the_digits_still_import_from_vitprune_data_with_a_warning():
  """The digits moved to `vitprune.digits` ("no behaviour change"), and `from vitprune.data
  import digits_batches`, as the README had it, became an ImportError."""
  from vitprune import data as data_mod  # pylint: disable=g-import-not-at-top
  from vitprune import digits  # pylint: disable=g-import-not-at-top
  for name in sorted(data_mod._MOVED_TO_DIGITS):          # pylint: disable=protected-access
    with pytest.warns(DeprecationWarning, match=rf"^vitprune\.data\.{name} moved to "
                      rf"vitprune\.digits\.{name}$"):
      assert getattr(data_mod, name) is getattr(digits, name)
  with pytest.raises(AttributeError, match="has no attribute 'digits_folder_indices'"):
    data_mod.digits_folder_indices  # pylint: disable=pointless-statement  (removed, internal)


def test_prediction_rows_name_the_labels_class_beside_its_index():
  """run_deployed and vitprune.edge run printed label=<output index> beside class names: with
  classes not in index order (['3', '7', '0']) an image of folder 0 read 'label=2' (a probe)."""
  names = ("3", "7", "0")
  rows = data.prediction_rows(["0/a.png", "7/b\nc.png"], [2, 0], [0.9, 0.6], names, [2, 1])
  assert rows == [
      {"file": "0/a.png", "pred": 2, "class": "0", "prob": 0.9, "label": 2, "label_class": "0"},
      {"file": "7/b\nc.png", "pred": 0, "class": "3", "prob": 0.6, "label": 1,
       "label_class": "7"}]
  assert data.prediction_line(rows[0]) == "0/a.png\t2\t0\t0.9000\tlabel=2\t0"
  assert data.prediction_line(rows[1]) == "7/b\\nc.png\t0\t3\t0.6000\tlabel=1\t7"
  flat = data.prediction_rows(["x.png"], [1], [0.5], None)
  assert flat[0]["class"] == "1" and flat[0]["label"] is None and flat[0]["label_class"] is None
  assert data.prediction_line(flat[0]) == "x.png\t1\t1\t0.5000"
  # The accuracy both CLIs report: by the label's index, with its interval.
  from vitprune import intervals  # pylint: disable=g-import-not-at-top
  acc = data.prediction_accuracy(rows)          # the first right, the second wrong
  assert acc == {"accuracy": 0.5, "accuracy_record": intervals.accuracy_record(1, 2)}
  assert data.prediction_accuracy(flat) == {"accuracy": None}
  # One of each per image: a padded row (or a lost one) was zipped away without a word.
  with pytest.raises(ValueError, match=r"^1 files, 2 predictions and 2 probabilities: one of "
                                       r"each per image$"):
    data.prediction_rows(["x.png"], [1, 0], [0.5, 0.2], None)
  with pytest.raises(ValueError, match=r"1 probabilities, 2 labels: one of each per image"):
    data.prediction_rows(["x.png"], [1], [0.5], None, [0, 1])


def test_prediction_accuracy_of_rows_whose_first_label_is_zero():
  """Label 0 is a label: rows starting with an image of class 0 have an accuracy."""
  rows = data.prediction_rows(["0/a.png", "1/b.png"], [0, 0], [0.9, 0.8], ("x", "y"), [0, 1])
  assert data.prediction_accuracy(rows)["accuracy"] == 0.5
  assert data.accuracy_line(data.prediction_accuracy(rows)).startswith("accuracy ")


def test_an_unknown_digits_split_is_refused_and_nothing_is_written(tmp_path):
  """A split other than train | test | all was read as the test split: `--split=val` wrote the
  test digits under a marker saying 'val' (a mutation audit)."""
  want = "unknown split 'val'; expected one of train, test, all"
  with pytest.raises(ValueError, match=re.escape(want)):
    digits.write_digits_imagefolder(tmp_path / "v", split="val", limit=10)
  assert os.listdir(tmp_path) == []
  with pytest.raises(ValueError, match=re.escape(want)):
    digits.digits_batches("val", 16)


def test_a_digits_subset_seed_is_recorded_apart_from_its_split_seed(tmp_path, monkeypatch):
  """`seed` draws the subset of the split of `split_seed`: the marker records each, so a board
  without scikit-learn's table judges a subset of seed 3 of the bundled test split by split
  seed 0 (recorded as 3, the weights of seed 0 were refused their own held-out digits)."""
  root = digits.write_digits_imagefolder(tmp_path / "d", split="test", limit=20, seed=3)
  with open(os.path.join(root, digits.DIGITS_MARKER)) as f:
    assert json.load(f) == {"format": digits.DIGITS_FORMAT, "split": "test", "seed": 3,
                            "split_seed": 0}

  def missing(*args, **kw):
    raise ModuleNotFoundError("No module named 'sklearn'")

  monkeypatch.setattr(digits, "digits_split", missing)
  monkeypatch.setattr(digits, "load_digits_arrays", missing)      # (no pixels to compare)
  digits.check_digits_folder(root, {"dataset": "sklearn_digits",
                                    "split": {"seed": 0, "test_fraction": 0.2}}, "W")


def test_digits_batches_limit_draws_the_balanced_subset_of_its_seed():
  """`digits_batches(limit=, seed=)`: the `balanced_subset` of that seed of the split of that
  seed, each image once (the subset's seed was not checked: a mutation audit)."""
  labels = digits.load_digits_arrays()[1]
  test = digits.digits_split(seed=3)[1]
  batches = list(digits.digits_batches("test", 16, limit=20, seed=3))
  idx = np.concatenate([b[2] for b in batches])
  idx = idx[idx >= 0]
  want = test[data.balanced_subset(labels[test], 20, 3)]
  assert sorted(idx.tolist()) == sorted(want.tolist()) and len(idx) == 20
  assert sorted(want.tolist()) != sorted(test[data.balanced_subset(labels[test], 20, 0)].tolist())
  np.testing.assert_array_equal(np.concatenate([b[1] for b in batches])[:20], labels[idx])


def test_digits_weights_without_a_recorded_test_fraction_were_split_at_0_2(tmp_path):
  """Weights whose digits split records no test fraction (or no seed) were trained on the
  split of test fraction 0.2 (seed 0), the one `train_digits` and `digits_images` default to:
  the refusal names that split and its hint (a mutation audit)."""
  assert digits.digits_training_split({"dataset": "sklearn_digits", "split": {"seed": 1}}) \
      == (1, 0.2)
  assert digits.digits_training_split({"dataset": "sklearn_digits", "split": {}}) == (0, 0.2)
  assert digits.digits_training_split({"dataset": "sklearn_digits"}) is None
  assert digits.digits_training_split({"dataset": "other", "split": {"seed": 0}}) is None
  train = digits.write_digits_imagefolder(tmp_path / "train", split="train", limit=10)
  with pytest.raises(ValueError, match=re.escape(
      f"10 of the 10 digits in {train} are training images of W (digits split of seed 0, test "
      "fraction 0.2), so every score on them would be inflated: write that split's test images "
      "(digits_images --split=test --split_seed=0)")):
    digits.check_digits_folder(train, {"dataset": "sklearn_digits", "split": {}}, "W")


def test_one_unknown_class_folder_is_named_alone(tmp_path):
  """'class folder(s) ['dog'] ... are' for one folder: now the folder alone, in the singular."""
  for folder in ("cat", "dog"):
    _png(str(tmp_path / folder / "a.png"), _gray(3, 3))
  with pytest.raises(ValueError) as e:
    data.ImageFolder(str(tmp_path), class_names=["cat", "cow"])
  assert str(e.value) == (f"class folder 'dog' in {str(tmp_path)!r} is not among the model's "
                          "class names ['cat', 'cow']")
  _png(str(tmp_path / "emu" / "a.png"), _gray(3, 3))
  with pytest.raises(ValueError) as e:
    data.ImageFolder(str(tmp_path), class_names=["cat", "cow"])
  assert str(e.value) == (f"class folders ['dog', 'emu'] in {str(tmp_path)!r} are not among the "
                          "model's class names ['cat', 'cow']")


def test_digits_images_refuses_its_own_folder_without_overwrite(tmp_path, capsys):
  """Mutation audit of experiments/digits_images.py: a folder it wrote is replaced only with
  --overwrite (refused by the CLI's own check, before any work), and --split=all says every
  digit."""
  from experiments import common, digits_images   # pylint: disable=g-import-not-at-top
  out = tmp_path / "imgs"
  common.run_in_process(digits_images.main, digits_images.define_flags,
                        [f"--out={out}", "--limit=10"])
  before = sorted(os.listdir(out))
  with pytest.raises(SystemExit) as e:
    common.run_in_process(digits_images.main, digits_images.define_flags,
                          [f"--out={out}", "--split=all"])
  assert e.value.code == 1
  assert capsys.readouterr().err == (
      f"error: --out={out} already exists (pass --overwrite to replace it)\n")
  assert sorted(os.listdir(out)) == before
  common.run_in_process(digits_images.main, digits_images.define_flags,
                        [f"--out={out}", "--split=all", "--overwrite"])
  assert capsys.readouterr().out == f"wrote 1797 digits (all split) to {out}\n"


def test_per_image_time_is_over_the_images_classified():
  """A full batch: its median per image; a folder smaller than the batch (padded with zero
  images to it): per real image, the padding said."""
  assert data.per_image_time(2e-3, 4, 9) == "0.500 ms/image"
  assert data.per_image_time(2e-3, 4, 4) == "0.500 ms/image"
  assert data.per_image_time(3e-3, 8, 5) == ("0.600 ms/image classified (the batch held 3 "
                                                 "zero images of padding)")
  assert data.per_image_time(3e-3, 8, 1).endswith("(the batch held 7 zero images of padding)")


def test_one_image_file_is_a_dataset_of_that_image(tmp_path):
  """An image file as the root is an unlabelled dataset of that one image (its folder the root,
  its name the one file), loaded as the folder loads it; it has no class folder, so
  labelled=True is refused; a file that is no image, and a FIFO named like one, are named."""
  _png(str(tmp_path / "d" / "3" / "a.png"), _gray(5, 4, 7))
  _png(str(tmp_path / "d" / "3" / "b.png"), _gray(5, 4, 9))
  one = data.ImageFolder(str(tmp_path / "d" / "3" / "b.png"), class_names=[str(i) for i in
                                                                            range(10)])
  assert (one.root, one.files, one.labelled, one.classes, one.labels.tolist()) == (
      str(tmp_path / "d" / "3"), ("b.png",), False, (), [-1])
  whole = data.ImageFolder(str(tmp_path / "d"))
  assert np.array_equal(np.asarray(one.load(0)), np.asarray(whole.load(1)))
  with pytest.raises(ValueError, match=r"b.png' is one image file, which has no class folder"):
    data.ImageFolder(str(tmp_path / "d" / "3" / "b.png"), labelled=True)
  (tmp_path / "notes.txt").write_text("")
  with pytest.raises(FileNotFoundError, match=r"notes.txt' is neither a directory nor an image "
                     r"file \(extensions .jpg, "):
    data.ImageFolder(str(tmp_path / "notes.txt"))
  os.mkfifo(tmp_path / "pipe.png")
  with pytest.raises(ValueError, match="is named like an image but is not a regular file"):
    data.ImageFolder(str(tmp_path / "pipe.png"))


def test_one_training_digit_given_as_a_file_is_refused_as_its_folder_would_be(tmp_path,
                                                                               monkeypatch):
  """One image file became a dataset (`--images=x.png`), and the check for the weights'
  training digits scanned folders only: a training digit passed alone was not refused. It is,
  by its pixels, and without the digits table by the marker of the folder it was written in."""
  train = pathlib.Path(digits.write_digits_imagefolder(tmp_path / "train", split="train",
                                                         limit=3))
  test = pathlib.Path(digits.write_digits_imagefolder(tmp_path / "test", split="test",
                                                        limit=3))
  meta = {"dataset": "sklearn_digits", "split": {"seed": 0, "test_fraction": 0.2}}
  one = sorted(train.glob("*/*.png"))[0]
  with pytest.raises(ValueError) as e:
    digits.check_digits_folder(str(one), meta, "W")
  assert str(e.value).startswith(f"the digit {one} is a training image of W (digits split of "
                                 "seed 0, test fraction 0.2), so every score on it would be "
                                 "inflated")
  digits.check_digits_folder(str(sorted(test.glob("*/*.png"))[0]), meta, "W")

  def missing(*args, **kw):
    raise ModuleNotFoundError("No module named 'sklearn'")
  monkeypatch.setattr(digits, "load_digits_arrays", missing)      # (no pixels to compare)
  with pytest.raises(ValueError, match=re.escape(f"{train} holds the digits' train split")):
    digits.check_digits_folder(str(one), meta, "W")
  digits.check_digits_folder(str(sorted(test.glob("*/*.png"))[0]), meta, "W")


def test_the_images_flag_is_checked_by_name_before_any_work(tmp_path):
  """`prune --images=/typo` said "dataset root '/typo' does not exist" once the model had
  loaded: a folder or an image file passes, anything else is named by its flag."""
  _png(str(tmp_path / "a.png"), _gray(3, 3))
  (tmp_path / "notes.txt").write_text("")
  os.symlink(tmp_path / "gone", tmp_path / "dangling.png")
  data.check_images_flag(str(tmp_path))
  data.check_images_flag(str(tmp_path / "a.png"))
  data.check_images_flag(str(tmp_path / "a.png") + "/")     # (ImageFolder reads it: a review)
  exts = ", ".join(data.IMG_EXTENSIONS)
  for name, error, message in (
      ("typo", FileNotFoundError, f"--images={tmp_path / 'typo'} does not exist"),
      ("notes.txt", ValueError, f"--images={tmp_path / 'notes.txt'} is a regular file, neither "
                                f"a folder of images nor an image file (extensions {exts})"),
      ("dangling.png", ValueError, f"--images={tmp_path / 'dangling.png'} is a dangling "
                                   "symbolic link, neither a folder of images nor an image file "
                                   f"(extensions {exts})")):
    with pytest.raises(error) as e:
      data.check_images_flag(str(tmp_path / name))
    assert str(e.value) == message


def test_class_folders_a_model_cannot_label_name_what_can_be_done(tmp_path):
  """Two class folders for a model of 10 unnamed classes: the message said "pass class_names",
  a library argument no CLI has (a probe); it names what a CLI user can do instead."""
  _png(str(tmp_path / "a" / "x.png"), _gray(3, 3))
  _png(str(tmp_path / "b" / "y.png"), _gray(3, 3))
  with pytest.raises(ValueError) as e:
    data.ImageFolder(str(tmp_path), num_classes=10)
  assert str(e.value) == (
      f"{str(tmp_path)!r} has 2 class folders ['a', 'b'] but the model has 10 classes and "
      "records no class names, so folders cannot be matched to outputs; use exactly 10 class "
      "folders, or the images without class folders (a flat folder, read unlabelled: no "
      "accuracy), or weights saved with their class names "
      "(vitprune.checkpoint.save_weights(..., class_names=...))")
  os.remove(str(tmp_path / "b" / "y.png"))
  os.rmdir(str(tmp_path / "b"))
  with pytest.raises(ValueError, match=r" has 1 class folder \['a'\] but"):  # (was '1 class
    data.ImageFolder(str(tmp_path), num_classes=10)                          # folders')


@pytest.mark.parametrize("images, labels, message", [
    (np.zeros((2, 8, 8), np.float32), [0, 1], "ArrayDataset images must be uint8, got float32"),
    (np.zeros((2, 8, 8, 2), np.uint8), [0, 1],
     "ArrayDataset images must be [N, H, W] or [N, H, W, C in 1/3/4], got shape (2, 8, 8, 2)"),
    (np.zeros((2, 8), np.uint8), [0, 1],
     "ArrayDataset images must be [N, H, W] or [N, H, W, C in 1/3/4], got shape (2, 8)"),
    (np.zeros((2, 8, 8), np.uint8), [0, 1, 2],
     "ArrayDataset labels shape (3,) does not match 2 images"),
])
def test_array_dataset_refuses_bad_arrays_exactly(images, labels, message):
  """Coverage probe: ArrayDataset's shape and dtype refusals, never reached by the suite."""
  with pytest.raises(ValueError) as e:
    data.ArrayDataset(images, np.asarray(labels), ("a", "b"))
  assert str(e.value) == message


def test_a_dangling_image_link_in_a_class_folder_is_one_line(tmp_path):
  """Coverage probe: a class folder's image name that is a link to nothing: the estimate CLI
  names it in one line (exit 1) and writes nothing."""
  from tests.conftest import run_cli_in_process  # pylint: disable=g-import-not-at-top
  root = tmp_path / "d"
  (root / "3").mkdir(parents=True)
  Image.new("L", (8, 8)).save(root / "3" / "y.png")
  os.symlink(root / "nothing.png", root / "3" / "x.png")
  work = tmp_path / "w"
  work.mkdir()
  assert run_cli_in_process(work, "estimate", [f"--data={root}", "--out_dir=o"]) == (
      1, "", f"error: --data: '{root / '3' / 'x.png'}' is a link to nothing (dangling symbolic "
      "link)\n")                                          # (named by the flag: a probe)
  assert os.listdir(work) == []


def test_a_digit_moved_by_exactly_the_lossy_bound_is_found_and_one_level_more_is_not(tmp_path):
  """Mutation audit: the guard's lossy match at its bound: a digit whose every pixel is
  `_LOSSY_COPY_LEVELS` brighter (its mean too: the prefilter's bound) is that digit; one level
  more is no digit, counted as an unmatched 8x8 image."""
  images, labels = digits.load_digits_arrays()
  i = int(np.flatnonzero(images.reshape(len(images), -1).max(axis=1) <= 232)[0])
  for shift, found in ((digits._LOSSY_COPY_LEVELS, ({i}, 0)),
                       (digits._LOSSY_COPY_LEVELS + 1, (set(), 1))):
    root = tmp_path / f"shift{shift}"
    _png(str(root / str(labels[i]) / "x.png"), images[i].astype(np.int32) + shift)
    assert digits._scan_for_digits(str(root)) == found


def test_digits_for_a_model_with_the_digits_in_another_order_are_labelled_by_name():
  """Mutation audit: a model whose class names are the digits in another order gets each
  digit labelled by the output of its name, not by its position."""
  names = tuple(reversed(digits.DIGITS_CLASSES))
  ds = digits.digits_for_model(names, 10)
  assert ds.classes == names
  np.testing.assert_array_equal(ds.labels, 9 - digits.load_digits_arrays()[1])


def test_a_digits_folder_another_run_published_meanwhile_is_not_replaced(tmp_path,
                                                                         monkeypatch):
  """Mutation audit: `write_digits_imagefolder(overwrite=True)` replaces the folder there when
  it began, not one another run published while it worked: that one stays, and this run's
  folder is kept beside it, named in the error."""
  root = str(tmp_path / "d")
  digits.write_digits_imagefolder(root, limit=10)
  real, calls = digits.load_digits_arrays, []

  def load():
    if not calls:
      calls.append(1)
      digits.write_digits_imagefolder(root, limit=20, overwrite=True)   # another run
    return real()

  monkeypatch.setattr(digits, "load_digits_arrays", load)
  with pytest.raises(FileExistsError) as e:
    digits.write_digits_imagefolder(root, limit=30, overwrite=True)
  kept = [n for n in os.listdir(tmp_path) if n != "d"]
  assert len(kept) == 1 and re.fullmatch(r"d\.partial-[0-9a-f]{8}", kept[0])
  assert str(e.value) == (
      f"{root} was written by another run after this one began (two runs into one output "
      "folder at once): this run does not replace that run's outputs; give each run its own "
      f"folder; this run's output is kept in {tmp_path / kept[0]}")
  assert len(data.ImageFolder(root)) == 20
  assert len(data.ImageFolder(str(tmp_path / kept[0]))) == 30


def test_a_digits_folder_never_replaces_weights(tmp_path):
  """Mutation audit: `write_digits_imagefolder(overwrite=True)` replaces a digits folder only;
  a weights folder (another vitprune output) there is refused, left as it was."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  w = tmp_path / "w"
  shutil.copytree(os.path.join(root, "weights", "vit_digits"), w)
  before = sorted(os.path.relpath(p, w) for p in glob.glob(f"{w}/**", recursive=True))
  config = (w / "config.json").read_bytes()
  with pytest.raises(FileExistsError) as e:
    digits.write_digits_imagefolder(str(w), limit=10, overwrite=True)
  assert str(e.value) == (f"refusing to replace {w}: it is a folder that is not a "
                          "vitprune-digits-imagefolder folder (with .vitprune-imagefolder.json); "
                          "move it away or choose another output path")
  assert sorted(os.path.relpath(p, w) for p in glob.glob(f"{w}/**", recursive=True)) == before
  assert (w / "config.json").read_bytes() == config and os.listdir(tmp_path) == ["w"]


def test_a_folder_of_held_out_digits_and_a_users_image_passes_weights_of_the_same_split(
    tmp_path):
  """Mutation audit: weights whose held-out digits are exactly a digits_images test split's
  (a test fraction rounding to the same counts per class) pass a folder of that split holding
  one user image too (judged by its marker: the split lies within their held-out digits)."""
  assert np.array_equal(digits.digits_split(0, 0.2001)[1], digits.digits_split(0, 0.2)[1])
  root = digits.write_digits_imagefolder(tmp_path / "d", split="test")
  _png(os.path.join(root, "3", "mine.png"), _gray(8, 8, 77))      # an 8x8 image, no digit
  meta = {"dataset": "sklearn_digits", "split": {"seed": 0, "test_fraction": 0.2001}}
  assert digits._scan_for_digits(root)[1] == 1
  digits.check_digits_folder(root, meta, "the weights")
  with pytest.raises(ValueError, match="are training images of the weights"):
    digits.check_digits_folder(root, dict(meta, split={"seed": 1, "test_fraction": 0.2001}),
                               "the weights")


def test_an_image_beside_the_class_folders_is_not_scanned_as_one_imagefolder_reads(tmp_path):
  """Mutation audit: with class folders, `ImageFolder` reads no image beside them in the root,
  so the guard does not either: a training digit there does not refuse the folder."""
  root = digits.write_digits_imagefolder(tmp_path / "d", split="test", limit=20)
  images, _ = digits.load_digits_arrays()
  train = int(digits.digits_split()[0][0])
  _png(os.path.join(root, "beside.png"), images[train])
  with pytest.warns(UserWarning, match="belongs to no class folder and is not evaluated"):
    assert len(data.ImageFolder(root)) == 20
  test = {int(n[:-4]) for c in os.listdir(root) if c.isdigit() for n in os.listdir(
      os.path.join(root, c))}
  assert len(test) == 20 and digits.digits_copied_into(root) == test
  digits.check_digits_folder(root, {"dataset": "sklearn_digits", "split": {"seed": 0}}, "w")


def test_a_split_name_is_one_of_the_three_exactly():
  """Mutation audit: an empty or differently cased split name is refused, not read as the test
  split."""
  for split in ("", "Test", "TRAIN"):
    with pytest.raises(ValueError) as e:
      digits.digits_batches(split)
    assert str(e.value) == f"unknown split {split!r}; expected one of train, test, all"


def test_a_training_digit_refused_for_weights_of_another_test_fraction_gets_no_hint(tmp_path):
  """Mutation audit: the hint 'write that split's test images (digits_images --split=test
  ...)' is given only for weights of test fraction 0.2 (digits_images' own): for others such a
  folder would hold training images too, so the message ends without it."""
  root = digits.write_digits_imagefolder(tmp_path / "d", split="train", limit=20)
  meta = {"dataset": "sklearn_digits", "split": {"seed": 0, "test_fraction": 0.3}}
  with pytest.raises(ValueError) as e:
    digits.check_digits_folder(root, meta, "the weights")
  assert re.fullmatch(rf"\d+ of the 20 digits in {re.escape(root)} are training images of the "
                      r"weights \(digits split of seed 0, test fraction 0\.3\), so every score "
                      r"on them would be inflated", str(e.value)), str(e.value)


def test_a_folder_of_vitprune_outputs_is_not_read_as_images(tmp_path):
  """`estimate --data=<a profile output folder>` classified the latency plot as an unlabelled
  image (a probe). A PNG beside a JSON of its stem whose format is vitprune's is refused, naming
  both; a JSON of another format beside an image, or vitprune's format not leading, is not."""
  img = np.zeros((8, 8, 3), np.uint8)
  _png(tmp_path / "curve.png", img)
  _png(tmp_path / "photo.png", img)
  (tmp_path / "curve.json").write_text(json.dumps({"format": "vitprune-latency-profile",
                                                   "points": []}, indent=1))
  with pytest.raises(ValueError, match=re.escape(
      f"{str(tmp_path / 'curve.png')!r} is the plot of {str(tmp_path / 'curve.json')!r} (a "
      f"vitprune-latency-profile file): {str(tmp_path)!r} holds vitprune outputs, not images "
      "to evaluate; give a folder of images")):
    data.read_image_folder(tmp_path)
  with pytest.raises(ValueError, match="^--data: .*curve.png' is the plot of"):
    data.read_image_folder(tmp_path, flag="--data")
  (tmp_path / "curve.json").write_text(json.dumps({"format": "coco", "images": []}))
  assert len(data.read_image_folder(tmp_path)) == 2
  (tmp_path / "curve.json").write_text(json.dumps({"note": "x", "format": "vitprune-x"}))
  assert len(data.read_image_folder(tmp_path)) == 2
