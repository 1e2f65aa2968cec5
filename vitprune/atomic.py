"""Atomic writes that never destroy what vitprune did not write.

* `write_bytes` / `write_json`: a file via a temporary sibling + `os.replace`.
* `staged_dir`: a directory filled in a temporary sibling and published by one `rename`. Without
  `overwrite` the publishing rename is the exclusive claim of the path (a directory cannot be
  renamed onto a non-empty directory on Linux), so of two concurrent writers exactly one succeeds
  and the other gets `FileExistsError`. With `overwrite`, only a target recognised by `is_ours`
  (a marker such as vitprune's `config.json` / `manifest.json`) is replaced; anything else (a
  regular file, a folder of someone else's files) is refused with `ForeignOutputError`.
* `staged_files`: several files of one directory published as one transaction (a staged sibling
  directory, committed by renaming it, then rolled forward file by file).
* `locked`: an exclusive `fcntl.flock` on a hidden sibling lock file (removed again on release).

Temporaries are hidden siblings named `.NAME.tmp-<pid>-<tag>-<random>` (staging),
`.NAME.old-<pid>-...` (the replaced directory, deleted once the new one is in place) and
`.NAME.commit-<pid>-...` (a committed `staged_files` transaction); the tag names the host and PID
namespace the pid belongs to, and the writer holds an flock on each while it works (taken
before the name appears: each is made as `.NAME.new-...`, locked, then renamed). A run
killed part-way leaves them behind; the next write of the same NAME removes those whose writer
is gone (`cleanup_stale`: by the PID in this namespace, by the lock from another), restoring
a replaced directory that a killed run had moved aside before publishing its own, and finishing
a committed `staged_files` transaction. Ctrl-C and SIGTERM are held during the publishing
renames (`console.interrupts_held`) and raised once the output is whole; the error line then
names it.
"""
from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import functools
import hashlib
import json
import mimetypes
import os
import re
import secrets
import shutil
import socket
import tempfile
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from vitprune import console
from vitprune import jsonio
from vitprune.config import check_path, check_switch

# Test hook: called with a phase name at each step of a write ('staged', 'moved_aside',
# 'published', 'file_written', 'committed', 'renamed:<file>'); fault-injection tests make it
# SIGKILL the process. None in normal use.
fault_hook: Optional[Callable[[str], None]] = None


def _phase(name: str) -> None:
  if fault_hook is not None:
    fault_hook(name)


NO_ROOM = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)   # a full disk, file-size limit or quota


def _named(e: BaseException, path: str) -> BaseException:
  """A full disk or file-size limit hit while writing `path`, as an OSError naming it (the
  write call's own error names no file: '[Errno 28] No space left on device'; one made while
  creating the hidden temporary beside it names that, gone by the time it is read); `e`
  otherwise."""
  if not (isinstance(e, OSError) and e.errno in NO_ROOM):
    return e
  path_abs = os.path.abspath(path)       # (a relative --out was compared as given)
  temporary = (isinstance(e.filename, str) and os.path.dirname(os.path.abspath(e.filename)) ==
               os.path.dirname(path_abs) and os.path.basename(e.filename).startswith(
                   f".{os.path.basename(path_abs)}."))
  if (not e.filename or temporary) and " while writing " not in str(e.strerror):
    return OSError(e.errno, f"{e.strerror} while writing {path}")
  return e


def _make_dirs(directory: str) -> List[str]:
  """`os.makedirs(directory, exist_ok=True)` -> the directories it created, outermost first
  (`_take_back` removes them after a write failed for lack of room: a full disk left them
  behind)."""
  missing, d = [], os.path.abspath(directory)
  while not os.path.lexists(d) and os.path.dirname(d) != d:
    missing.append(d)
    d = os.path.dirname(d)
  missing.reverse()
  try:
    os.makedirs(directory, exist_ok=True)
  except BaseException as e:
    _take_back(missing, e)
    raise
  return missing


@contextlib.contextmanager
def _before_temporary(made: Sequence[str], path: str) -> Iterator[None]:
  """A write of `path` until its temporary exists: an error takes back the folders `made`
  (`_take_back`) and names `path` (`_named`)."""
  try:
    yield
  except BaseException as e:
    _take_back(made, e)
    named = _named(e, path)
    if named is e:
      raise
    raise named from None


def _take_back(made: Sequence[str], e: BaseException) -> None:
  """Removes the directories `_make_dirs` created for a write (`made`), innermost first, while
  they are empty, when the write failed for lack of room (`e`: a full disk, no inode, a quota).
  Only then: a concurrent writer entering the same new folder would lose it (on a full disk it
  fails too)."""
  if not (isinstance(e, OSError) and e.errno in NO_ROOM):
    return
  for d in reversed(made):
    try:
      os.rmdir(d)
    except OSError:
      return


def _unstaged(e: BaseException, staging: str, final: str) -> BaseException:
  """`e` naming a file inside the hidden folder `staging` (a full disk, `_named`), named where it
  was going in `final` instead: the temporary is gone by the time the error is read."""
  if not (isinstance(e, OSError) and e.errno in NO_ROOM):
    return e
  inside = f" while writing {staging}{os.sep}"
  if inside in str(e.strerror):
    return OSError(e.errno, str(e.strerror).replace(inside, f" while writing {final}{os.sep}", 1))
  if isinstance(e.filename, str) and e.filename.startswith(staging + os.sep):
    return OSError(e.errno, e.strerror, final + e.filename[len(staging):])
  return e


def _before_publish() -> None:
  """Nothing is published after a Ctrl-C, even one a callback swallowed (`console`)."""
  console.raise_if_interrupted()


class ReplacedMeanwhileError(FileExistsError):
  """The output was published by another writer after this one began (`staged_dir(replaces=)`,
  `check_unchanged`): replacing it would drop that writer's results without a word."""


class _AnyOutput:
  def __repr__(self) -> str:
    return "ANY_OUTPUT"


# `staged_dir(replaces=)`, `check_unchanged`: whatever is there at publishing (if ours)
ANY_OUTPUT = _AnyOutput()


# What a path no file can be at raises (a name too long: the run's own check names it, not the
# raw "[Errno 36] File name too long" of the first look at it).
_NO_SUCH_PATH = (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG)


def file_stamp(path: str) -> Optional[Tuple[int, int, int, int]]:
  """Which file is at `path` now: (device, inode, size, modification ns); None when there is
  none. Every write renames a new file there, so a stamp taken when a run began tells, when it
  writes, whether another run wrote the file meanwhile (`check_unchanged`)."""
  try:
    st = os.lstat(path)
  except OSError as e:
    if e.errno in _NO_SUCH_PATH:
      return None
    raise
  return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def read_folder(path: str, read: Callable[[], Any]) -> Any:
  """`read()` of the folder `path` (weights, an artifact), once more when another run replaced
  the folder while it was read: a reader then met two versions' files (orbax restored the old
  index with the new data: "Truncated Zstd-compressed stream", as if the weights were corrupt).
  The second read's error, if any, is the one raised."""
  def identity() -> Optional[Tuple[int, int]]:
    try:
      st = os.stat(path)
    except OSError:
      return None
    return st.st_dev, st.st_ino
  began = identity()
  try:
    return read()
  except (OSError, ValueError):
    if identity() == began:          # the same folder throughout: its own error
      raise
  return read()


def check_unchanged(path: str, replaces: Any) -> None:
  """`ReplacedMeanwhileError` unless the file at `path` is the one stamped `replaces` (its
  `file_stamp` when the run began; None: there was none then) or none (removed meanwhile: no
  one's output is lost); ANY_OUTPUT checks nothing. Call it under `locked(path)`, right before
  writing: two runs writing one file at once both exited 0 saying they wrote it, and the file
  held one of them."""
  now = file_stamp(path)
  if replaces is not ANY_OUTPUT and now is not None and now != replaces:
    raise ReplacedMeanwhileError(
        f"{path} was written by another run after this one began (two runs writing one output "
        "at once): this run does not replace that run's output; give each run its own output")


