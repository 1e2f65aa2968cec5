"""Evaluation data: image folders, timm-exact eval preprocessing, batching, data identity.

Everything here is host-side numpy/PIL; the outputs are NHWC float32 arrays ready for `jax.jit`.

* `ImageFolder` reads a torchvision-style folder (`root/<class>/<image>`), or a flat folder of
  unlabelled images, with torchvision's class ordering and accepted extensions.
* `preprocess_image` reproduces timm's `transforms_imagenet_eval` (crop_mode 'center') on PIL
  images: RGB conversion, shorter-side resize to `floor(input_size / crop_pct)`, torchvision
  `CenterCrop`, scaling to [0, 1] and mean/std normalisation, in float32 like torch.
* `iterate_batches` streams `(images [B, S, S, C], labels [B], indices [B])` in a deterministic
  order with a fixed batch shape: the last partial batch is padded (index -1, label -1, zero
  image) unless `drop_remainder=True`; `batch_valid_mask` / `pad_to_batch` give the mask.
* `balanced_subset` draws a seeded class-balanced sample of indices.
* `ArrayDataset` serves in-memory images (the bundled digits, `vitprune.digits`) through the
  very same `preprocess_image` path.
* `dataset_fingerprint` / `dataset_info` identify the evaluated data for estimate files.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import io
import json
import math
import os
import re
import reprlib
import stat
import threading
import unicodedata
import warnings
import weakref
from typing import Any, Dict, Iterator, List, Optional, Protocol, Sequence, Tuple, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from vitprune import atomic
from vitprune import intervals
from vitprune.digest import file_sha256
from vitprune.console import counted, input_flag, printable
from vitprune.config import INTERPOLATIONS, Preprocessing, check_path, check_switch

# torchvision.datasets.folder.IMG_EXTENSIONS, matched case-insensitively like torchvision.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
# Image formats a folder may hold that are not read (torchvision skips them too, unsaid): a
# dataset of GIFs or HEICs among JPEGs was evaluated on fewer images without a word.
# JPEGs named .jpe/.jif/.jfi (Windows, older cameras) and a camera's .mpo were skipped unsaid.
OTHER_IMAGE_EXTENSIONS = (".gif", ".jfif", ".jpe", ".jif", ".jfi", ".mpo", ".apng", ".avif",
                          ".avifs", ".heic", ".heics", ".heif", ".jp2", ".j2k", ".jpx", ".jpf",
                          ".jxl", ".jxr", ".wdp", ".qoi", ".ico", ".cur", ".icns", ".tga", ".dds",
                          ".sgi", ".xbm", ".xpm", ".dng", ".cr2", ".nef", ".arw", ".raf", ".orf",
                          ".rw2", ".pef", ".srw", ".exr", ".hdr", ".pfm", ".pbm", ".pnm", ".dib",
                          ".pcx", ".psd", ".svg", ".eps")

# timm's `str_to_interp_mode` names (config.INTERPOLATIONS) -> PIL filters.
_PIL_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}
if sorted(_PIL_FILTERS) != sorted(INTERPOLATIONS):
  raise ImportError(f"data._PIL_FILTERS {sorted(_PIL_FILTERS)} must map config.INTERPOLATIONS "
                    f"{sorted(INTERPOLATIONS)}")

# The eval resize keeps the aspect ratio: a 1000000x1 PNG (a few hundred bytes) would become
# 32000000x32 pixels (GBs) before the crop. The bound is PIL's default decompression-bomb limit,
# fixed here (raising or disabling PIL's own limit does not lift it).
MAX_RESIZED_PIXELS = 1024 * 1024 * 1024 // 4 // 3


# ----------------------------------------------------------------------------------------------
# Image folders.
# ----------------------------------------------------------------------------------------------


def _named_with(name: str, extensions: Tuple[str, ...]) -> bool:
  """Whether `name` ends in one of `extensions` (case-insensitive) and is not hidden."""
  base = os.path.basename(name)
  return not base.startswith(".") and base.lower().endswith(extensions)


def is_image_file(name: str) -> bool:
  """Whether `name` has one of torchvision's IMG_EXTENSIONS (case-insensitive) and is not hidden."""
  return _named_with(name, IMG_EXTENSIONS)


def _is_other_image_file(name: str) -> bool:
  """Whether `name` is named like an image of a format the folders do not read
  (`OTHER_IMAGE_EXTENSIONS`, case-insensitive) and is not hidden."""
  return _named_with(name, OTHER_IMAGE_EXTENSIONS)


def _warn_other_images(root: str, skipped: Sequence[str]) -> None:
  """Warns once per dataset when it holds images in formats that are not read (`skipped`:
  their paths relative to `root`, in reading order): they are left out of the evaluation."""
  if skipped:
    exts = sorted({os.path.splitext(p)[1].lower() for p in skipped})
    one = len(skipped) == 1
    warnings.warn(f"{counted(len(skipped), 'file')} in dataset {root!r} named like images of a "
                  f"format that is not read ({', '.join(exts)}; e.g. {skipped[0]!r}) "
                  f"{'is' if one else 'are'} not evaluated; convert {'it' if one else 'them'} "
                  f"to one of {', '.join(IMG_EXTENSIONS)}",
                  stacklevel=3)


def skipped_folder(name: str) -> bool:
  """Folders an image folder never reads: hidden ones ('.ipynb_checkpoints') and the
  `__MACOSX` of a macOS zip (its resource forks, `._*` files that are hidden themselves: it was
  taken for a class folder with no images, or a flat folder for a labelled one)."""
  return name.startswith(".") or name == "__MACOSX"


def read_folders(images: str) -> List[str]:
  """The folders a run on the image folder `images` reads: itself and, at any depth, the
  folders it reaches through links (a class folder, or a folder inside one, linked from
  elsewhere: what is written where it points is read with the images too). Hidden entries are
  never read, so their links do not count."""
  out = [images]
  for dirpath, dirnames, _ in atomic.walk_following_links(images):   # (pruned as it goes)
    dirnames[:] = [d for d in dirnames if not skipped_folder(d)]
    out += [os.path.join(dirpath, d) for d in dirnames
            if os.path.islink(os.path.join(dirpath, d))]
  return out


def inside_images(out: str, images: str) -> bool:
  """Whether `out` lies in a folder a run on `images` reads (`read_folders`; links resolved)."""
  return bool(images) and os.path.isdir(images) and any(
      atomic.is_within(out, f) for f in read_folders(images))


def check_not_read_as_an_image(out: str, images: str, out_flag: str, images_flag: str) -> None:
  """ValueError when the file `out` lies inside the image folder `images` (or a folder it
  reads through a link) where the next run would read it: under a name `ImageFolder` reads
  (`is_image_file`: a results file named r.png was read back as an image and broke every later
  run on the folder), or in a folder not there yet (made by the write, it is read as a class:
  the next run refused the folder, or read a flat folder as a labelled one). A .json in an
  existing folder is never read."""
  if not inside_images(out, images):
    return
  if is_image_file(out):
    raise ValueError(f"--{out_flag}={out} is inside --{images_flag}={images} and named like an "
                     "image: the next run would read it as one; name it .json or write elsewhere")
  parent = os.path.dirname(os.path.abspath(out))
  if not os.path.isdir(parent):
    raise ValueError(f"--{out_flag}={out} is inside --{images_flag}={images}, in a folder that "
                     "does not exist yet: made there, the next run would read it as a class of "
                     "images; write elsewhere")


def check_images_flag(path: str, flag: str = "images") -> None:
  """ValueError naming `--flag` unless `path` is something `ImageFolder` reads: a folder or
  one image file (a mistyped path was "dataset root '...' does not exist", the flag unnamed,
  after the model had loaded)."""
  path = os.path.abspath(path)           # (as ImageFolder reads it: 'x.png/' is x.png)
  if os.path.isdir(path) or (os.path.isfile(path) and is_image_file(path)):
    return
  if not os.path.lexists(path):
    raise FileNotFoundError(f"--{flag}={path} does not exist")
  raise ValueError(f"--{flag}={path} is {atomic.describe(path)}, neither a folder of images nor "
                   f"an image file (extensions {', '.join(IMG_EXTENSIONS)})")


