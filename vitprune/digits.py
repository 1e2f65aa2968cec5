"""The embedded default's data: scikit-learn's bundled 8x8 digits (no download).

* `load_digits_arrays` reads them as uint8 `[1797, 8, 8]` images; `digits_split` is the seeded
  stratified train/test split the bundled model was trained on (`train_digits`).
* `digits_dataset` / `digits_for_model` / `digits_batches` give them to the evaluation through
  the very same `data.preprocess_image` path as an image folder (`digits_preprocessing`: 32x32,
  3 channels), labelled by a model's class names.
* `write_digits_imagefolder` writes them out as a real `ImageFolder` (`<class>/<idx>.png`).
* The training-data guard: `check_digits_folder` refuses to score weights on a folder holding
  their training digits, found by the images' 8x8 pixels (`digits_copied_into`: exact, or
  within a JPEG re-save's loss), whatever their file names (by the folder's marker only where
  scikit-learn's table is missing or the pixels moved further).
"""
from __future__ import annotations

import functools
import importlib.util
import json
import os
import stat
import warnings
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from vitprune import atomic
from vitprune import jsonio
from vitprune.config import Preprocessing
from vitprune.data import (ArrayDataset, balanced_subset, check_8bit, check_class_names,
                           find_classes, is_image_file, iterate_batches, shown_names,
                           skipped_folder, to_model_mode)

DIGITS_CLASSES = tuple(str(d) for d in range(10))
DIGITS_MARKER = ".vitprune-imagefolder.json"
DIGITS_FORMAT = "vitprune-digits-imagefolder"
is_digits_imagefolder = atomic.json_marker(DIGITS_MARKER, DIGITS_FORMAT)   # (its layout: atomic's)
SPLITS = ("train", "test", "all")   # the digits splits (`digits_split`), every reader's
TRAINED_SPLITS = ("train", "all")   # those holding images the bundled model was trained on