class ForeignOutputError(FileExistsError):
  """The target exists but was not written by vitprune (so it is never replaced)."""


# ----------------------------------------------------------------------------- ownership markers


def json_marker(filename: str, *formats: str,
                layout: Optional[Sequence[str]] = None) -> Callable[[str], bool]:
  """Predicate: `path` is a directory whose `filename` is a JSON object with "format" among
  `formats` (e.g. `json_marker('config.json', 'vitprune-weights')`).

  layout: regular expressions matching every other '/'-separated relative path such a folder
    holds when vitprune wrote it (default: `DIRECTORY_LAYOUTS`' for one of `DIRECTORY_MARKERS`);
    `unlisted_files` judges by them (the predicate's `layout`) a folder whose INVENTORY_FILE is
    lost (copied with `cp dir/*`, truncated, or written before inventories), instead of
    deleting whatever it holds."""
  if layout is None:
    layout = DIRECTORY_LAYOUTS.get((filename, *formats), ())

  def is_ours(path: str) -> bool:
    if not os.path.isfile(os.path.join(path, filename)):
      return False
    try:
      with open(os.path.join(path, filename)) as f:
        doc = json.load(f)
    except (OSError, ValueError, RecursionError):
      return False
    return isinstance(doc, dict) and doc.get("format") in formats

  is_ours.description = f"a {' / '.join(formats)} folder (with {filename})"
  is_ours.layout = re.compile("|".join([re.escape(filename), *layout])) if layout else None
  return is_ours


# Directory outputs vitprune writes, by marker file and format: weights directories
# (checkpoint), deployed artifacts (deploy) and digits image folders (data).
WEIGHTS_MARKER = ("config.json", "vitprune-weights")
DIRECTORY_MARKERS = (WEIGHTS_MARKER, ("manifest.json", "vitprune-deploy"),
                     (".vitprune-imagefolder.json", "vitprune-digits-imagefolder"))
# Their layouts (`json_marker`'s, for these markers): the training metrics and the orbax params;
# the jax export, its params and the IREE targets' records, modules and weights; <class>/<i>.png;
# and an IREE profiling kit's (not a default output: `is_vitprune_output` never claims one).
DIRECTORY_LAYOUTS = {
    DIRECTORY_MARKERS[0]: (r"metrics\.json", r"params/.*"),
    DIRECTORY_MARKERS[1]: (r"forward\.jax_export", r"params/.*",
                           r"iree/[^/]+\.(?:json|vmfb|bin)"),
    DIRECTORY_MARKERS[2]: (r"[0-9]/[0-9]{4,}\.png",),
    ("kit.json", "vitprune-edge-kit"): (r"weights\.bin", r"modules/[^/]+\.vmfb"),
}


def _directory_marker(path: str) -> Optional[Tuple[str, str]]:
  """The (marker file, format) of `DIRECTORY_MARKERS` that directory `path` carries, or None."""
  return next(((name, fmt) for name, fmt in DIRECTORY_MARKERS if json_marker(name, fmt)(path)),
              None)


def is_vitprune_output(path: str) -> bool:
  """Default ownership test: a directory carrying one of `DIRECTORY_MARKERS` (a weights
  directory, a deployed artifact or a digits image folder)."""
  return _directory_marker(path) is not None


is_vitprune_output.description = ("a vitprune weights, artifact or image folder (with its "
                                  "config.json / manifest.json / .vitprune-imagefolder.json)")


def _layout(path: str, is_ours: Callable[[str], bool]) -> Optional[re.Pattern]:
  """The layout `unlisted_files` holds `path` to: `is_ours`' own, or for the default
  `is_vitprune_output` that of the marker `path` carries."""
  if is_ours is is_vitprune_output:
    marker = _directory_marker(path)
    return None if marker is None else json_marker(*marker).layout
  return getattr(is_ours, "layout", None)


def describe(path: str) -> str:
  """What kind of thing an existing `path` is, for messages ('a folder', 'a symbolic link')."""
  if os.path.islink(path):
    if os.path.exists(path):
      return "a symbolic link"
    # (a loop was called "a dangling symbolic link": a probe)
    return "a loop of symbolic links" if jsonio.is_link_loop(path) else "a dangling symbolic link"
  if os.path.isdir(path):
    return "a folder"
  return ("a regular file" if os.path.isfile(path) else
          "a special file (a device, FIFO or socket)")


INVENTORY_FILE = ".vitprune-files.json"   # every file a staged directory held when published


def _tree_files(directory: str) -> List[str]:
  """Every entry under `directory` that replacing it would delete, relative and '/'-separated,
  sorted: its files, its links (one to a folder is one entry, not followed) and its empty
  folders ('name/'). A user's link to a folder of data, or an empty folder, added inside an
  output was deleted by --overwrite without a word: a walk lists files only."""
  entries = []
  for d, dirs, files in os.walk(directory):
    rel = os.path.relpath(d, directory).replace(os.sep, "/")
    prefix = "" if rel == "." else rel + "/"
    entries += [prefix + f for f in files]
    entries += [prefix + n for n in dirs if os.path.islink(os.path.join(d, n))]
    if not dirs and not files and prefix:
      entries.append(prefix)
  return sorted(entries)


_has_inventory = json_marker(INVENTORY_FILE, "vitprune-inventory")


def _write_inventory(directory: str) -> None:
  """Lists every file under `directory` in its INVENTORY_FILE, with a random id of this publish
  (`output_stamp`: a folder's inode alone is reused by the next one made)."""
  with open(os.path.join(directory, INVENTORY_FILE), "w") as f:
    json.dump({"format": "vitprune-inventory", "files": _tree_files(directory),
               "publish": os.urandom(8).hex()}, f)


def _listed_files(directory: str) -> Optional[set]:
  """The relative paths `directory`'s INVENTORY_FILE lists, None when it cannot be read."""
  try:
    with open(os.path.join(directory, INVENTORY_FILE)) as f:
      listed = json.load(f)["files"]
    return {rel for rel in listed if isinstance(rel, str)}
  except (OSError, ValueError, RecursionError, KeyError, TypeError):
    return None


def unlisted_files(directory: str, layout: Optional[re.Pattern] = None) -> List[str]:
  """Files under `directory` (links and empty folders too: `_tree_files`) that its
  INVENTORY_FILE does not list (someone added them after we published it), sorted. When the
  inventory cannot be read (lost in a copy, truncated, or written before inventories): the
  files outside `layout` (`json_marker`'s: a NOTES.txt beside an artifact, a kit's or digits
  folder's files was deleted with them), [] without one (the caller's predicate decides)."""
  files = [rel for rel in _tree_files(directory) if rel != INVENTORY_FILE
           and not os.path.basename(rel).startswith(WRITE_CHECK_PREFIX)]
  listed = _listed_files(directory)
  if listed is None:
    return [] if layout is None else [rel for rel in files if not layout.fullmatch(rel)]
  return [rel for rel in files if rel not in listed]


def is_free(path: str) -> bool:
  """Whether `path` is absent or an empty directory (not a link): what a new output may take."""
  return not os.path.lexists(path) or (os.path.isdir(path) and not os.path.islink(path)
                                       and not os.listdir(path))


def check_not_mount_point(path: str) -> None:
  """OSError naming `path` when it is a mount point: an output directory is published by
  renaming a sibling onto it, which a mount point refuses (EBUSY, after all the work)."""
  if os.path.ismount(path):
    raise OSError(f"{path} is a mount point, which cannot be replaced by a new output "
                  "directory; write into a directory inside it")