def _check_utf8(name: str, path: str, what: str = "the file name") -> None:
  """ValueError naming `path` unless `name` (the part below the dataset root: what records and
  fingerprints hold) is valid UTF-8."""
  try:
    name.encode("utf-8")
  except UnicodeEncodeError:
    raise ValueError(f"{path!r}: {what} is not valid UTF-8 (rename it)") from None


def _check_image_entry(path: str) -> str:
  """`path` when it names a regular file (through links), else ValueError naming it: a FIFO
  or device named like an image would block or never end on read, a dangling link or a link
  loop has nothing to read."""
  try:
    mode = os.stat(path).st_mode
  except FileNotFoundError:
    raise ValueError(f"{path!r} is a link to nothing (dangling symbolic link)") from None
  except OSError as e:
    raise ValueError(f"{path!r} cannot be read ({e.strerror or e})") from None
  if not stat.S_ISREG(mode):
    raise ValueError(f"{path!r} is named like an image but is not a regular file (a FIFO, "
                     "device or socket)")
  return path


def find_classes(root: str) -> Tuple[str, ...]:
  """Class names as torchvision's `find_classes`: sorted subdirectory names of `root`.

  Hidden directories (names starting with '.') and a macOS zip's `__MACOSX` are skipped, unlike
  torchvision, so stray `.ipynb_checkpoints`-style folders do not become classes. A link that
  may be a class folder but leads nowhere is a ValueError (`_check_folder_link`).
  """
  try:
    with os.scandir(root) as it:
      entries = [e for e in it if not skipped_folder(e.name)]
  except FileNotFoundError:
    raise
  except OSError as e:         # (a raw "[Errno 13] Permission denied: '...'" line)
    raise ValueError(f"dataset root {root!r} cannot be read ({e.strerror or e})") from None
  for e in entries:
    _check_folder_link(e.path)
  return tuple(sorted(e.name for e in entries if e.is_dir()))


def _check_folder_link(path: str) -> None:
  """ValueError naming `path` when it is a symbolic link named like a folder (no alphabetic
  extension: not `notes.txt`, not an image) that leads nowhere, dangling or in a loop: a class
  folder, or a folder of one, on storage that is not mounted was skipped without a word, and
  its images left out of the evaluation."""
  name = os.path.basename(path)
  ext = os.path.splitext(name)[1][1:]
  file_like = ext.isalpha() and len(ext) <= 5      # notes.txt, a.json; not v1.2, n01440764
  if name.startswith(".") or file_like or not os.path.islink(path):
    return
  try:
    os.stat(path)
  except FileNotFoundError:
    raise ValueError(f"{path!r} is a link to nothing (dangling symbolic link): a folder on "
                     "storage that is not there?") from None
  except OSError as err:
    raise ValueError(f"{path!r} is a symbolic link that cannot be followed "
                     f"({err.strerror or err})") from None


def _unreadable_folder(error: OSError) -> None:
  """`os.walk`'s onerror: a folder of the dataset that cannot be listed is a ValueError naming
  it (os.walk skips it silently: its images would be left out of the evaluation unseen)."""
  raise ValueError(f"dataset folder {error.filename!r} cannot be read "
                   f"({error.strerror or error})") from None


def _class_files(class_dir: str, seen: Dict[Tuple[int, int], str]
                 ) -> Tuple[Tuple[str, ...], Tuple[str, ...], Tuple[Tuple[str, str], ...]]:
  """(image files under `class_dir` (recursively, following links) in torchvision's order,
  files there named like images of a format that is not read, (path, real path) of each image
  that is a symbolic link), the first two relative to `class_dir`.

  torchvision iterates `sorted(os.walk(class_dir))` and `sorted(fnames)` per directory; hidden
  files and directories are skipped here. A folder reached again through a symbolic link (a
  loop, a link to the root or into another class), which torchvision would read twice, is a
  ValueError instead (`seen`: {(st_dev, st_ino): path} of the folders walked so far, holding the
  root's); an image linked into a walked folder is `_check_image_links`' to refuse, once every
  class is walked.
  """
  walked = []
  for dirpath, dirnames, fnames in os.walk(class_dir, onerror=_unreadable_folder,
                                           followlinks=True):
    st = os.stat(dirpath)
    if (st.st_dev, st.st_ino) in seen:
      raise ValueError(f"{dirpath!r} is {seen[(st.st_dev, st.st_ino)]!r} again (through a "
                       "symbolic link): every image of a dataset must be reached once, under "
                       "one class")
    seen[(st.st_dev, st.st_ino)] = dirpath
    dirnames[:] = [d for d in dirnames if not skipped_folder(d)]
    walked.append((dirpath, fnames))
  files, skipped, links = [], [], []
  for dirpath, fnames in sorted(walked):
    for fname in sorted(fnames):
      _check_folder_link(os.path.join(dirpath, fname))   # (os.walk lists such a link as a file)
      if _is_other_image_file(fname):
        skipped.append(os.path.relpath(os.path.join(dirpath, fname), class_dir))
      if is_image_file(fname):
        path = _check_image_entry(os.path.join(dirpath, fname))
        _check_utf8(os.path.relpath(path, class_dir), path)
        if os.path.islink(path):
          links.append((path, os.path.realpath(path)))
        files.append(os.path.relpath(path, class_dir))
  return tuple(files), tuple(skipped), tuple(links)


def _check_image_links(links: Sequence[Tuple[str, str]], walked: Dict[Tuple[int, int], str],
                       root: Tuple[int, int]) -> None:
  """ValueError for an image link (path, real path) to an image the dataset also reads as one
  of its own: one named as an image in a folder it walked (`walked`, the `root` folder's
  (st_dev, st_ino) aside), whichever class reached that folder, through a link too (an image
  read as a 3 through a linked folder and as a 5 through a file link was counted twice). Links
  to files outside the walked folders (a deduplicating store: git-annex, DVC, a hub cache) are
  fine, also when two share one file, as are links to files no folder reads as images (a .dat
  beside them)."""
  for path, real in links:
    for target in _link_chain(path) + [real]:  # (through a link of another class: read twice)
      folder = os.stat(os.path.dirname(target))
      key = (folder.st_dev, folder.st_ino)
      if key in walked and key != root and is_image_file(os.path.basename(target)):
        raise ValueError(f"{path!r} is a link to {target!r}, which the dataset also reads as "
                         "an image of its own: every image of a dataset must be reached once, "
                         "under one class")


def _link_chain(path: str, limit: int = 40) -> List[str]:
  """The paths a symbolic link `path` leads through before its last target (each a link
  itself), in order: a link to a link of another class's folder was read under both."""
  chain, cur = [], path
  while len(chain) < limit:
    nxt = os.path.join(os.path.dirname(cur), os.readlink(cur))
    if not os.path.islink(nxt):
      return chain
    chain.append(nxt)
    cur = nxt
  return chain


def _flat_files(root: str) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
  """(image files directly inside `root` (not recursive), files there named like images of a
  format that is not read), each sorted by name; an image that is a link to another image of
  `root` (read twice) is a ValueError."""
  with os.scandir(root) as it:
    files = [e for e in it if not e.is_dir()]
  skipped = tuple(sorted(e.name for e in files if _is_other_image_file(e.name)))
  entries = [e for e in files if is_image_file(e.name)]
  for e in entries:
    _check_image_entry(e.path)
    _check_utf8(e.name, e.path)
  names = {e.name for e in entries}
  real_root = os.path.realpath(root)
  for e in entries:
    if e.is_symlink():
      real = os.path.realpath(e.path)
      if os.path.dirname(real) == real_root and os.path.basename(real) in names:
        raise ValueError(f"{e.path!r} is a link to {real!r}, which the dataset also reads as "
                         "an image of its own: every image of a dataset must be reached once")
  return tuple(sorted(names)), skipped