def load_digits_arrays() -> Tuple[np.ndarray, np.ndarray]:
  """scikit-learn's bundled digits (no download) as 8-bit images.

  Read straight from the CSV that ships inside scikit-learn (`datasets/data/digits.csv.gz`,
  1797 rows of 64 pixels 0..16 + label), located without importing scikit-learn (importing
  `sklearn.datasets` costs ~1.5 s per process); falls back to `sklearn.datasets.load_digits`
  where that file is not found. Read once per process (copies are returned).

  Returns:
    `(images uint8 [1797, 8, 8] in 0..255, labels int32 [1797] in 0..9)`; the original 0..16
    values are scaled by 255 / 16 and rounded.
  """
  pixels, labels = _digits_table()
  images = np.round(pixels.reshape(-1, 8, 8) * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
  return images, labels.copy()


@functools.lru_cache(maxsize=1)
def _digits_table() -> Tuple[np.ndarray, np.ndarray]:
  """`(pixels float64 [1797, 64] in 0..16, labels int32 [1797])` of the bundled digits."""
  spec = importlib.util.find_spec("sklearn")
  roots = list(spec.submodule_search_locations or ()) if spec else []
  for root in roots:
    path = os.path.join(root, "datasets", "data", "digits.csv.gz")
    if os.path.isfile(path):
      table = np.loadtxt(path, delimiter=",", dtype=np.float64)
      if table.shape != (1797, 65):
        raise ValueError(f"{path}: expected 1797 rows of 64 pixels + label, got shape "
                         f"{table.shape}")
      pixels, labels = table[:, :64], table[:, 64].astype(np.int32)
      break
  else:
    from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top  (fallback)
    bunch = load_digits()
    pixels, labels = bunch.data.astype(np.float64), bunch.target.astype(np.int32)
  pixels.setflags(write=False)
  labels.setflags(write=False)
  return pixels, labels


def stratified_split(labels: Sequence[int], *, seed: int = 0, test_fraction: float = 0.2
                     ) -> Tuple[np.ndarray, np.ndarray]:
  """Deterministic stratified split: `round(count_c * test_fraction)` test samples per class.

  Returns:
    `(train int64 [N - T], test int64 [T])`, each sorted.
  """
  if not 0.0 < test_fraction < 1.0:
    raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
  labels = np.asarray(labels)
  rng = np.random.default_rng(seed)
  test = []
  for c in np.unique(labels):
    members = rng.permutation(np.flatnonzero(labels == c))
    test.append(members[:int(round(len(members) * test_fraction))])
  test_idx = np.sort(np.concatenate(test)).astype(np.int64)
  train_idx = np.setdiff1d(np.arange(labels.size), test_idx).astype(np.int64)
  return train_idx, test_idx


def digits_split(seed: int = 0, test_fraction: float = 0.2) -> Tuple[np.ndarray, np.ndarray]:
  """Deterministic stratified `(train, test)` index split of the digits (int64, sorted)."""
  _, labels = load_digits_arrays()
  return stratified_split(labels, seed=seed, test_fraction=test_fraction)


def _split_indices(split: str, labels: np.ndarray, seed: int, test_fraction: float
                   ) -> np.ndarray:
  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
  if split == "all":
    return np.arange(labels.size, dtype=np.int64)
  train, test = stratified_split(labels, seed=seed, test_fraction=test_fraction)
  return train if split == "train" else test


def digits_preprocessing(img_size: int = 32) -> Preprocessing:
  """Preprocessing of the embedded default model on digits (matches the `test_tiny_*` configs).

  The 8x8 digits are upscaled to `img_size` with bicubic resampling through the regular
  `preprocess_image` path (crop_pct 1.0, so the center crop is a no-op), replicated to 3
  channels and normalised with mean = std = 0.5 (timm's Inception normalisation).
  """
  return Preprocessing(input_size=img_size, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                       crop_pct=1.0, interpolation="bicubic", channels=3)


def digits_dataset() -> ArrayDataset:
  """All 1797 digits as an `ArrayDataset` (classes '0'..'9')."""
  images, labels = load_digits_arrays()
  return ArrayDataset(images, labels, DIGITS_CLASSES)


def digits_for_model(class_names: Optional[Sequence[str]] = None,
                     num_classes: Optional[int] = None) -> ArrayDataset:
  """`digits_dataset()` labelled by a model's outputs: by name where it records `class_names`
  (digit '3' is the output named '3', wherever it is), else by position for a model of 10
  classes. A model whose outputs are not the digits (names without them, or another number of
  classes and no names: an ImageNet model) gets them unlabelled, with a warning: agreement and
  KL only, never an accuracy against shifted labels. A model without a head (num_classes 0)
  gets the digits as they are."""
  ds = digits_dataset()
  if class_names is None:
    if not num_classes or num_classes == len(DIGITS_CLASSES):
      return ds
    why = f"it has {num_classes} classes and records no class names"
  else:
    names = check_class_names(class_names, num_classes)
    missing = [c for c in DIGITS_CLASSES if c not in names]
    if not missing:
      if tuple(names) == DIGITS_CLASSES:
        return ds
      to_model = np.array([names.index(c) for c in DIGITS_CLASSES], np.int32)
      return ArrayDataset(ds.images, to_model[ds.labels], tuple(names))
    why = f"its class names {shown_names(names)} lack the digits {missing}"
  warnings.warn(f"the model's outputs are not the digits 0-9 ({why}): the digits are used "
                "unlabelled, for agreement and KL with the unpruned model only", stacklevel=2)
  return ArrayDataset(ds.images, np.full(len(ds.labels), -1, np.int32))


# An 8x8 digit image is a few hundred bytes in any format PIL writes losslessly; larger files
# are not opened by PIL in the guard (a photo folder's headers stay unread), except PNGs whose
# header says 8x8.
_MAX_DIGIT_FILE_BYTES = 1 << 16
# A lossy copy (JPEG) moves a digit's grey values: at quality 95 by at most 9 levels, at 90 by
# 17, at PIL's default 75 by up to 45. Two digits differ by at least 48 levels at some pixel
# (tests/test_data.py checks), so at most one digit lies within 23 of an image at every pixel:
# that one is its copy (a copy moved further is not found: `check_digits_folder` then asks the
# folder's marker).
_LOSSY_COPY_LEVELS = 23


def digits_copied_into(root: str) -> set:
  """`_scan_for_digits(root)`'s digits."""
  return _scan_for_digits(root)[0]


# JPEG start-of-frame markers (baseline, progressive, lossless, ...; not DHT C4, JPG C8, DAC CC),
# whose segment gives the height and width, and the markers that carry no length.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_BARE = frozenset([0x01, *range(0xD0, 0xD9)])


def _jpeg_size(f) -> Optional[Tuple[int, int]]:
  """(width, height) of the JPEG open as `f` from its frame header, seeking over the segments
  before it (an 8x8 digit behind a 70 KB ICC profile was not scanned); None when it has none."""
  f.seek(2)
  while True:
    byte = f.read(1)
    if byte != b"\xff":
      return None
    while byte == b"\xff":          # (fill bytes before a marker)
      byte = f.read(1)
    if not byte:
      return None
    marker = byte[0]
    if marker in _JPEG_BARE:
      continue
    length = f.read(2)
    if len(length) < 2 or marker == 0xDA:      # (the scan data: no frame header before it)
      return None
    if marker in _JPEG_SOF:
      frame = f.read(5)
      return (int.from_bytes(frame[3:5], "big"), int.from_bytes(frame[1:3], "big")) \
          if len(frame) == 5 else None
    if int.from_bytes(length, "big") < 2:      # (a length that covers not even itself)
      return None
    f.seek(int.from_bytes(length, "big") - 2, os.SEEK_CUR)


def _scan_for_digits(root: str) -> Tuple[set, int]:
  """(the digits' indices of the images of `root` that are digits of the dataset, found by their
  8x8 pixels (no two digits share them) among the files `ImageFolder` reads, whatever their
  names (a renamed copy was missed): with class folders, images under any `<class>/` (links
  followed), whatever its name (folders `c0`..`c9` read by weights that record no class names
  are labelled by their sorted position; a digit in another digit's folder is a training image
  scored all the same); without, images directly in `root` (a flat copy, `cp dir/*/*.png
  flat/`, scored by agreement). Only regular files whose header says 8x8 are decoded (of at
  most 64 KiB, but PNGs and JPEGs of any size), to RGB as `ImageFolder` reads them (a grey
  image saved as LA, RGB(A) or with a palette counts by its grey values); an image that is no
  digit exactly is the one digit within `_LOSSY_COPY_LEVELS` grey levels of it in every pixel
  and channel, if any (a copy re-saved as JPEG was missed), and how many 8x8 images matched no
  digit)."""
  one_file = not os.path.isdir(root)        # (an image file: ImageFolder reads it alone)
  if one_file and not is_image_file(root):     # (ImageFolder names a missing root)
    return set(), 0
  images, _ = load_digits_arrays()
  by_pixels = {im.tobytes(): i for i, im in enumerate(images)}
  levels = images.astype(np.int16)[..., None]                                # [D, 8, 8, 1]
  means = levels.mean(axis=(1, 2, 3))                                        # [D]
  shape = images.shape[1:]
  found = set()
  unmatched = [0]

  def index_of(path: str) -> int:
    try:
      st = os.stat(path)
      if not stat.S_ISREG(st.st_mode):
        return -1                     # (a FIFO blocked the open for ever; ImageFolder names it)
      with open(path, "rb") as f:     # a PNG's size without PIL (~5x faster on a large folder)
        head = f.read(24)
        png = head[:8] == atomic.PNG_SIGNATURE and head[12:16] == b"IHDR"
        size = ((int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big"))
                if png else _jpeg_size(f) if head[:2] == b"\xff\xd8" else None)
      if size is not None and size != shape[::-1]:
        return -1
      if st.st_size > _MAX_DIGIT_FILE_BYTES and size is None:   # (an 8x8 PNG or JPEG padded
        return -1                                   # with text or an ICC profile is a digit)
      with Image.open(path) as img:
        if img.size != shape[::-1]:   # (from the header: not decoded)
          return -1
        rgb = np.asarray(to_model_mode(check_8bit(img)))   # what the model is shown (LA: missed)
    except (OSError, ValueError):
      return -1
    if all(np.array_equal(rgb[..., 0], rgb[..., c]) for c in (1, 2)):
      exact = by_pixels.get(rgb[..., 0].tobytes(), -1)
      if exact >= 0:
        return exact
    return lossy_copy_of(rgb.astype(np.int16))

  def lossy_copy_of(rgb: np.ndarray) -> int:
    """The digit within `_LOSSY_COPY_LEVELS` of `rgb` [8, 8, 3] int16, else -2 (no digit). Its
    channels then differ by at most twice that, and its mean by at most that from the digit's
    (each checked first: 10,000 colour images took 13x longer to scan without)."""
    if (rgb.max(axis=-1) - rgb.min(axis=-1)).max() > 2 * _LOSSY_COPY_LEVELS:
      return -2
    near = np.flatnonzero(np.abs(means - rgb.mean()) <= _LOSSY_COPY_LEVELS)
    if near.size:
      off = np.abs(levels[near] - rgb[None]).max(axis=(1, 2, 3))            # [candidates]
      if off.min() <= _LOSSY_COPY_LEVELS:
        return int(near[np.argmin(off)])
    return -2

  def scan(folder: str, files) -> None:
    for n in files:
      if not is_image_file(n):        # (what ImageFolder reads)
        continue
      i = index_of(os.path.join(folder, n))
      if i >= 0:
        found.add(i)
      elif i == -2:
        unmatched[0] += 1

  if one_file:
    scan(os.path.dirname(root), [os.path.basename(root)])
    return found, unmatched[0]
  classes = find_classes(root)
  if not classes:                                      # ImageFolder's flat mode: root alone
    with os.scandir(root) as it:
      scan(root, sorted(e.name for e in it))
    return found, unmatched[0]
  for dirpath, dirnames, files in atomic.walk_following_links(root):   # (loops: ImageFolder's)
    dirnames[:] = [d for d in dirnames if not skipped_folder(d)]   # unread, as ImageFolder
    rel = os.path.relpath(dirpath, root)
    if rel != os.curdir and rel.split(os.sep)[0] in classes:   # (root files: not read beside)
      scan(dirpath, files)
  return found, unmatched[0]


def _read_marker(folder: str) -> Dict:
  """The DIGITS_MARKER of a digits folder ({} where it cannot be read)."""
  try:
    with open(os.path.join(folder, DIGITS_MARKER)) as f:
      doc = json.load(f)
  except (OSError, ValueError):
    return {}
  return doc if isinstance(doc, dict) else {}


def digits_training_split(meta: Any) -> Optional[Tuple[int, float]]:
  """(split seed, test fraction) of weights trained on the digits, from their `meta` as
  `train_digits` records it (dataset and split); None for other weights."""
  split = (meta.get("split") if isinstance(meta, dict)
           and meta.get("dataset") == "sklearn_digits" else None)
  if not isinstance(split, dict):
    return None
  return split.get("seed", 0), split.get("test_fraction", 0.2)


def check_digits_folder(folder: str, meta: Optional[Dict], whose: str) -> None:
  """ValueError when `folder` holds digits (by their pixels, `digits_copied_into`, whatever
  their names, marker or inventory: a training digit copied into a `digits_images` folder kept
  its marker) that the weights (`whose`, named in the message; `meta` as `train_digits` records
  it) were trained on: every score on them would be inflated. A `digits_images` folder is also
  judged by the split its marker records where the pixels do not find a digit in every 8x8
  image (re-saved with a heavier loss than `_LOSSY_COPY_LEVELS`: a folder re-saved at PIL's
  default JPEG quality found some test digits and lost the training ones; a board without
  scikit-learn's table has only the marker)."""
  trained = digits_training_split(meta)
  if trained is None:
    return
  seed, fraction = trained
  hint = (f": write that split's test images (digits_images --split=test --split_seed={seed})"
          if fraction == 0.2 else "")
  try:
    found, unmatched = _scan_for_digits(folder)
    seen = found & set(digits_split(seed, fraction)[0].tolist())
  except ImportError:       # a board without scikit-learn's table: the marker alone decides
    found, seen, unmatched = set(), set(), 0
  one_file = os.path.isfile(folder)
  if seen:
    which = (f"the digit {folder} is a training image" if one_file else
             f"{len(seen)} of the {len(found)} digits in {folder} "
             + ("is a training image" if len(seen) == 1 else "are training images"))
    raise ValueError(f"{which} of {whose} (digits split of seed {seed}, test fraction "
                     f"{fraction}), so every score on {'it' if one_file else 'them'} would be "
                     f"inflated{hint}")
  if one_file:    # one image (ImageFolder's): judged by the marker of the folder
    parent = os.path.dirname(os.path.abspath(folder))                     # it was written in
    folder = next((d for d in (parent, os.path.dirname(parent)) if is_digits_imagefolder(d)),
                  parent)
  if (not found or unmatched) and is_digits_imagefolder(folder):   # (the pixels did not find
    marker = _read_marker(folder)        # every image: re-saved, or no table to compare with)
    # (a marker written before `split_seed` named the split's seed "seed")
    split_seed = marker.get("split_seed", marker.get("seed", 0))
    if ((marker.get("split"), split_seed, fraction) != ("test", seed, 0.2)
        and not _test_split_within(split_seed, seed, fraction, marker.get("split"))):
      raise ValueError(f"{folder} holds the digits' {marker.get('split')} split of seed "
                       f"{split_seed} (its {DIGITS_MARKER} says so), and "
                       f"{whose} were trained on the split of seed {seed} (test fraction "
                       f"{fraction}): some of its images are their training data, so every "
                       f"score would be inflated{hint}")


def _test_split_within(split_seed: Any, seed: int, fraction: float, split: Any) -> bool:
  """Whether a marker's test split (of `split_seed`, fraction 0.2: `digits_images`') lies in
  the held-out digits of weights trained on the split (`seed`, `fraction`): weights of test
  fraction 0.3 were refused a folder of their own held-out digits holding one user image."""
  if split != "test" or not jsonio.is_int(split_seed):
    return False
  try:
    return set(digits_split(split_seed, 0.2)[1].tolist()) <= set(
        digits_split(seed, fraction)[1].tolist())
  except (ImportError, ValueError):      # (no table on a board; a fraction it cannot split)
    return False


def digits_batches(split: str = "test", batch_size: int = 64, *,
                   prep: Optional[Preprocessing] = None, seed: int = 0,
                   test_fraction: float = 0.2, limit: Optional[int] = None,
                   drop_remainder: bool = False, pad_remainder: bool = True,
                   num_workers: int = 0) -> Iterator[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """`iterate_batches` over a digits split ('train' | 'test' | 'all').

  Args:
    split: which part of `digits_split(seed, test_fraction)`.
    prep: defaults to `digits_preprocessing()` (32x32, 3 channels).
    limit: if set, a `balanced_subset` of that many samples of the split (same `seed`).
    Other args: as `iterate_batches`.

  Yields:
    `(images [B, S, S, C] float32, labels [B] int32, indices [B] int64)`; indices refer to the
    full 1797-image array (`load_digits_arrays`), -1 for padding.
  """
  ds = digits_dataset()
  idx = _split_indices(split, ds.labels, seed, test_fraction)
  if limit is not None:
    idx = idx[balanced_subset(ds.labels[idx], limit, seed)]
  return iterate_batches(ds, prep or digits_preprocessing(), batch_size, indices=idx,
                         drop_remainder=drop_remainder, pad_remainder=pad_remainder,
                         num_workers=num_workers)


def write_digits_imagefolder(root: Union[str, os.PathLike], split: str = "test",
                             limit: Optional[int] = None, *, seed: int = 0,
                             test_fraction: float = 0.2, overwrite: bool = False,
                             split_seed: int = 0) -> str:
  """Materialises digits as 8x8 grayscale PNGs in an ImageFolder layout `root/<class>/<idx>.png`.

  `<idx>` is the index into `load_digits_arrays()`, zero-padded to 4 digits so that file order
  is index order. The folder is written into a temporary sibling directory and renamed into
  place, so `root` either does not exist or is complete. A hidden marker file
  (`.vitprune-imagefolder.json`, ignored by `ImageFolder`) lets `overwrite=True` replace a
  folder written here, and only such a folder.

  Args:
    root: target directory; must not exist (or be empty) unless `overwrite=True` (which
      replaces the folder there when this call began, not one published meanwhile).
    split: 'train' | 'test' | 'all' (see `digits_split(split_seed)`: seed 0 is the split of
      `--data=digits` and of the bundled model's training).
    limit: if set, only a `balanced_subset` of that many images of the split, drawn with `seed`
      (as `estimate --num_images --seed` draws it).

  Returns:
    The absolute path of `root`.
  """
  root = os.path.abspath(os.fspath(root))
  began = atomic.output_stamp(root)     # (not one made since: replaced, or this one kept)
  images, labels = load_digits_arrays()
  idx = _split_indices(split, labels, split_seed, test_fraction)
  if limit is not None:
    idx = idx[balanced_subset(labels[idx], limit, seed)]
  with atomic.staged_dir(root, overwrite=overwrite, is_ours=is_digits_imagefolder,
                         replaces=began) as tmp:
    atomic.write_json(os.path.join(tmp, DIGITS_MARKER), {"format": DIGITS_FORMAT,
                                                         "split": split, "seed": seed,
                                                         "split_seed": split_seed})
    for c in np.unique(labels[idx]):
      os.makedirs(os.path.join(tmp, DIGITS_CLASSES[c]))
    for i in idx:
      path = os.path.join(tmp, DIGITS_CLASSES[labels[i]], f"{i:04d}.png")
      Image.fromarray(np.ascontiguousarray(images[i])).save(path, format="PNG")
  return root