def check_output_dir_target(path: str, overwrite: bool,
                            is_ours: Optional[Callable[[str], bool]],
                            hint: str = "pass overwrite=True / --overwrite",
                            flag: Optional[str] = None) -> None:
  """Before any work: `path` may become a new output directory (absent or empty: `is_free`),
  or, with `overwrite`, replace one of ours (`check_replaceable`; `is_ours` None: any folder,
  the caller's own writer judges it); never a file, a mount point, nor inside a folder vitprune
  published whole (`staged_dir` refuses it after the work). What a killed writer left is
  cleaned first (`cleanup_stale`: the output it moved aside is put back and judged here, not
  refused by the publish after the work). Messages name `--flag=path` when `flag` is given
  (a CLI's check, `hint` then its own), else `path`."""
  check_switch("overwrite", overwrite)
  bare = without_trailing_sep(path)
  name = path if flag is None else f"--{flag}={path}"
  check_outside_published(bare, flag)
  cleanup_stale(path)
  if not os.path.lexists(bare):
    return
  if not os.path.isdir(path) and (flag is not None or is_ours is None):
    raise NotADirectoryError(f"{name} is {describe(bare)}, not a directory")
  check_not_mount_point(os.path.abspath(path))
  if is_ours is not None:      # (never ours: --overwrite would not help, so not hinted)
    check_replaceable(os.path.abspath(path) if flag else path, is_ours)
  occupied = os.listdir(path) if is_ours is None else not is_free(path)   # (a link: judged
  if occupied and not overwrite:                                          # as ours or not)
    raise FileExistsError(f"{name} already exists ({hint})")


def check_replaceable(path: str, is_ours: Callable[[str], bool]) -> None:
  """Raises `ForeignOutputError` naming `path` unless it is absent, an empty directory, or ours
  (`is_ours`, and holding no file beyond those we published there: `unlisted_files`); OSError
  for a mount point (`check_not_mount_point`)."""
  if not os.path.lexists(path):
    return
  check_not_mount_point(path)
  if is_free(path):
    return
  ours = os.path.isdir(path) and is_ours(path)     # (a link: the folder it leads to)
  # Ours, or published by vitprune (its inventory) with files added since (the main job's folder
  # with a NOTES.txt is not ours to replace: the added files are the reason, so name them).
  if not os.path.islink(path) and (ours or os.path.isfile(os.path.join(path, INVENTORY_FILE))):
    extra = unlisted_files(path, _layout(path, is_ours))
    if extra:
      lost = ("" if _listed_files(path) is not None else
              f" (its list of what vitprune wrote, {INVENTORY_FILE}, is missing or damaged, "
              "so its layout decides)")
      raise ForeignOutputError(
          f"refusing to replace {path}: it holds {', '.join(extra[:3])}"
          f"{f' and {len(extra) - 3} more' if len(extra) > 3 else ''}, which vitprune did not "
          f"write there{lost}; move them away or choose another output path")
    if ours:
      return
  what = getattr(is_ours, "description", "a vitprune output")
  aside = _moved_aside(os.path.abspath(path))     # (kept there while this is in its place)
  kept = ("" if aside is None else f" (the previous output there is kept in {aside}, moved "
          "aside by a writer killed while replacing it: put back once the path is free)")
  if os.path.islink(path) and ours:                                   # a link to ours: the
    raise ForeignOutputError(f"refusing to replace {path}: it is a symbolic link to {what}; "
                             "pass the folder itself (a link is never replaced) or choose "
                             f"another output path{kept}")
  raise ForeignOutputError(f"refusing to replace {path}: it is {describe(path)} that is not "
                           f"{what}; move it away or choose another output path{kept}")


def is_within(path: str, folder: str) -> bool:
  """Whether `path` is `folder` or lies inside it (links resolved; a name prefix is not)."""
  path, folder = os.path.realpath(path), os.path.realpath(folder)
  return os.path.commonpath([path, folder]) == folder


def walk_following_links(root: str, max_depth: Optional[int] = None
                         ) -> Iterator[Tuple[str, List[str], List[str]]]:
  """`os.walk(root, followlinks=True)` reaching each real folder once (a loop of links ends),
  descending at most `max_depth` folders below `root` (the entries of the deepest are still
  listed). Prune the yielded folder names in place to skip folders, as with `os.walk`."""
  walked = set()
  for dirpath, dirnames, files in os.walk(root, followlinks=True):
    real = os.path.realpath(dirpath)
    if real in walked:
      dirnames[:] = []
      continue
    walked.add(real)
    rel = os.path.relpath(dirpath, root)
    if max_depth is not None and rel != os.curdir and rel.count(os.sep) + 1 >= max_depth:
      dirnames[:] = []
    yield dirpath, dirnames, files


def _published_mark(folder: str) -> Optional[str]:
  """What marks `folder` as one vitprune published whole, for messages, or None: its
  INVENTORY_FILE (an artifact, a kit, weights, the main job's output), else, written before
  inventories existed, the marker file of a weights, artifact or digits image folder
  (`DIRECTORY_MARKERS`: such weights still load, and an output written into them was then
  refused by --overwrite as a file vitprune did not write there)."""
  if _has_inventory(folder):        # (a file of that name alone is not ours: its format is)
    return f"it lists its files in {INVENTORY_FILE}"
  marker = _directory_marker(folder)
  return None if marker is None else f"its {marker[0]} marks it, a {marker[1]} folder"


def published_folder_around(path: str, itself: bool = False) -> Optional[str]:
  """The nearest folder above `path` (or `itself`, from `path` up) that vitprune published
  whole (`_published_mark`), None if none."""
  real = os.path.realpath(path)      # (through a link into an artifact's iree/ too)
  folder = real if itself else os.path.dirname(real)
  while True:
    if _published_mark(folder) is not None:
      return folder
    parent = os.path.dirname(folder)
    if parent == folder:
      return None
    folder = parent


def check_outside_published(path: str, flag: Optional[str], itself: bool = False) -> None:
  """ValueError naming `--flag` (None: the path alone, a library call) when `path` lies inside
  (or, `itself`: a folder to write files into, is) a folder vitprune published whole: a result
  written into an artifact's iree/ was then read as a module record ('not a
  vitprune-edge-target record'), and such a folder is never replaced once it holds files it was
  not published with."""
  folder = published_folder_around(path, itself)
  if folder is not None:
    where = ("is a folder" if folder == os.path.realpath(path) else f"is inside {folder}, a "
             "folder")
    raise ValueError(f"{path if flag is None else f'--{flag}={path}'} {where} vitprune wrote as "
                     f"a whole ({_published_mark(folder)}): write elsewhere")


def check_output_file(path: str, flag: str = "output", overwrite: bool = True) -> None:
  """`path` is (or can become) a writable file outside the folders vitprune publishes whole;
  raises naming `--flag` otherwise."""
  check_switch("overwrite", overwrite)
  if not path:
    raise ValueError(f"--{flag} is empty")
  check_name_fits(path, flag)
  check_outside_published(path, flag)
  if os.path.isdir(path):
    raise IsADirectoryError(f"--{flag}={path} is a directory, not a file")
  if path.endswith(("/", os.sep)):     # passed every check, then the final rename failed
    raise IsADirectoryError(f"--{flag}={path} ends in '/': that names a directory, not a file")
  if os.path.lexists(path):
    if not overwrite:
      raise FileExistsError(f"--{flag}={path} already exists (pass --overwrite to replace it)")
    check_writable_dir(os.path.dirname(os.path.abspath(path)), f"--{flag}={path}")
    return
  check_creatable(path, flag)


def check_output_json(path: str, fmt: str, flag: str = "output",
                      companions: Sequence[str] = (), overwrite: bool = True) -> None:
  """`path` is a writable file path (`check_output_file`) that is absent or a JSON file of
  format `fmt` (`check_replaceable_json`: never a file someone else made; `companions` written
  with it likewise) whose name does not say another format (`check_json_name`)."""
  check_output_file(path, flag, overwrite=overwrite)
  check_replaceable_json(path, fmt, companions)
  check_json_name(path, flag)