# The head of a JSON file vitprune wrote: its format is the first field ('vitprune-estimate').
_OUTPUT_FORMAT = re.compile(rb'^\s*\{\s*"format"\s*:\s*"(vitprune-[a-z-]+)"')


def _refuse_output_plots(root: str, images: Sequence[str]) -> None:
  """ValueError where an image directly in `root` is the plot of a vitprune output beside it
  (`<stem>.png` beside a `<stem>.json` whose format is 'vitprune-...'): a profile or solve
  output folder given as --data had its latency plot classified as an unlabelled image (a
  probe)."""
  for name in images:
    stem, ext = os.path.splitext(name)
    beside = os.path.join(root, stem + ".json")
    if ext.lower() != ".png" or not os.path.isfile(beside):
      continue
    try:
      with open(beside, "rb") as f:
        head = f.read(512)           # (the format is the first field vitprune writes)
    except OSError:
      continue
    found = _OUTPUT_FORMAT.search(head)
    if found:
      raise ValueError(f"{os.path.join(root, name)!r} is the plot of {beside!r} (a "
                       f"{found.group(1).decode()} file): {root!r} holds vitprune outputs, not "
                       "images to evaluate; give a folder of images")


def _warn_unlabelled_root_images(root: str) -> None:
  """Warns when a labelled `root` also holds image files directly (torchvision skips them too:
  they belong to no class, so they are left out of the evaluation, not silently dropped)."""
  with os.scandir(root) as it:
    loose = sorted(e.name for e in it if not e.is_dir() and is_image_file(e.name))
  if loose:
    one = len(loose) == 1
    warnings.warn(f"{counted(len(loose), 'image file')} directly in labelled dataset root "
                  f"{root!r} ({'' if one else 'e.g. '}{loose[0]!r}) "
                  f"{'belongs' if one else 'belong'} to no class folder and "
                  f"{'is' if one else 'are'} not evaluated",
                  stacklevel=3)


# PIL's own warning for such an image names no file (shown once per image size): `load_image`
# warns per file instead. Appended, so that a caller's filter (an error, say) still decides.
warnings.filterwarnings("ignore", message=r"Image size \(\d+ pixels\) exceeds limit",
                        category=Image.DecompressionBombWarning, append=True)


def load_image(path: str, sha256: Optional[str] = None) -> Image.Image:
  """Open and fully decode the image at `path` (the mode is left as stored).

  `sha256`: the digest the file's bytes had when its folder was hashed (`images_content_sha256`);
  bytes that no longer hash to it are a ValueError (a file rewritten while the run read it was
  measured, and recorded under the digest of the bytes it no longer held). The bytes hashed are
  the bytes decoded: read once, and held in memory while the image decodes.

  Raises `FileNotFoundError` when it is missing, and `ValueError` naming the file when it cannot
  be opened (permissions), is empty, or PIL cannot decode it (corrupt, truncated, not an image,
  more than twice PIL's pixel limit); above the limit, a `DecompressionBombWarning` naming the
  file (PIL's own names none, and its repeated text was shown once for any number of images).
  """
  try:
    f = open(path, "rb")
  except FileNotFoundError as e:
    raise FileNotFoundError(f"image file {path!r} does not exist") from e
  except OSError as e:
    raise ValueError(f"image file {path!r} cannot be opened ({e.strerror or e})") from None
  with f:
    if os.fstat(f.fileno()).st_size == 0:
      raise ValueError(f"image file {path!r} is empty (0 bytes)")
    source = f
    if sha256 is not None:                  # (hash the bytes decoded, not a second read)
      source = io.BytesIO(f.read())
      if hashlib.sha256(source.getbuffer()).hexdigest() != sha256:
        raise ValueError(f"image file {path!r} changed while the run read it (its bytes are "
                         "not those hashed when its folder was read): rerun once nothing "
                         "writes to the folder")
    try:
      img = Image.open(source)
      img.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
      reason = ("not an image PIL can identify (another format, or corrupt)"
                if isinstance(e, UnidentifiedImageError) else str(e))
      raise ValueError(f"cannot decode image file {path!r}: {reason}") from e
  limit = Image.MAX_IMAGE_PIXELS
  if limit is not None and img.width * img.height > limit:
    warnings.warn(f"image file {path!r} has {img.width * img.height} pixels, above PIL's "
                  f"limit of {limit} (a decompression bomb?): decoded anyway",
                  Image.DecompressionBombWarning, stacklevel=2)
  return img


_EXIF_ORIENTATION = 0x0112
READ_UNLIKE_SHOWN = ("transparency", "orientation")     # the kinds `read_unlike_shown` says


def read_unlike_shown(image: Image.Image) -> List[Tuple[str, str]]:
  """[(kind, what differs)] where timm's reading of `image` (`convert('RGB')`, pixels as stored)
  is not what an image viewer shows: transparent pixels (their colour kept, the transparency
  dropped: white ink on a transparent page reads as a blank page) and an EXIF orientation (a
  phone photo read sideways). A probe scored 0.10 and 0.08 on such digits, without a word."""
  out = []
  bands = image.getbands()
  if bands[-1] in ("A", "a") or "transparency" in image.info:   # (RGBA, LA, PA; TIFF's La)
    # (P -> RGBA raises none of PIL's palette advice; a process-wide catch_warnings here, from
    # a loader's threads, left every warning ignored)
    alpha = (image.getchannel(len(bands) - 1) if bands[-1] in ("A", "a") else
             image.convert("RGBA").getchannel("A"))
    if alpha.getextrema()[0] < 255:
      out.append(("transparency", f"has transparent pixels (mode {image.mode}): read as timm "
                  "reads it, the colour under them kept and the transparency dropped; flatten "
                  "it onto its background first if the model should see what a viewer shows"))
  orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
  if orientation in range(2, 9):            # (0 or 9+: invalid, viewers ignore them too)
    out.append(("orientation", f"has EXIF orientation {orientation} (a viewer shows it "
                "rotated or mirrored): read as stored, as timm reads it; rotate it upright "
                "first (PIL.ImageOps.exif_transpose) if the model should see it so"))
  return out


def to_model_mode(image: Image.Image, channels: int = 3) -> Image.Image:
  """`image.convert('RGB')` (or 'L' for one channel), as timm's loader converts; a palette image
  with transparency goes through RGBA, which gives the same pixels without PIL's advice to
  convert it to RGBA (shown twice per run, naming no file; `ImageFolder.load` names a file
  whose transparent pixels the conversion makes opaque)."""
  if image.mode == "P" and "transparency" in image.info:
    image = image.convert("RGBA")
  return image.convert("RGB" if channels == 3 else "L")


def check_8bit(image: Image.Image, what: str = "image") -> Image.Image:
  """`image` unchanged when its pixels have at most 8 bits per channel; ValueError for 16-bit,
  32-bit integer and float modes ('I;16', 'I', 'F'): timm's loader (`convert('RGB')`) clips
  those to 255, so a 16-bit scan would be read as mostly white without a word. Also TypeError
  for what is not a PIL image, ValueError for an empty one."""
  if not isinstance(image, Image.Image):      # (a numpy array: "has no attribute 'mode'")
    raise TypeError(f"{what} must be a PIL image (PIL.Image.open(path) or "
                    f"PIL.Image.fromarray(array)), got {type(image).__name__}")
  if 0 in image.size:                          # (a ZeroDivisionError in the resize)
    raise ValueError(f"{what} is empty ({image.width}x{image.height} pixels)")
  if image.mode in ("I", "F") or image.mode.startswith("I;16"):
    raise ValueError(f"{what} has mode {image.mode!r} (more than 8 bits per channel), which "
                     "the timm eval transform would clip to 255; convert it to 8 bits first")
  return image