def check_json_name(path: str, flag: Optional[str] = "output") -> None:
  """Raises when `path`'s suffix names a format other than JSON (by Python's built-in table of
  media types, not the machine's: `x.png`, `x.csv`, `x.txt`); a name without a known suffix
  passes (an estimate named `x.png` was written as JSON that an image viewer then refused)."""
  table = mimetypes.MimeTypes()
  kind = table.guess_type(path, strict=False)
  if kind == (None, None) or kind == ("application/json", None):
    return
  stem, suffix = os.path.splitext(os.path.basename(path))
  if kind[1] and {suffix, suffix.lower()} & set(table.encodings_map):  # (r.tar.gz; not r.tgz)
    suffix = os.path.splitext(stem)[1] + suffix
  shown = path if flag is None else f"--{flag}={path}"
  raise ValueError(f"{shown} names a {suffix} file ({' '.join(x for x in kind if x)}), but the "
                   "file written is JSON: name it *.json")


def _existing_ancestor(path: str) -> str:
  anc = os.path.dirname(os.path.abspath(path))
  while not os.path.lexists(anc) and os.path.dirname(anc) != anc:
    anc = os.path.dirname(anc)
  return anc


def _fs_limit(path: str, name: str, default: int) -> int:
  """`os.pathconf` value `name` ('PC_NAME_MAX', 'PC_PATH_MAX') where `path` would be created;
  `default` when the system does not say; <= 0: no fixed limit."""
  try:
    return os.pathconf(_existing_ancestor(path), name)
  except (OSError, ValueError):
    return default


def _temp_overhead() -> int:
  """Bytes the longest hidden temporary's name adds to an output's (`.NAME.commit-PID-` and
  mkdtemp's 8 random characters)."""
  return len(os.fsencode(_temp_prefix("", "commit"))) + 8


def fitting_name(path: str, suffix: str) -> str:
  """`path` with `suffix` appended to its last name, that name shortened (from its end, before
  the suffix) where it and the hidden temporaries written beside it would not fit the file
  system's name limit (the main job's `<out_dir>.partial-XXXXXXXX` keep, 17 bytes longer than
  the --out_dir that passed `check_name_fits`, failed when it was needed)."""
  parent, name = os.path.split(os.path.abspath(path))
  limit = _fs_limit(parent, "PC_NAME_MAX", 255)
  if limit > 0:
    room = limit - _temp_overhead() - len(os.fsencode(suffix))
    while name and len(os.fsencode(name)) > room:
      name = name[:-1]
  return os.path.join(parent, name + suffix)


def check_name_fits(path: str, flag: str, origin: str = "") -> None:
  """ValueError naming `--flag` when the hidden temporaries a write of `path` makes beside it
  (`.NAME.commit-PID-xxxxxxxx`) would not fit the file system's name limit: a name of ~240
  bytes passed every check and failed at the publish, after all the work. `origin`: where a
  name the user did not give comes from (said in the message: no --flag value shortens it)."""
  name = os.path.basename(os.path.abspath(path))         # ('.', 'x/..', 'dir/' too)
  limit = _fs_limit(path, "PC_NAME_MAX", 255)
  if limit <= 0:                                         # no fixed limit
    return
  extra = _temp_overhead()
  size = len(os.fsencode(name))
  if size + extra > limit:
    raise ValueError(f"--{flag}: the name {name[:24]}..."
                     f"{f' ({origin})' if origin else ''} is {size} bytes; at most "
                     f"{limit - extra} fit (vitprune writes it through a hidden temporary "
                     f"beside it, {_temp_prefix('NAME', 'commit')}..., within the {limit}-byte "
                     "name limit)")


def _check_path_lengths(path: str, flag: str) -> None:
  """ValueError naming `--flag` when a folder to create in `path` has a name, or the whole path
  a length, the file system cannot hold (they failed at the final write, after the work)."""
  anc, full = _existing_ancestor(path), os.path.abspath(path)
  name_max = _fs_limit(path, "PC_NAME_MAX", 255)
  path_max = _fs_limit(path, "PC_PATH_MAX", 4096)
  for part in os.path.relpath(full, anc).split(os.sep):
    if name_max > 0 and len(os.fsencode(part)) > name_max:
      raise ValueError(f"--{flag}: the name {part[:24]}... in it is {len(os.fsencode(part))} "
                       f"bytes; the file system holds at most {name_max}")
  extra = _temp_overhead() + len(os.fsencode(os.path.basename(full))) + 1
  if path_max > 0 and len(os.fsencode(full)) + extra > path_max:
    raise ValueError(f"--{flag}: the path is {len(os.fsencode(full))} bytes; with the hidden "
                     f"temporary written beside it, at most {path_max} fit")


def check_creatable(path: str, flag: str) -> None:
  """`path` (absent) can be created: its nearest existing ancestor is a writable directory,
  and the names and length of the path fit the file system; raises naming `--flag`
  otherwise."""
  _check_path_lengths(path, flag)
  anc = _existing_ancestor(path)
  if not os.path.isdir(anc):      # (a dangling symbolic link was called "a file")
    what = "a file" if os.path.isfile(anc) and not os.path.islink(anc) else describe(anc)
    raise NotADirectoryError(f"--{flag}={path}: {anc} is {what}, not a directory")
  check_writable_dir(anc, f"--{flag}={path}")


WRITE_CHECK_PREFIX = ".vitprune-write-check-"    # `check_writable_dir`'s momentary probe file


def check_writable_dir(directory: str, what: str) -> None:
  """Raises PermissionError naming `what` unless a file can really be created in `directory`
  (tried: root passes `os.access` even where nothing can be created, e.g. /proc)."""
  try:
    fd, probe = tempfile.mkstemp(prefix=WRITE_CHECK_PREFIX, dir=directory)
  except OSError as e:
    raise PermissionError(f"{what}: cannot write in {directory} ({e.strerror or e})") from None
  os.close(fd)
  try:
    os.unlink(probe)
  except OSError as e:           # created but not removable: append-only (chattr +a), or alike
    raise PermissionError(
        f"{what}: {directory} lets files be created but not removed ({e.strerror or e}; "
        f"append-only?), and outputs are published by renaming: write elsewhere (the probe "
        f"{os.path.basename(probe)} could not be removed)") from None


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def foreign_plot(path: str) -> bool:
  """Whether `path`, named as a plot vitprune writes (`*.png`), is a regular file that does not
  start with the PNG signature: not a plot we wrote (a user's notes there were replaced by one
  unsaid, while a CSV of theirs was refused)."""
  if not path.lower().endswith(".png") or os.path.islink(path) or not os.path.isfile(path):
    return False
  try:
    with open(path, "rb") as f:
      return f.read(len(PNG_SIGNATURE)) != PNG_SIGNATURE
  except OSError:         # (unreadable: nothing says whose it is; the publish says what fails)
    return False


def check_companions(paths: Sequence[str]) -> None:
  """`ForeignOutputError` for any of `paths` (files published together with an output we may
  replace: its CSV, MD or PNG) that exists but is not a regular file (a directory there made the
  publish fail after all the work, leaving old and new files mixed), or is a `*.png` that is
  not a PNG image (`foreign_plot`)."""
  odd = [p for p in paths if os.path.lexists(p) and (os.path.islink(p) or not os.path.isfile(p))]
  if odd:
    raise ForeignOutputError(f"refusing to replace {odd[0]}: it is {describe(odd[0])}, not a "
                             "file vitprune wrote; move it away or choose another output path")
  plots = [p for p in paths if foreign_plot(p)]
  if plots:
    raise ForeignOutputError(f"refusing to replace {plots[0]}: it is not a PNG image, so "
                             "vitprune did not write it (a file of yours?); move it away or "
                             "choose another output path")


def check_replaceable_json(path: str, fmt: str, companions: Sequence[str] = ()) -> None:
  """Raises `ForeignOutputError` naming `path` unless it is absent or a JSON object whose
  "format" is `fmt` (a file vitprune wrote and may replace); files written together with it
  (`companions`, e.g. its CSV or PNG) are refused when present without it, or when they are
  not regular files (`check_companions`)."""
  check_companions(companions)
  if not os.path.lexists(path):
    stray = [c for c in companions if os.path.lexists(c)]
    if stray:
      raise ForeignOutputError(f"refusing to replace {', '.join(stray)}: no {fmt} file "
                               f"{os.path.basename(path)} is next to it; move it away or "
                               "choose another output path")
    return
  ours = False
  if os.path.isfile(path):              # never open a FIFO or a device (it would block or flood)
    try:
      with open(path) as f:
        ours = json.load(f).get("format") == fmt
    except (OSError, ValueError, AttributeError, RecursionError):
      ours = False
  if ours and os.path.islink(path):     # ours behind a link: the link is what is refused
    raise ForeignOutputError(f"refusing to replace {path}: it is a symbolic link to a {fmt} "
                             "file; pass the file itself (a link is never replaced) or choose "
                             "another output path")
  if not ours:
    raise ForeignOutputError(f"refusing to replace {path}: it is {describe(path)} that is not "
                             f"a {fmt} file; move it away or choose another output path")


def replace_json(path: str, obj: Any, fmt: str, *, overwrite: bool = True,
                 replaces: Any = ANY_OUTPUT, **json_kw) -> str:
  """Writes `obj` (whose "format" is `fmt`) to `path` atomically, checking under the writers'
  lock, at the moment of writing, that `path` is still absent or (with `overwrite`) a `fmt`
  file: a file someone made there while the run worked (after the up-front check), or another
  run's output without `overwrite`, is refused, not replaced. `replaces`: the `file_stamp` of
  `path` when the run began: a file written there since is refused too (`check_unchanged`)."""
  check_switch("overwrite", overwrite)
  with locked(path):
    if not overwrite and os.path.lexists(path):
      raise FileExistsError(f"{path} already exists (pass overwrite=True / --overwrite)")
    check_replaceable_json(path, fmt)
    check_unchanged(path, replaces)
    with console.interrupts_held():
      write_json(path, obj, **json_kw)
      console.wrote(path)
    return path


# ----------------------------------------------------------------------------- stale temporaries

_KINDS = ("tmp", "old", "commit", "new")   # new: being made, not yet locked (`_claimed`)


def _pid_alive(pid: int) -> bool:
  if pid <= 0:
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


@functools.lru_cache(maxsize=None)
def _namespace_tag() -> str:
  """8 hex digits naming this host and PID namespace. A PID means something only there: a
  writer in another container sharing the folder (or another host, over NFS) has a PID this
  process cannot see, and its temporaries were deleted as a dead writer's, mid-write."""
  try:
    ns = os.stat("/proc/self/ns/pid").st_ino
  except OSError:
    ns = 0
  return hashlib.sha256(f"{socket.gethostname()}:{ns}".encode()).hexdigest()[:8]


def _temp_prefix(name: str, kind: str) -> str:
  return f".{name}.{kind}-{os.getpid()}-{_namespace_tag()}-"


def _lock_temporary(path: str) -> Optional[int]:
  """An fd holding an exclusive `flock` on the temporary `path` (a file or a directory, and the
  same inode once renamed) for as long as this process works on it: how a writer in another
  PID namespace is told alive (`_stale`); close it with `_unlock`. None where it cannot be held
  (then only this namespace's PID test can tell)."""
  try:
    fd = os.open(path, os.O_RDONLY)
  except OSError:
    return None
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError:
    os.close(fd)
    return None
  return fd


def _claimed(parent: str, name: str, kind: str, *, directory: bool, mode: Optional[int] = None,
             folders: Optional[List[str]] = None) -> Tuple[Optional[int], str, Optional[int]]:
  """A new temporary `.NAME.<kind>-<pid>-<tag>-<random>` in `parent` -> (mkstemp's fd or None,
  its path, its `_lock_temporary` fd). It is made as `.NAME.new-...`, which another namespace's
  cleaner never judges, locked (and given `mode`), then renamed into its name (the same inode,
  the lock with it): a cleaner elsewhere never sees it unlocked while its writer lives (it
  deleted a fresh one between the two calls). On failure nothing is left. With `folders` (the
  write's `_make_dirs` list), a `parent` a concurrent writer took back (`_take_back`) is made
  again, once, and recorded there."""
  hidden = _temp_prefix(name, "new")
  fd, held = None, None
  for attempt in (0, 1):
    try:
      if directory:
        made = tempfile.mkdtemp(prefix=hidden, dir=parent)
      else:
        fd, made = tempfile.mkstemp(prefix=hidden, dir=parent)
      break
    except FileNotFoundError:
      if attempt or folders is None:
        raise
      folders.extend(_make_dirs(parent))
  try:
    held = _lock_temporary(made)
    if mode is not None:
      os.chmod(made, mode)
    path = os.path.join(parent, _temp_prefix(name, kind) + os.path.basename(made)[len(hidden):])
    os.rename(made, path)
  except BaseException:
    _unlock(held)
    if fd is not None:
      os.close(fd)
    _remove(made)
    raise
  return fd, path, held


def _unlock(fd: Optional[int]) -> None:
  if fd is not None:
    with contextlib.suppress(OSError):
      os.close(fd)


def _unheld(path: str) -> bool:
  """Whether no process holds the `_lock_temporary` lock of `path` (its writer is gone): this
  process can take it (False where it cannot tell: leave it)."""
  fd = _lock_temporary(path)
  _unlock(fd)
  return fd is not None


def _stale(parent: str, name: str) -> Dict[str, list]:
  """{kind: [paths]} of `.NAME.<kind>-<pid>-<tag>-<random>` siblings whose writer is gone: by its
  PID where the tag is this host and PID namespace's (`_namespace_tag`; a name without the tag,
  written before it, likewise), else by the lock its writer holds on it (`_lock_temporary`):
  a PID of another namespace means nothing here."""
  pattern = re.compile(rf"^\.{re.escape(name)}\.({'|'.join(_KINDS)})-(\d+)-"
                       r"(?:([0-9a-f]{8})-)?[A-Za-z0-9_]+$")
  found: Dict[str, list] = {k: [] for k in _KINDS}
  try:
    entries = os.listdir(parent)
  except OSError as e:            # (no folder there: nothing was left)
    if e.errno in _NO_SUCH_PATH:
      return found
    raise
  for entry in sorted(entries):
    m = pattern.match(entry)
    if not m:
      continue
    path, kind, pid, tag = os.path.join(parent, entry), m.group(1), int(m.group(2)), m.group(3)
    if tag not in (None, _namespace_tag()):     # another namespace's: by its writer's lock
      gone = kind != "new" and _unheld(path)    # (one being made is not locked yet)
    else:                                       # ours: by PID; this process's own by its lock
      gone = not _pid_alive(pid) or (pid == os.getpid() and tag is not None
                                     and kind != "new" and _unheld(path))
    if gone:
      found[kind].append(path)
  return found


def _remove(path: str) -> None:
  if os.path.isdir(path) and not os.path.islink(path):
    shutil.rmtree(path, ignore_errors=True)
  else:
    with contextlib.suppress(FileNotFoundError):
      os.unlink(path)


_AT_EXIT: list = []      # paths `remove_at_exit` owns, removed by `remove_exit_paths`


def remove_at_exit(path: str) -> None:
  """Removes `path` (a temporary file or directory of this process) when the process exits, or
  earlier through `remove_exit_paths` (a CLI that ends at once on Ctrl-C)."""
  if not _AT_EXIT:
    atexit.register(remove_exit_paths)
  _AT_EXIT.append(path)