class ImageFolder:
  """A read-only image folder, labelled (`root/<class>/**/<img>`) or unlabelled (`root/<img>`).

  Labelled: each class folder contributes its image files in torchvision's walk order. Labels:
  * `class_names` given (the model's output names, index order, e.g. from
    `checkpoint.read_class_names`): a folder's label is the index of its name among them, so a
    folder holding only some classes (`3/`, `5/`) is labelled right; a folder name that is not
    a class name is a ValueError. `classes` is then `class_names`.
  * else, with `num_classes` given (the model's output count): the folders must be exactly
    `num_classes` classes (labels by sorted position, torchvision order), otherwise ValueError:
    a subset of the classes cannot be labelled without names.
  * else (neither given): torchvision's behaviour, labels 0..K-1 by sorted folder name.
  Unlabelled: the sorted image files directly in `root`; `labels` is all -1 and `classes` empty.
  One image: `root` an image file is an unlabelled dataset of that image (`root` then its
  folder; `run_deployed --images=cat.jpg` was "dataset root '.../cat.jpg' is not a directory").

  `labelled=None` detects the mode: subfolders present -> labelled, else unlabelled. Images are
  decoded lazily by `load(i)`; scanning only lists files.

  Attributes:
    root: the dataset root (absolute path; of one image file, its folder).
    labelled: whether samples carry class labels.
    classes: class names (label index -> name), `()` when unlabelled.
    folder_classes: the class folders present (sorted), `()` when unlabelled.
    class_to_idx: `{class name: index}`, `{}` when unlabelled.
    files: image paths relative to `root`, `[N]`, with '/' separators.
    labels: int32 `[N]`, -1 when unlabelled (read-only array).
  """

  def __init__(self, root: Union[str, os.PathLike], *, labelled: Optional[bool] = None,
               class_names: Optional[Sequence[str]] = None,
               num_classes: Optional[int] = None):
    check_switch("labelled", labelled, optional=True)
    root = os.path.abspath(check_path("the dataset root", root))   # ('': the working directory)
    if class_names is not None:
      class_names = check_class_names(class_names, num_classes)
    elif num_classes is not None and (isinstance(num_classes, bool) or not isinstance(
        num_classes, (int, np.integer)) or num_classes < 0):
      raise ValueError(f"num_classes must be a non-negative int, got {num_classes!r}")
    if not os.path.exists(root):
      raise FileNotFoundError(f"dataset root {root!r} " + (
          "is a symbolic link that leads nowhere (to itself, a loop of links or a missing "
          "target)" if os.path.islink(root) else "does not exist"))
    if not os.path.isdir(root):
      if not is_image_file(root):
        raise FileNotFoundError(f"dataset root {root!r} is neither a directory nor an image "
                                f"file (extensions {', '.join(IMG_EXTENSIONS)})")
      if labelled:
        raise ValueError(f"{root!r} is one image file, which has no class folder to label it "
                         "(labelled=True reads DIR/<class>/<image>)")
      _check_utf8(os.path.basename(root), root)
      _check_image_entry(root)
      self._set(os.path.dirname(root), False, (), (), False, [os.path.basename(root)], [-1])
      return
    classes = find_classes(root)
    for name in class_names or ():     # (a dotted class name, mr.pig, reads like a file's)
      p = os.path.join(root, name)
      if name not in classes and os.path.islink(p) and not os.path.exists(p):
        raise ValueError(f"{p!r} is a link to nothing (dangling symbolic link, or a loop), "
                         "named as a class of the model: a folder on storage that is not "
                         "there? (its images would be left out)")
    if labelled is None:
      labelled = bool(classes)
    folder_classes = classes
    if labelled:
      if not classes:
        raise FileNotFoundError(f"no class subfolders found in dataset root {root!r}")
      for name in classes:
        _check_utf8(name, os.path.join(root, name), "the class folder's name")
      index = _label_index(root, classes, class_names, num_classes)
      files, labels = [], []
      root_stat = os.stat(root)
      seen = {(root_stat.st_dev, root_stat.st_ino): root}
      skipped, links = [], []
      for name in classes:
        idx = index[name]
        found, other, linked = _class_files(os.path.join(root, name), seen)
        skipped.extend(f"{name}/{p}" for p in other)
        links.extend(linked)
        if not found:     # (a folder of GIFs only said nothing of them)
          raise FileNotFoundError(
              f"class folder {os.path.join(root, name)!r} contains no image files with "
              f"extensions {', '.join(IMG_EXTENSIONS)}" + (
                  f" (it holds {len(other)} of formats not read, e.g. {other[0]!r})"
                  if other else ""))
        files.extend(f"{name}/{p}" for p in found)
        labels.extend([idx] * len(found))
      _check_image_links(links, seen, (root_stat.st_dev, root_stat.st_ino))
      _warn_unlabelled_root_images(root)
      _warn_other_images(root, [p.replace(os.sep, "/") for p in skipped])
    else:
      found, skipped = _flat_files(root)
      _refuse_output_plots(root, found)
      files = list(found)
      _warn_other_images(root, skipped)
      if not files:
        raise FileNotFoundError(
            f"no image files (extensions {', '.join(IMG_EXTENSIONS)}) directly in unlabelled "
            f"dataset root {root!r}")
      labels = [-1] * len(files)
      classes = folder_classes = ()
    if labelled and class_names is not None:
      classes = class_names
    self._set(root, bool(labelled), classes, folder_classes,
              labelled and class_names is not None, files, labels)

  def _set(self, root: str, labelled: bool, classes: Sequence[str],
           folder_classes: Sequence[str], by_name: bool, files: Sequence[str],
           labels: Sequence[int]) -> None:
    label_arr = np.asarray(labels, np.int32)
    label_arr.setflags(write=False)
    self._root = root
    self._labelled = labelled
    self._classes = tuple(classes)
    self._folder_classes = tuple(folder_classes)
    self._by_name = by_name
    self._files = tuple(f.replace(os.sep, "/") for f in files)
    self._labels = label_arr
    self._said = set()       # what `load` has warned of (once per folder: a thousand photos)
    self._said_lock = threading.Lock()     # (loader threads)

  root = property(lambda self: self._root)
  labelled = property(lambda self: self._labelled)
  classes = property(lambda self: self._classes)
  folder_classes = property(lambda self: self._folder_classes)
  labelled_by_name = property(lambda self: self._by_name)
  files = property(lambda self: self._files)
  labels = property(lambda self: self._labels)

  @property
  def class_to_idx(self) -> dict:
    return {c: i for i, c in enumerate(self._classes)}

  @property
  def num_classes(self) -> int:
    return len(self._classes)

  @property
  def samples(self) -> Tuple[Tuple[str, int], ...]:
    """torchvision-style `(absolute path, class index)` pairs (index -1 when unlabelled)."""
    return tuple(zip(map(self.path, range(len(self))), self._labels.tolist()))

  def __len__(self) -> int:
    return len(self._files)

  def __repr__(self) -> str:
    kind = f"{self.num_classes} classes" if self._labelled else "unlabelled"
    return f"ImageFolder({self._root!r}, {len(self)} images, {kind})"

  def path(self, i: int) -> str:
    """Absolute path of sample `i`."""
    return os.path.join(self._root, *self._files[i].split("/"))

  def label(self, i: int) -> Optional[int]:
    """Class index of sample `i`, or None when unlabelled."""
    return int(self._labels[i]) if self._labelled else None

  def load(self, i: int) -> Image.Image:
    """Decoded PIL image of sample `i` (see `load_image` and `check_8bit` for errors). Read as
    timm reads it; where that differs from what a viewer shows (`read_unlike_shown`: transparent
    pixels, an EXIF rotation) a warning names one such file, once per folder."""
    path = self.path(i)
    digests = _FILE_SHA256.get(self)        # (read before any image is decoded)
    sha256 = digests.get(i) if digests else None
    image = check_8bit(load_image(path, sha256), f"image file {path!r}")
    if len(self._said) < len(READ_UNLIKE_SHOWN):       # (nothing left to say: not looked at)
      for kind, how in read_unlike_shown(image):
        with self._said_lock:
          first = kind not in self._said
          self._said.add(kind)
        if first:
          warnings.warn(f"image file {path!r} {how} (said for one such file of {self._root!r} "
                        "only)", stacklevel=2)
    return image


def read_image_folder(root: Union[str, os.PathLike], flag: Optional[str] = None,
                      **kwargs) -> "ImageFolder":
  """`ImageFolder(root, **kwargs)`; with `flag` (a CLI's '--images' or '--data', which gave
  `root`), a refusal of the folder names the flag (`console.input_flag`): 'no image files ...
  directly in unlabelled dataset root' named the path alone (a probe). Only the folder's reading
  is wrapped, so a refusal of another flag after it ('num_images=500 exceeds the 359 images
  available') is not put on this one."""
  with input_flag(flag, os.fspath(root)):
    return ImageFolder(root, **kwargs)


def check_class_names(class_names, num_classes: Optional[int] = None,
                      source: str = "class_names") -> Tuple[str, ...]:
  """`class_names` as a tuple of distinct non-empty strings (`num_classes` of them when given),
  else ValueError naming `source`."""
  if isinstance(class_names, (str, bytes)) or not isinstance(class_names, (list, tuple)) or (
      not all(isinstance(c, str) and c for c in class_names)):
    raise ValueError(f"{source} must be a list of non-empty strings, got {class_names!r}")
  names = tuple(class_names)
  if num_classes is not None and len(names) != num_classes:
    raise ValueError(f"{source} has {len(names)} names but the model has {num_classes} classes")
  repeated = sorted({c for c in names if names.count(c) > 1})
  if repeated:
    raise ValueError(f"{source} repeats {repeated}")
  return names


def prediction_rows(files: Sequence[str], preds: Sequence[int], probs: Sequence[float],
                    class_names: Optional[Sequence[str]], labels: Optional[Sequence[int]] = None
                    ) -> List[Dict[str, Any]]:
  """One row per image of a classified folder (`run_deployed`, `vitprune.edge run`): file,
  predicted index and its class, probability, and with `labels` (model output indices) the
  label's index and class (the index beside the class names read as a class: label=2 for an
  image of folder 0 when the classes are not in index order)."""
  sizes = {len(files), len(preds), len(probs)} | ({len(labels)} if labels is not None else set())
  if len(sizes) > 1:            # (zipped, a padded row or a lost one went unnoticed)
    raise ValueError(f"{len(files)} files, {len(preds)} predictions and {len(probs)} "
                     "probabilities" + ("" if labels is None else f", {len(labels)} labels")
                     + ": one of each per image")

  def name(i):
    return class_names[i] if class_names else str(i)
  return [{"file": f, "pred": int(p), "class": name(int(p)), "prob": float(q),
           "label": None if labels is None else int(labels[i]),
           "label_class": None if labels is None else name(int(labels[i]))}
          for i, (f, p, q) in enumerate(zip(files, preds, probs))]