def remove_exit_paths() -> None:
  """Removes every path `remove_at_exit` registered (idempotent)."""
  while _AT_EXIT:
    _remove(_AT_EXIT.pop())


def cleanup_stale(path: str) -> None:
  """Removes what killed writers of `path` left behind (only temporaries of dead processes);
  nothing to do where `path`'s folder is missing or a file.

  A moved-aside previous directory (`.NAME.old-*/NAME`) is restored when `path` is missing or
  an empty folder (the run died between moving it aside and publishing; kept aside when that
  fails), deleted when a newer output vitprune published (its INVENTORY_FILE) took `path`, and
  kept aside when anything else did (a user's file or folder: neither is lost); a committed
  `staged_files` transaction (`.NAME.commit-*`) is rolled forward; everything else is deleted.
  """
  path = os.path.abspath(path)
  parent, name = os.path.dirname(path), os.path.basename(path)
  if not os.path.isdir(parent):     # (missing, a file, or a name too long for the file system)
    return
  stale = _stale(parent, name)
  for old in stale["old"]:
    inner = os.path.join(old, name)
    if os.path.lexists(inner):
      if is_free(path):     # (an empty folder made meanwhile too)
        try:
          os.rename(inner, path)
        except OSError:     # (a file made in that folder meanwhile: kept aside, not deleted)
          continue
      elif os.path.islink(path) or not _has_inventory(path):
        continue            # (not an output vitprune published since: kept aside, not deleted)
    _remove(old)
  for commit in stale["commit"]:
    _roll_forward(commit, parent)
  for tmp in stale["tmp"] + stale["new"]:
    _remove(tmp)
  _remove_unheld_lock(path)


def moved_aside_note(path: str) -> str:
  """For a reader of a missing output `path`: where the previous one is when a writer killed
  while replacing it left it moved aside (`.NAME.old-*/NAME`, its writer gone; the next writer
  of `path` puts it back, `cleanup_stale`) -> ' (...)', else ''. A reader said only 'not an
  artifact directory' while the artifact lay beside it, whole."""
  path = os.path.abspath(path)
  aside = None if os.path.lexists(path) else _moved_aside(path)
  if aside is None:
    return ""
  return (f" (a writer killed while replacing it left the previous one in {aside}: the next "
          f"write of {os.path.basename(path)} puts it back, or move it back yourself)")


def _moved_aside(path: str) -> Optional[str]:
  """Where a writer killed while replacing output `path` (absolute) left the previous one
  (`.NAME.old-*/NAME`, its writer gone), None when none did."""
  name = os.path.basename(path)
  for old in _stale(os.path.dirname(path), name)["old"]:
    if os.path.lexists(os.path.join(old, name)):
      return os.path.join(old, name)
  return None


def cleanup_stale_named(parent: str, prefix: str, suffix: str = "") -> None:
  """`cleanup_stale` for every NAME in `parent` of `prefix`, a token and `suffix` (the token
  without dots unless a suffix ends the name) that has temporaries or a lock file there: for
  writers that draw a fresh NAME per run (`<out_dir>.partial-XXXX`, a profile's
  `<stem>.kept-XXXXXXXX.json`) or one per set of flags (an estimate's), whose killed
  temporaries no later run of the same NAME would find. Best effort: a folder or a NAME that
  cannot be cleaned (another user's lock file) is left as it is, never a reason to fail the
  writer that sweeps."""
  token = "[^./]+" if not suffix else "[^/]+?"
  pattern = re.compile(rf"^\.({re.escape(prefix)}{token}{re.escape(suffix)})\."
                       rf"(?:{'|'.join(_KINDS)}|lock)")
  try:
    entries = os.listdir(parent)
  except OSError:
    return
  for name in sorted({m.group(1) for m in map(pattern.match, entries) if m}):
    with contextlib.suppress(OSError):
      cleanup_stale(os.path.join(parent, name))


def _lock_path(path: str) -> str:
  return os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.lock")


def _remove_unheld_lock(path: str) -> None:
  """Removes the lock file of `path` if nobody holds it (a killed holder leaves it behind)."""
  lock_path = _lock_path(path)
  try:
    fd = os.open(lock_path, os.O_RDWR)
  except (FileNotFoundError, NotADirectoryError):
    return
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError:
    os.close(fd)
    return                                   # held (possibly by this very process)
  try:
    if os.stat(lock_path).st_ino == os.fstat(fd).st_ino:
      os.unlink(lock_path)
  except FileNotFoundError:
    pass
  finally:
    os.close(fd)


# ----------------------------------------------------------------------------- files


def write_bytes(path: str, data: bytes) -> str:
  """Writes `data` to `path` atomically (creating its directory); returns `path`."""
  if not isinstance(data, (bytes, bytearray)):
    raise TypeError(f"write_bytes needs bytes, got {type(data).__name__}")
  directory = os.path.dirname(os.path.abspath(path))
  made = _make_dirs(directory)
  with _before_temporary(made, path):
    cleanup_stale(path)
    fd, tmp, held = _claimed(directory, os.path.basename(path), "tmp", directory=False,
                             folders=made)
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    _phase("file_written")
    _before_publish()
    os.replace(tmp, path)
  except BaseException as e:
    with console.interrupts_held(raise_after=False):
      if os.path.exists(tmp):
        os.unlink(tmp)
      _take_back(made, e)
    named = _named(e, path)
    console.raise_held(named)
    if named is e:
      raise
    raise named from None
  finally:
    _unlock(held)
  return path


def write_json(path: str, obj: Any, *, indent: int = 2, sort_keys: bool = False) -> str:
  """Writes `obj` as JSON (NaN/inf rejected) to `path` atomically; returns `path`.

  The text is rendered before anything touches the disk, so an unserialisable object leaves no
  trace.
  """
  text = json.dumps(obj, indent=indent, sort_keys=sort_keys, allow_nan=False,
                    default=jsonio.plain) + "\n"       # (np.int64 in meta was a TypeError)
  return write_bytes(path, text.encode())


# ----------------------------------------------------------------------------- directories


def _rename_failed_because_taken(e: OSError) -> bool:
  return e.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR)


def _taken(path: str, is_ours: Callable[[str], bool]) -> FileExistsError:
  """The refusal of a `path` taken while the run worked: '--overwrite' only where it would
  replace it (a folder of ours holding nothing else); else what to do instead."""
  try:
    check_replaceable(path, is_ours)
  except OSError as e:           # (ForeignOutputError, a mount point)
    return FileExistsError(f"{path} was created while this run worked: {e}")
  return FileExistsError(f"{path} was created by another run while this one worked (overwrite "
                         "would replace that run's output: give each run its own)")


def _publish_exclusive(tmp: str, path: str, is_ours: Callable[[str], bool]) -> None:
  """Renames `tmp` onto `path` only if `path` is absent or an empty directory (atomically;
  `tmp` is never empty: it holds its inventory)."""
  _before_publish()
  try:
    os.rename(tmp, path)
  except OSError as e:
    if _rename_failed_because_taken(e):
      raise _taken(path, is_ours) from None
    raise


def output_stamp(path: str) -> Optional[Tuple[int, int, Optional[str]]]:
  """Which directory is at `path` now: (device, inode, its inventory's publish id) (a publish
  renames a new one there; the id, since a deleted folder's inode is the next one's on ext4),
  None when there is none: `staged_dir(replaces=)`. A killed writer's moved-aside previous
  output is put back first (`cleanup_stale`: the next publish would, and then count it as
  published meanwhile)."""
  if is_free(path):
    cleanup_stale(path)
  return _stamp_now(path)


def _stamp_now(path: str) -> Optional[Tuple[int, int, Optional[str]]]:
  """`output_stamp` without putting anything back (while publishing)."""
  try:
    st = os.lstat(path)
  except FileNotFoundError:
    return None
  try:
    with open(os.path.join(path, INVENTORY_FILE)) as f:
      publish = json.load(f).get("publish")
  except (OSError, ValueError, RecursionError, AttributeError):
    publish = None
  return st.st_dev, st.st_ino, publish if isinstance(publish, str) else None