def prediction_accuracy(rows: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
  """{'accuracy': the share of `prediction_rows` rows predicting their label, 'accuracy_record':
  its interval (`intervals.accuracy_record`)}; {'accuracy': None} for unlabelled rows."""
  if not rows or rows[0]["label"] is None:
    return {"accuracy": None}
  right = sum(r["pred"] == r["label"] for r in rows)
  return {"accuracy": right / len(rows), "accuracy_record": intervals.accuracy_record(right,
                                                                                    len(rows))}


# Why images give no accuracy (a single class folder given as the data was read as unlabelled,
# silently; one image file inside a class folder was said not to be in one).
UNLABELLED_NOTE = ("no accuracy: the images were read unlabelled (only a folder of class folders, "
                   "DIR/<class>/<image>, labels them; one image file or one class's folder does "
                   "not)")


def accuracy_line(result: Dict[str, Any]) -> str:
  """The accuracy a classified folder's result (`prediction_accuracy` in it) gives, in words, or
  why it has none (`UNLABELLED_NOTE`)."""
  if result["accuracy"] is None:
    return UNLABELLED_NOTE
  return f"accuracy {intervals.describe_accuracy(result['accuracy_record'])}"


def per_image_time(median_s: float, batch_size: int, num_images: int) -> str:
  """'0.413 ms/image': the median of a timed batch of `batch_size`, the first batch of a folder
  of `num_images`, per image; a folder smaller than the batch was padded with zero images, and
  the time is then per image classified, the padding said (0.389 ms/image over a batch of 8
  holding 5 images read as 8 images' worth of work)."""
  real = min(batch_size, num_images)
  per = f"{median_s * 1e3 / real:.3f} ms/image"
  if real == batch_size:
    return per
  return (f"{per} classified (the batch held {counted(batch_size - real, 'zero image')} of "
          "padding)")


def prediction_line(row: Dict[str, Any]) -> str:
  """`file<TAB>index<TAB>class<TAB>probability[<TAB>label=<index><TAB>label class]` of a
  `prediction_rows` row, control characters of the names escaped."""
  extra = ("" if row["label"] is None else
           f"\tlabel={row['label']}\t{printable(row['label_class'])}")
  return (f"{printable(row['file'])}\t{row['pred']}\t{printable(row['class'])}\t"
          f"{row['prob']:.4f}{extra}")


def shown_names(names: Sequence[str]) -> List[str]:
  """A model's class names for an error message (the first 20)."""
  return list(names) if len(names) <= 20 else list(names[:20]) + [f"... {len(names) - 20} more"]


def _labels_by_name(root: str, folders: Tuple[str, ...], class_names: Tuple[str, ...]
                    ) -> Dict[str, int]:
  """{class folder: index of its name among `class_names`}, names compared as Unicode NFC: a
  folder named on macOS (decomposed, NFD: 'e' + U+0301) is the class its model spells composed
  ('\u00e9'); both print alike, and the folder was refused as not a class of the model. Two
  folders of one class (the same name spelled both ways) are a ValueError."""
  index = {name: i for i, name in enumerate(class_names)}
  for i, name in enumerate(class_names):     # (an exact name first)
    index.setdefault(unicodedata.normalize("NFC", name), i)
  labels = {f: index.get(f, index.get(unicodedata.normalize("NFC", f))) for f in folders}
  unknown = [f for f, i in labels.items() if i is None]
  if unknown:
    folders = (f"class folder {unknown[0]!r} in {root!r} is" if len(unknown) == 1 else
               f"class folders {unknown} in {root!r} are")
    raise ValueError(f"{folders} not among the model's class names "
                     f"{shown_names(class_names)}")
  by_label: Dict[int, str] = {}
  for f, i in labels.items():
    if i in by_label:
      raise ValueError(f"class folders {ascii(by_label[i])} and {ascii(f)} in {root!r} are both "
                       f"the model's class {class_names[i]!r} (one name in two Unicode spellings):"
                       " merge them")
    by_label[i] = f
  return labels


def _label_index(root: str, folders: Tuple[str, ...], class_names: Optional[Tuple[str, ...]],
                 num_classes: Optional[int]) -> dict:
  """{class folder: label} by name (class_names), or by sorted position (see ImageFolder)."""
  if class_names is not None:
    return _labels_by_name(root, folders, class_names)
  if num_classes == 0:
    raise ValueError(f"{root!r} has class folders but the model has no classification head "
                     "(num_classes=0): there are no outputs to match them to")
  if num_classes is not None and len(folders) != num_classes:
    raise ValueError(f"{root!r} has {counted(len(folders), 'class folder')} "
                     f"{list(folders)[:20]} but the "
                     f"model has {num_classes} classes and records no class names, so folders "
                     f"cannot be matched to outputs; use exactly {num_classes} class folders, "
                     "or the images without class folders (a flat folder, read unlabelled: no "
                     "accuracy), or weights saved with their class names "
                     "(vitprune.checkpoint.save_weights(..., class_names=...))")
  return {f: i for i, f in enumerate(folders)}


@dataclasses.dataclass(frozen=True, eq=False)
class ArrayDataset:
  """In-memory uint8 images served as PIL images, so they take the same path as files on disk.

  Attributes:
    images: uint8 `[N, H, W]` (grayscale) or `[N, H, W, C]` with C in {1, 3, 4}.
    labels: int32 `[N]`, -1 for unlabelled samples.
    classes: class names (index -> name); `()` when unlabelled.
  """
  images: np.ndarray
  labels: np.ndarray
  classes: Tuple[str, ...] = ()

  def __post_init__(self):
    images = np.asarray(self.images)
    labels = np.asarray(self.labels)
    if labels.size == 0:          # ([] is float64: no label to be a float)
      labels = labels.astype(np.int32)
    if images.dtype != np.uint8:
      raise ValueError(f"ArrayDataset images must be uint8, got {images.dtype}")
    if images.ndim == 4 and images.shape[-1] not in (1, 3, 4) or images.ndim not in (3, 4):
      raise ValueError(f"ArrayDataset images must be [N, H, W] or [N, H, W, C in 1/3/4], got "
                       f"shape {images.shape}")
    if labels.shape != images.shape[:1]:
      raise ValueError(f"ArrayDataset labels shape {labels.shape} does not match "
                       f"{images.shape[0]} images")
    # (float labels were truncated, 2**32 + 3 wrapped to 3, NaN made the set unlabelled)
    if labels.dtype.kind not in "iu" or (labels.size and not (
        labels.min() >= -1 and labels.max() <= np.iinfo(np.int32).max)):
      raise ValueError(f"ArrayDataset labels must be integers >= -1 (-1: unlabelled), got "
                       f"{labels.dtype} {reprlib.repr(labels.tolist())}")
    classes = self.classes
    if isinstance(classes, np.ndarray):     # (an array of names: its elements, as before)
      classes = classes.tolist()
    if not isinstance(classes, (tuple, list)) or len(classes):
      classes = check_class_names(classes, source="ArrayDataset classes")
      if labels.size and labels.max() >= len(classes):
        raise ValueError(f"ArrayDataset labels go up to {labels.max()} but there are "
                         f"{len(classes)} classes")
    object.__setattr__(self, "classes", tuple(classes))
    object.__setattr__(self, "images", images)
    object.__setattr__(self, "labels", labels.astype(np.int32))

  @property
  def labelled(self) -> bool:
    return bool(len(self.labels)) and bool(np.all(self.labels >= 0))

  @property
  def num_classes(self) -> int:
    return len(self.classes)

  def __len__(self) -> int:
    return int(self.images.shape[0])

  def label(self, i: int) -> Optional[int]:
    return int(self.labels[i]) if self.labels[i] >= 0 else None

  def load(self, i: int) -> Image.Image:
    img = self.images[i]
    if img.ndim == 3 and img.shape[-1] == 1:
      img = img[..., 0]
    return Image.fromarray(np.ascontiguousarray(img))


class Dataset(Protocol):
  """What `iterate_batches` needs: `len`, per-sample PIL `load(i)` and int `labels` `[N]`."""
  labels: np.ndarray

  def __len__(self) -> int: ...

  def load(self, i: int) -> Image.Image: ...


# ----------------------------------------------------------------------------------------------
# timm eval preprocessing.
# ----------------------------------------------------------------------------------------------


def _check_prep(prep: Preprocessing) -> Tuple[np.ndarray, np.ndarray]:
  """`prep` (checked when it was built: `config.Preprocessing`) -> float32 mean and std, each
  `[C]`."""
  if not isinstance(prep, Preprocessing):
    raise TypeError(f"prep must be a vitprune.config.Preprocessing, got {type(prep).__name__}")
  mean = np.asarray(prep.mean, np.float32).reshape(-1)
  std = np.asarray(prep.std, np.float32).reshape(-1)
  return np.broadcast_to(mean, (prep.channels,)), np.broadcast_to(std, (prep.channels,))


def scale_size(prep: Preprocessing) -> int:
  """Shorter-side resize target of timm's eval transform: `floor(input_size / crop_pct)`."""
  return math.floor(prep.input_size / prep.crop_pct)


def resize_shorter_side(height: int, width: int, size: int) -> Tuple[int, int]:
  """`(new_h, new_w)` of torchvision `Resize(size)` (int): shorter side -> size, ratio kept.

  The long side is `int(size * long / short)` (truncation), as in torchvision's
  `_compute_resized_output_size`; a square image goes to `size x size`.
  """
  short, long = (width, height) if width <= height else (height, width)
  new_short, new_long = size, int(size * long / short)
  new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
  return new_h, new_w


def center_crop_offsets(height: int, width: int, crop: int) -> Tuple[int, int]:
  """`(top, left)` of torchvision `CenterCrop(crop)` on a `height x width` image (no padding).

  Uses Python's `round` (half to even) on `(h - crop) / 2`, exactly as torchvision.
  """
  return int(round((height - crop) / 2.0)), int(round((width - crop) / 2.0))


def _center_crop(arr: np.ndarray, crop: int) -> np.ndarray:
  """torchvision `CenterCrop(crop)` on `[H, W, C]` uint8, zero-padding sides smaller than crop."""
  h, w = arr.shape[:2]
  if crop > h or crop > w:
    pad_h, pad_w = max(crop - h, 0), max(crop - w, 0)
    arr = np.pad(arr, ((pad_h // 2, (pad_h + 1) // 2), (pad_w // 2, (pad_w + 1) // 2), (0, 0)))
    h, w = arr.shape[:2]
  top, left = center_crop_offsets(h, w, crop)
  return arr[top:top + crop, left:left + crop]


def preprocess_image(image: Image.Image, prep: Preprocessing) -> np.ndarray:
  """timm `transforms_imagenet_eval` (crop_mode 'center') on one PIL image.

  Steps: convert to RGB (or 'L' when `prep.channels == 1`), as timm's loader does before any
  transform; resize the shorter side to `floor(input_size / crop_pct)` with PIL's filter for
  `prep.interpolation` (skipped when the size already matches, like torchvision); torchvision
  `CenterCrop(input_size)`; scale to [0, 1] and normalise `(x - mean) / std` in float32.

  Args:
    image: any PIL image (grayscale is replicated to 3 channels, alpha dropped).
    prep: the model's `Preprocessing`.

  Returns:
    float32 `[S, S, C]` with `S = prep.input_size`, `C = prep.channels`.
  """
  mean, std = _check_prep(prep)
  img = to_model_mode(check_8bit(image), prep.channels)
  new_h, new_w = resize_shorter_side(img.height, img.width, scale_size(prep))
  if new_h * new_w > MAX_RESIZED_PIXELS:
    raise ValueError(f"a {img.width}x{img.height} image would be resized to {new_w}x{new_h} "
                     f"pixels before the {prep.input_size}x{prep.input_size} center crop (more "
                     f"than {MAX_RESIZED_PIXELS}): its aspect ratio is too extreme")
  if (new_h, new_w) != (img.height, img.width):
    img = img.resize((new_w, new_h), _PIL_FILTERS[prep.interpolation])
  arr = np.asarray(img, np.uint8).reshape(img.height, img.width, prep.channels)
  arr = _center_crop(arr, prep.input_size)
  x = arr.astype(np.float32) / np.float32(255.0)
  return (x - mean) / std


# ----------------------------------------------------------------------------------------------
# Batching.
# ----------------------------------------------------------------------------------------------


def batch_valid_mask(indices: np.ndarray) -> np.ndarray:
  """bool `[B]`: True for real samples, False for padding rows (index -1)."""
  return np.asarray(indices) >= 0


def pad_to_batch(images: np.ndarray, labels: np.ndarray, indices: np.ndarray,
                 batch_size: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Pads a partial batch to `batch_size` rows so compiled graphs keep one batch shape.

  Args:
    images: `[b, ...]`; labels: `[b]`; indices: `[b]`, with `b <= batch_size`.
    batch_size: the fixed batch size B.

  Returns:
    `(images [B, ...], labels [B] int32, indices [B] int64, valid [B] bool)`; padding rows have
    zero images, label -1 and index -1, and `valid` is False there.
  """
  images, labels, indices = np.asarray(images), np.asarray(labels), np.asarray(indices)
  b = images.shape[0]
  if labels.shape != (b,) or indices.shape != (b,):
    raise ValueError(f"pad_to_batch: images have {b} rows but labels {labels.shape} and "
                     f"indices {indices.shape}")
  if b > batch_size:
    raise ValueError(f"pad_to_batch: batch has {b} rows, more than batch_size={batch_size}")
  pad = batch_size - b
  images = np.concatenate([images, np.zeros((pad,) + images.shape[1:], images.dtype)])
  labels = np.concatenate([labels.astype(np.int32), np.full((pad,), -1, np.int32)])
  indices = np.concatenate([indices.astype(np.int64), np.full((pad,), -1, np.int64)])
  valid = np.arange(batch_size) < b
  return images, labels, indices, valid


def _check_indices(indices, n: int) -> np.ndarray:
  """Validates sample indices into a dataset of size `n`; returns int64 `[M]`."""
  idx = np.asarray(indices)
  if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
    raise ValueError(f"indices must be a 1-D integer array, got shape {idx.shape} "
                     f"dtype {idx.dtype}")
  if idx.size == 0:
    raise ValueError("indices is empty: nothing to iterate")
  if idx.min() < 0 or idx.max() >= n:
    raise ValueError(f"indices must lie in [0, {n}), got range [{idx.min()}, {idx.max()}]")
  return idx.astype(np.int64)


def iterate_batches(dataset: Dataset, prep: Preprocessing, batch_size: int, *,
                    indices: Optional[Sequence[int]] = None, drop_remainder: bool = False,
                    pad_remainder: bool = True, num_workers: int = 0
                    ) -> Iterator[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """Streams preprocessed batches in a fixed, deterministic order.

  Padding policy: every yielded batch has exactly `batch_size` rows. The last partial batch is
  dropped when `drop_remainder=True`; otherwise it is padded (zero images, label -1, index -1)
  and `batch_valid_mask(indices)` tells real rows from padding. `pad_remainder=False` instead
  yields it short (a second compiled shape).

  Args:
    dataset: an `ImageFolder`, `ArrayDataset` or anything with `len`, `load(i)`, `labels`.
    prep: eval preprocessing (see `preprocess_image`).
    batch_size: B.
    indices: sample indices to visit, in this order; default all, in dataset order.
    drop_remainder: drop the last partial batch.
    pad_remainder: pad the last partial batch to B (ignored when dropping).
    num_workers: > 0 decodes/preprocesses with that many threads; order is unchanged.

  Yields:
    `(images [B, S, S, C] float32, labels [B] int32 (-1: unlabelled/padding),
    indices [B] int64 (-1: padding))`.
  """
  if isinstance(batch_size, (bool, np.bool_)) or \
      not isinstance(batch_size, (int, np.integer)) or batch_size < 1:     # (True ran as 1)
    raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
  if isinstance(num_workers, (bool, np.bool_)) or \
      not isinstance(num_workers, (int, np.integer)) or num_workers < 0:  # (None: a TypeError)
    raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}")
  check_switch("drop_remainder", drop_remainder)     # ('no' dropped the last images)
  check_switch("pad_remainder", pad_remainder)
  _check_prep(prep)
  idx = np.arange(len(dataset), dtype=np.int64) if indices is None else _check_indices(
      indices, len(dataset))
  return _batches(dataset, prep, batch_size, idx, drop_remainder, pad_remainder, num_workers)


def _batches(dataset, prep, batch_size, idx, drop_remainder, pad_remainder, num_workers):
  """The generator behind `iterate_batches` (arguments already validated)."""
  labels = np.asarray(dataset.labels, np.int32)

  def one(i):
    image = dataset.load(int(i))
    try:
      return preprocess_image(image, prep)
    except ValueError as e:
      where = (f"image file {dataset.path(int(i))!r}" if hasattr(dataset, "path")
               else f"image {int(i)}")
      raise ValueError(f"{where}: {e}") from None

  pool = concurrent.futures.ThreadPoolExecutor(num_workers) if num_workers else None
  try:
    for start in range(0, len(idx), batch_size):
      chunk = idx[start:start + batch_size]
      if len(chunk) < batch_size and drop_remainder:
        return
      imgs = list(pool.map(one, chunk)) if pool else [one(i) for i in chunk]
      batch = (np.stack(imgs), labels[chunk], chunk)
      if len(chunk) < batch_size and pad_remainder:
        batch = pad_to_batch(*batch, batch_size)[:3]
      yield batch
  finally:
    if pool:
      pool.shutdown(wait=True, cancel_futures=True)


# ----------------------------------------------------------------------------------------------
# Class-balanced subsets.
# ----------------------------------------------------------------------------------------------


def _quotas(counts: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
  """Per-class sample counts summing to `n`, as equal as the class sizes `counts` allow.

  Water filling: every class gets min(count, q) for the highest level q those sum to at most
  `n`; the rest go one each to random classes with images left above q. So a class smaller
  than its share gives all it has and the others differ by at most one (sharing the shortfall
  round by round gave a 12-image class fewer samples than a 10-image one).
  """
  lo, hi = 0, int(counts.max())
  while lo < hi:                       # the highest q with sum(min(counts, q)) <= n
    mid = (lo + hi + 1) // 2
    if int(np.minimum(counts, mid).sum()) <= n:
      lo = mid
    else:
      hi = mid - 1
  quota = np.minimum(counts, lo)
  open_ = np.flatnonzero(counts > lo)
  quota[open_[rng.choice(len(open_), n - int(quota.sum()), replace=False)]] += 1
  return quota


def check_seed(seed: Any, name: str = "seed") -> int:
  """`seed` as an int when it is a whole number >= 0 (what numpy's generators take), else
  ValueError naming it (numpy's own said "expected non-negative integer")."""
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
    raise ValueError(f"{name} must be an int >= 0, got {seed!r}")
  return int(seed)


def balanced_subset(labels: Sequence[int], n: int, seed: int) -> np.ndarray:
  """A seeded class-balanced random sample of `n` indices (never "the first n files").

  Each class gets `n // K` samples and the remaining `n % K` go to randomly chosen classes; a
  class with fewer images than its share contributes all of them and the shortfall is spread
  over the others, which then differ by at most one (`_quotas`). Within a class the samples are
  drawn uniformly without replacement.

  Args:
    labels: int `[N]` class labels, all >= 0.
    n: sample size, `1 <= n <= N`.
    seed: seed of the `numpy.random.Generator`; the same seed gives the same subset.

  Returns:
    int64 `[n]` sorted indices into `labels`.
  """
  labels = np.asarray(labels)
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"labels must be a 1-D integer array, got shape {labels.shape} "
                     f"dtype {labels.dtype}")
  if labels.size and labels.min() < 0:
    raise ValueError("balanced_subset needs labelled data; labels contain negative values")
  if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:   # (True: 1 image)
    raise ValueError(f"subset size n must be a positive int, got {n!r}")
  if n > labels.size:
    raise ValueError(f"subset size n={n} exceeds the dataset size {labels.size}")
  rng = np.random.default_rng(check_seed(seed))
  classes, counts = np.unique(labels, return_counts=True)
  quota = _quotas(counts, int(n), rng)
  picked = [rng.choice(np.flatnonzero(labels == c), q, replace=False)
            for c, q in zip(classes, quota) if q]
  return np.sort(np.concatenate(picked)).astype(np.int64)


# ----------------------------------------------------------------------------------------------
# Data identity.
# ----------------------------------------------------------------------------------------------


def _selected(n: int, indices) -> np.ndarray:
  """Sorted unique indices (all of `0..n-1` when None): fingerprints identify a set."""
  if indices is None:
    return np.arange(n, dtype=np.int64)
  return np.unique(_check_indices(indices, n))


def _fingerprint_name(name: str) -> str:
  """`name` as a fingerprint line holds it: as it is, or JSON-quoted where it holds a tab or a
  line feed or starts with a quote (else 'a.png<TAB>5<LF>b.png' named as one file gave the
  lines of two: two folders, one fingerprint; a quoted name starts with a quote, a plain one
  never does). Other names keep the digests estimates recorded."""
  if "\t" in name or "\n" in name or name.startswith('"'):
    return json.dumps(name)
  return name


def dataset_fingerprint(dataset_or_arrays, indices: Optional[Sequence[int]] = None) -> str:
  """sha256 hex digest identifying the samples `indices` (default all) of a dataset.

  * `ImageFolder`: over the sorted relative file paths (which include the class folder) and
    file sizes in bytes, plus the labelled flag.
  * `ArrayDataset`, `(images, labels)` or a bare images array: over dtype, shape and bytes of
    the selected images and labels.

  The order and duplicates of `indices` do not matter.
  """
  h = hashlib.sha256()
  if isinstance(dataset_or_arrays, ImageFolder):
    ds = dataset_or_arrays
    h.update(f"imagefolder labelled={ds.labelled}\n".encode())
    if ds.labelled_by_name:   # labels depend on the class names too
      h.update(f"class_names={list(ds.classes)}\n".encode())
    for i in _selected(len(ds), indices):
      h.update(f"{_fingerprint_name(ds.files[i])}\t{_image_file_size(ds.path(int(i)))}\n"
               .encode("utf-8", "surrogateescape"))
    return h.hexdigest()
  if isinstance(dataset_or_arrays, ArrayDataset):
    images, labels = dataset_or_arrays.images, dataset_or_arrays.labels
  elif isinstance(dataset_or_arrays, tuple) and len(dataset_or_arrays) == 2:
    images, labels = dataset_or_arrays
  elif isinstance(dataset_or_arrays, np.ndarray):
    images, labels = dataset_or_arrays, None
  else:
    raise ValueError(f"cannot fingerprint {type(dataset_or_arrays).__name__}; expected "
                     "ImageFolder, ArrayDataset, (images, labels) or an images array")
  images = np.asarray(images)
  sel = _selected(images.shape[0], indices)
  parts = [("images", images[sel])]
  if labels is not None:
    parts.append(("labels", np.asarray(labels).astype(np.int64)[sel]))
  h.update(b"arrays\n")
  for name, arr in parts:
    arr = np.ascontiguousarray(arr)
    h.update(f"{name} {arr.dtype.str} {arr.shape}\n".encode())
    h.update(arr.tobytes())
  return h.hexdigest()


def images_content_sha256(dataset: Any, indices: Optional[Sequence[int]] = None
                          ) -> Optional[str]:
  """sha256 over the bytes of the selected files of an `ImageFolder` (each with its name, in
  the fingerprint's order); None for arrays, whose fingerprint covers their pixels. The
  fingerprint reads names and sizes only, so two folders of the same names and sizes and
  other pixels (BMP, PPM, uncompressed TIFF: the size follows the image size) shared it."""
  if not isinstance(dataset, ImageFolder):
    return None
  digests = _FILE_SHA256.setdefault(dataset, {})   # (each file read once per dataset: a
  h = hashlib.sha256(b"imagefolder contents\n")    # held-out split hashes its parts again)
  for i in _selected(len(dataset), indices):
    i = int(i)
    if i not in digests:
      digests[i] = _image_file_sha256(dataset.path(i))
    h.update(f"{_fingerprint_name(dataset.files[i])}\t{digests[i]}\n"
             .encode("utf-8", "surrogateescape"))
  return h.hexdigest()


def _image_file_sha256(path: str) -> str:
  """`file_sha256` of an image file, its failure worded as `load_image`'s (a raw errno line
  named no role: the content digest reads every file before any is decoded)."""
  return _read_image_file(file_sha256, path)


def _image_file_size(path: str) -> int:
  """The size in bytes of an image file (the fingerprint's), its failure worded likewise."""
  return _read_image_file(os.path.getsize, path)


def _read_image_file(read, path: str):
  """`read(path)` of an image file of a scanned folder; a file gone since the scan, or one that
  cannot be opened, is an error naming it as `load_image` does."""
  try:
    return read(path)
  except FileNotFoundError:
    raise FileNotFoundError(f"image file {path!r} does not exist (removed since its folder was "
                            "read?)") from None
  except OSError as e:
    raise ValueError(f"image file {path!r} cannot be opened ({e.strerror or e})") from None


# Per `ImageFolder`, the sha256 of each file `images_content_sha256` read ({index: hex}).
_FILE_SHA256: "weakref.WeakKeyDictionary[ImageFolder, Dict[int, str]]" = (
    weakref.WeakKeyDictionary())


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """Identity of the evaluated data, for estimate files (`dataclasses.asdict`-able).

  Attributes:
    kind: 'imagefolder' | 'arrays'.
    source: the ImageFolder root, or a caller-given name for arrays (e.g. 'sklearn_digits').
    num_examples: number of distinct selected samples.
    classes: class names (empty when unlabelled).
    labelled: whether labels are available.
    fingerprint: `dataset_fingerprint` of the selection.
    content_sha256: `images_content_sha256` of the selection (image folders; None: arrays).
  """
  kind: str
  source: str
  num_examples: int
  classes: Tuple[str, ...]
  labelled: bool
  fingerprint: str
  content_sha256: Optional[str] = None

  def to_dict(self) -> dict:
    d = dataclasses.asdict(self)
    d["classes"] = list(self.classes)
    if d["content_sha256"] is None:      # (arrays: as estimates recorded them before)
      del d["content_sha256"]
    return d


def dataset_info(dataset: Union[ImageFolder, ArrayDataset],
                 indices: Optional[Sequence[int]] = None, *, name: Optional[str] = None
                 ) -> DatasetInfo:
  """`DatasetInfo` of `dataset` restricted to `indices` (default all)."""
  is_folder = isinstance(dataset, ImageFolder)
  return DatasetInfo(
      kind="imagefolder" if is_folder else "arrays",
      source=name or (dataset.root if is_folder else "arrays"),
      num_examples=int(_selected(len(dataset), indices).size),
      classes=tuple(dataset.classes),
      labelled=bool(dataset.labelled),
      fingerprint=dataset_fingerprint(dataset, indices),
      content_sha256=images_content_sha256(dataset, indices))


# The bundled digits lived here until they moved to `vitprune.digits`; code that imports them
# from here keeps working, with a DeprecationWarning naming the new home.
_MOVED_TO_DIGITS = frozenset({
    "DIGITS_CLASSES", "DIGITS_FORMAT", "DIGITS_MARKER", "check_digits_folder", "digits_batches",
    "digits_copied_into", "digits_dataset", "digits_for_model", "digits_preprocessing",
    "digits_split", "digits_training_split", "is_digits_imagefolder", "load_digits_arrays",
    "stratified_split", "write_digits_imagefolder"})


def __getattr__(name: str):
  """`vitprune.data.<digits name>` -> `vitprune.digits.<name>` (moved; see `_MOVED_TO_DIGITS`)."""
  if name in _MOVED_TO_DIGITS:
    from vitprune import digits  # pylint: disable=g-import-not-at-top  (it imports this module)
    warnings.warn(f"vitprune.data.{name} moved to vitprune.digits.{name}", DeprecationWarning,
                  stacklevel=2)
    return getattr(digits, name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