def _published_meanwhile(path: str) -> ReplacedMeanwhileError:
  return ReplacedMeanwhileError(
      f"{path} was written by another run after this one began (two runs into one output "
      "folder at once): this run does not replace that run's outputs; give each run its own "
      "folder")


def _publish_replacing(tmp: str, path: str, is_ours: Callable[[str], bool],
                       replaces: Any = ANY_OUTPUT) -> None:
  """Replaces `path` (if ours, and the one stamped `replaces` unless ANY_OUTPUT) by `tmp`; the
  old one is moved aside, then deleted."""
  _before_publish()
  parent, name = os.path.dirname(path), os.path.basename(path)
  for _ in range(100):   # only concurrent writers make this loop more than once
    try:
      os.rename(tmp, path)            # absent or an empty directory
      return
    except OSError as e:
      if not _rename_failed_because_taken(e):
        raise
    if replaces is not ANY_OUTPUT and _stamp_now(path) != replaces:
      raise _published_meanwhile(path)
    check_replaceable(path, is_ours)
    _, old, held = _claimed(parent, name, "old", directory=True)
    aside = os.path.join(old, name)
    try:
      try:
        os.rename(path, aside)
      except FileNotFoundError:
        continue                        # another writer moved it: try again
      _phase("moved_aside")
      if replaces is not ANY_OUTPUT and _stamp_now(aside) != replaces:
        with contextlib.suppress(OSError):  # (published between the check above and the move)
          os.rename(aside, path)
        raise _published_meanwhile(path)
      if not is_ours(aside) or unlisted_files(aside, _layout(aside, is_ours)):
        os.rename(aside, path)
        check_replaceable(path, is_ours)
        continue
      try:
        os.rename(tmp, path)
      except OSError as e:
        if not _rename_failed_because_taken(e):
          with contextlib.suppress(OSError):
            os.rename(aside, path)
          raise
        continue                        # another writer published meanwhile: replace theirs
      _phase("published")
      return
    finally:
      shutil.rmtree(old, ignore_errors=True)
      _unlock(held)
  raise FileExistsError(f"{path} keeps being replaced by concurrent writers; giving up")


@contextlib.contextmanager
def staged_dir(path: str, *, overwrite: Optional[bool] = None,
               is_ours: Optional[Callable[[str], bool]] = None,
               replaces: Any = ANY_OUTPUT, keep_refused: bool = True) -> Iterator[str]:
  """Yields an empty temporary sibling directory of `path` to fill; on normal exit publishes it.

  Args:
    path: the directory to create or replace.
    overwrite: False: `path` must be absent (or an empty directory) at the moment of publishing,
      else `FileExistsError` (exactly one of several concurrent writers wins). True: an existing
      `path` is replaced if `is_ours(path)`, else `ForeignOutputError`. None (the transitional
      default for callers that check existence themselves): like True, still refusing anything
      that is not ours.
    is_ours: recognises our own output (default `is_vitprune_output`: a folder with one of
      vitprune's directory markers).
    replaces: with overwrite, the `output_stamp` of `path` when the caller's work began (None:
      there was none): a directory published there since by another writer is not replaced
      (`ReplacedMeanwhileError`: a run that finished second dropped the first one's outputs,
      both exiting 0). ANY_OUTPUT (default): whatever is there at publishing, if ours. Without
      overwrite, None (nothing there when the caller's work began: training, compiles done
      before this call) lets a `path` taken since be refused when publishing, so that the
      staged output is kept (`keep_refused`); otherwise a taken `path` is refused at once.
    keep_refused: a publish refused because `path` was taken while the body worked (published
      meanwhile, made by another run without overwrite, or no longer ours) keeps the staged
      directory, whole, as `<path>.partial-XXXXXXXX` beside it (named in the error); False
      deletes it (an output that names its own final paths inside, as the main job's does).

  The previous directory is moved aside first and deleted only once the new one is in place; on
  an exception the staging directory is deleted and `path` is left untouched. A foreign target is
  refused before the body runs (and again at publishing). Temporaries of killed writers of the
  same path are cleaned up first (`cleanup_stale`).
  """
  check_switch("overwrite", overwrite, optional=True)
  check_switch("keep_refused", keep_refused)
  check_path("the output path", path)   # ('': abspath's working directory, offered to replace)
  path = os.path.abspath(path)
  # (the CLIs refused an artifact or weights inside weights/vit_digits, the library wrote them:
  # that folder was then never replaced, holding files it was not published with)
  check_outside_published(path, None)
  is_ours = is_ours or is_vitprune_output
  parent, name = os.path.dirname(path), os.path.basename(path)
  check_not_mount_point(path)
  made = _make_dirs(parent)
  with _before_temporary(made, path):
    cleanup_stale(path)
    if overwrite is False:
      if not is_free(path) and replaces is not None:    # (None: taken meanwhile, refused
        raise FileExistsError(                           # at publishing, the output kept)
            f"{path} already exists (pass overwrite=True / --overwrite)")
    else:
      check_replaceable(path, is_ours)
    _, tmp, held = _claimed(parent, name, "tmp", directory=True, mode=0o755, folders=made)
  staged = False
  try:
    yield tmp
    _write_inventory(tmp)
    staged = True                       # (whole: what a refused publish may keep)
    _phase("staged")
    with console.interrupts_held():     # moved aside, the old one must come back or be replaced
      if overwrite is False:
        _publish_exclusive(tmp, path, is_ours)
      else:
        _publish_replacing(tmp, path, is_ours, replaces)
      console.wrote(path)
  except BaseException as e:     # (a second signal cut this short and left the folder)
    with console.interrupts_held(raise_after=False):
      kept = (_keep_staged(tmp, path) if keep_refused and staged
              and isinstance(e, FileExistsError) else None)     # (taken while it worked)
      shutil.rmtree(tmp, ignore_errors=True)
      _take_back(made, e)
    if kept:
      e = type(e)(f"{e}; this run's output is kept in {kept}")
      console.raise_held(e)
      raise e from None
    named = _named(_unstaged(e, tmp, path), path)
    console.raise_held(named)      # an interrupt meanwhile: raised with the error, not for it
    if named is e:
      raise
    raise named from None
  finally:
    _unlock(held)


def partial_name(path: str) -> str:
  """A fresh `<path>.partial-XXXXXXXX` beside `path` (its name cut short to fit: `fitting_name`),
  where a run keeps what it made when `path` cannot take it (`staged_dir(keep_refused=)`, the
  main job's `keep_measured`)."""
  return fitting_name(path, f".partial-{secrets.token_hex(4)}")


KEPT_MARK = ".kept-"


def without_trailing_sep(path: str) -> str:
  """`path` without trailing separators ('f.txt/' names the file f.txt: os.path.lexists says
  False for it, so an existing file passed as a directory was found only at the final write)."""
  return path.rstrip("/" + os.sep) or path


def kept_prefix(stem_path: str, ext: str) -> str:
  """`<stem_path>.kept-` with the stem cut short so that a token of 8 characters and `ext` (the
  longest extension of the files written under it) fit (`fitting_name`): every `kept_name` of
  `stem_path` starts with it (what a sweep of killed keeps looks for)."""
  return fitting_name(stem_path, f"{KEPT_MARK}{'x' * 8}{ext}")[:-8 - len(ext)]


def kept_name(stem_path: str, ext: str) -> str:
  """A fresh `<stem_path>.kept-XXXXXXXX` (no extension) beside `stem_path`, cut short as
  `kept_prefix` is: where a run keeps a file or file set (a profile's JSON/CSV/PNG, a
  benchmark table, results) that the output it was meant to replace refused."""
  return kept_prefix(stem_path, ext) + secrets.token_hex(4)


def cleanup_killed_keeps(stem_path: str, ext: str) -> None:
  """`cleanup_stale_named` for every `kept_name(stem_path, ext)` a killed run left (a fresh
  name each: no later keep of the same name finds its temporaries)."""
  cleanup_stale_named(os.path.dirname(stem_path),
                      os.path.basename(kept_prefix(stem_path, ext)), ext)


def replace_json_or_keep(path: str, doc: Any, fmt: str, *, replaces: Any = ANY_OUTPUT,
                         **json_kw) -> str:
  """`replace_json(path, doc, fmt, replaces=...)`, or where `path` refused it or could not be
  written, `keep_json_beside` (its error raised with the kept file named): results of a run
  (a benchmark, a board's timing) are never lost with their output."""
  try:
    return replace_json(path, doc, fmt, replaces=replaces, **json_kw)
  except OSError as e:        # (ForeignOutputError too: a file made at `path` meanwhile)
    keep_json_beside(path, doc, fmt, e, str(e), **json_kw)


def keep_json_beside(path: str, doc: Any, fmt: str, error: OSError, why: str,
                     **json_kw) -> None:
  """Raises `error`'s type with `why` after writing `doc` (format `fmt`) beside `path` (which
  could not be written: taken meanwhile, or its folder gone) as `kept_name(...)`.json, named in
  the message (in the nearest folder above that still is one): a run's minutes of measurement
  were lost with its output."""
  root, ext = os.path.splitext(without_trailing_sep(path))   # ('f.json/': the file)
  ext = ext or ".json"
  folder = os.path.dirname(os.path.abspath(root))
  if not os.path.isdir(folder):   # (its folder replaced by a file mid-run: every result lost)
    if os.path.lexists(folder) or getattr(error, "errno", None) in (errno.ENOENT, errno.ENOTDIR):
      why = (f"cannot write {console.printable(path)}: its folder {console.printable(folder)} "
             f"is no longer a folder ({error})")
    # (else the write failed for its own reason, e.g. a full disk, and took back the folder it
    # made: "no longer a folder" named the wrong cause)
    while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
      folder = os.path.dirname(folder)          # the nearest folder above that still is one
    root = os.path.join(folder, os.path.basename(root))
  kept = kept_name(root, ext) + ext
  try:
    replace_json(kept, doc, fmt, overwrite=False, **json_kw)
  except (OSError, ValueError) as keep_error:
    raise type(error)(f"{why}; the results could not be kept either: {keep_error}") from None
  raise type(error)(f"{why}; the results are kept in {console.printable(kept)}") from None


def _keep_staged(tmp: str, path: str) -> Optional[str]:
  """A whole staged output that another run's output at `path` kept out (its compiles,
  training or export are not lost) renamed to `partial_name(path)` -> that path, None when it
  cannot be (it is deleted then)."""
  kept = partial_name(path)
  try:
    os.rename(tmp, kept)
  except OSError:
    return None
  return kept


# ----------------------------------------------------------------------------- file sets


def _roll_forward(commit: str, directory: str) -> None:
  """Moves every file of a committed transaction into `directory` (its order file first, the
  listed order), then removes the commit directory."""
  order_file = os.path.join(commit, ".order")
  try:
    with open(order_file) as f:
      order = [n for n in f.read().split("\n") if n]
  except OSError:
    order = []
  for n in order:
    src, dst = os.path.join(commit, n), os.path.join(directory, n)
    if os.path.lexists(src):
      try:
        os.replace(src, dst)
      except OSError as e:   # e.g. a file made immutable: some files replaced, some not yet
        raise OSError(e.errno, f"could not replace {dst} ({e.strerror}); the other files of "
                      f"its set may be the new ones already: the new files stay committed "
                      f"beside them, and the next write of the set finishes replacing them "
                      f"once {n} can be replaced") from None
      _phase(f"renamed:{n}")
  shutil.rmtree(commit, ignore_errors=True)


@contextlib.contextmanager
def staged_files(directory: str, key: str, names: Sequence[str]) -> Iterator[str]:
  """Publishes files `names` of `directory` together: yields a staging directory to write them
  into; on exit the staging directory is committed (renamed to `.KEY.commit-...`) and its files
  are moved into place in the order given (put the file readers check last). A run killed after
  the commit is finished by the next `cleanup_stale(os.path.join(directory, key))`; one killed
  before it leaves the old files as they were. Callers serialise writers (see `locked`)."""
  directory = os.path.abspath(directory)
  made = _make_dirs(directory)
  with _before_temporary(made, os.path.join(directory, key)):
    cleanup_stale(os.path.join(directory, key))
    # (held as the commit too)
    _, tmp, held = _claimed(directory, key, "tmp", directory=True, folders=made)
  try:
    yield tmp
    missing = [n for n in names if not os.path.isfile(os.path.join(tmp, n))]
    if missing:
      raise FileNotFoundError(f"staged_files: {missing} were not written")
    taken = [n for n in names if os.path.isdir(os.path.join(directory, n))
             and not os.path.islink(os.path.join(directory, n))]
    if taken:            # the roll-forward could not replace it: refuse before committing
      raise IsADirectoryError(f"refusing to replace {os.path.join(directory, taken[0])}: it is "
                              "a directory, not a file vitprune wrote")
    for n in names:
      os.chmod(os.path.join(tmp, n), 0o644)
    with open(os.path.join(tmp, ".order"), "w") as f:
      f.write("\n".join(names) + "\n")
    _phase("staged")
    with console.interrupts_held():      # committed, the files roll forward to the last one
      _before_publish()
      commit = os.path.join(directory, os.path.basename(tmp).replace(".tmp-", ".commit-", 1))
      os.rename(tmp, commit)
      _phase("committed")
      _roll_forward(commit, directory)
      console.wrote(os.path.join(directory, names[-1]))
  except BaseException as e:
    with console.interrupts_held(raise_after=False):
      shutil.rmtree(tmp, ignore_errors=True)        # (gone once committed)
      _take_back(made, e)
    named = _named(_unstaged(e, tmp, directory), os.path.join(directory, key))
    console.raise_held(named)
    if named is e:
      raise
    raise named from None
  finally:
    _unlock(held)


# ----------------------------------------------------------------------------- locks


@contextlib.contextmanager
def locked(path: str) -> Iterator[None]:
  """Exclusive lock for writers of `path`: `fcntl.flock` on the hidden sibling `.NAME.lock`,
  which is removed on release (a waiter that locked a removed file retries on the new one)."""
  path = os.path.abspath(path)
  made = _make_dirs(os.path.dirname(path))
  lock_path = _lock_path(path)
  while True:
    try:
      fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except FileNotFoundError:    # the writer this one waited for failed and took back the
      again = _make_dirs(os.path.dirname(path))     # folders it made: made again, retried
      if not again:              # (nothing was missing: e.g. a dangling link as the lock file)
        raise
      made += again
      continue
    except BaseException as e:   # (no inode left for the lock file)
      _take_back(made, e)
      raise
    try:
      fcntl.flock(fd, fcntl.LOCK_EX)
      try:
        same = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
      except FileNotFoundError:
        same = False
    except BaseException as e:   # (Ctrl-C while waiting: the lock file it made was left)
      with console.interrupts_held(raise_after=False):
        os.close(fd)
        _remove_unheld_lock(path)
      console.raise_held(e)
      raise
    if same:
      break
    os.close(fd)
  def release() -> None:
    with contextlib.suppress(FileNotFoundError):
      os.unlink(lock_path)
    os.close(fd)

  try:
    yield
  except BaseException as e:     # (a signal here left the lock file)
    with console.interrupts_held(raise_after=False):
      release()
      _take_back(made, e)        # (the folders made for a write that failed)
    console.raise_held(e)
    raise
  with console.interrupts_held():
    release()
