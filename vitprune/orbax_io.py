"""One home for orbax checkpoint I/O (weights directories and deployment artifacts); imports
neither the model code nor orbax until used."""
from __future__ import annotations

import contextlib
import gc
import logging
import os
import re
import stat
import sys
import tempfile
import threading
import time
import warnings
from typing import Any, Dict

from vitprune import atomic


def checkpointer():
  """orbax's `StandardCheckpointer` (imported here: the orbax import is slow)."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  return ocp.StandardCheckpointer()


def storage_path(path: str) -> str:
  """`path`, checked to be one orbax can use: its storage layer (tensorstore) takes UTF-8
  names and orbax's Python side the file system encoding, so the name's bytes must be UTF-8
  and read as the same text in this process (a C locale reads non-ASCII bytes as escapes); and
  tensorstore reads a backslash as a folder separator (a save to 'w\\1' reported success and
  left the tensors in '.w/1...'). OSError naming the path otherwise (it was a 795-line
  traceback after the work)."""
  try:
    text = os.fsencode(path).decode("utf-8")
  except UnicodeDecodeError:
    raise OSError(f"{path!r}: orbax checkpoints (weights) cannot be read or written at a path "
                  "whose name is not valid UTF-8; rename it or choose another path") from None
  if text != path:
    raise OSError(f"{path!r}: orbax checkpoints (weights) cannot use a non-ASCII path while "
                  f"Python reads file names as {sys.getfilesystemencoding()} (a C/POSIX "
                  "locale); set PYTHONUTF8=1 or a UTF-8 locale, or choose an ASCII path")
  if "\\" in os.path.abspath(text):
    raise OSError(f"{os.path.abspath(text)!r}: orbax checkpoints (weights) cannot use a path "
                  "holding a backslash (their storage layer reads it as a folder separator); "
                  "rename it or move it to a path without one")
  return path


def writable_path(path: str) -> str:
  """`storage_path`, and no `[` or `]` anywhere in the absolute path: orbax gathers the parts of
  a checkpoint it wrote by matching the folder's path as a glob pattern, where `[1]` is a
  character class (under 'w[1]' it found none, reported success and left weights no one could
  read; `*` and `?` match themselves and worked). OSError naming the path otherwise; reading
  there works."""
  storage_path(path)
  full = os.path.abspath(path)
  if "[" in full or "]" in full:
    raise OSError(f"{full!r}: orbax checkpoints (weights) cannot be written under a path "
                  "holding '[' or ']' (orbax matches the folder as a glob pattern when it "
                  "gathers the checkpoint's parts); rename it or choose another path")
  return path


def save(directory: str, tree: Any) -> None:
  """Checkpoints the pytree `tree` into the new `directory` and waits for it; the library's
  exception when it cannot (a full disk), without the tracebacks its I/O threads print on the
  way (hundreds of lines around the one 'No space left on device')."""
  directory = writable_path(directory)
  _start_backend()
  try:
    with _stderr_kept_unless_failing():
      ckptr = checkpointer()
      try:
        ckptr.save(directory, tree)
        ckptr.wait_until_finished()
      except BaseException:
        _settle(ckptr)
        raise
  except Exception as e:  # pylint: disable=broad-except  (re-raised unless the disk is full)
    full = _no_room(e)
    if full is None:
      raise
    raise full from None


SETTLE_S = 30.0    # the longest `_settle` waits for a failed save's background writes


def _settle(ckptr) -> None:
  """After a failed or interrupted save: waits (at most SETTLE_S, and only until a second
  interrupt) for the checkpointer's background writes to end (`close`), so the caller's cleanup
  of the staged directory does not race them (a Ctrl-C in `wait_until_finished` left files that
  orbax's threads created after the `rmtree`). The first exception stands: `close`'s own
  failure is dropped, and a stuck write never keeps the process from ending."""
  def close():
    try:
      ckptr.close()
    except BaseException:  # pylint: disable=broad-except  (the save's error is the caller's)
      pass

  waiter = threading.Thread(target=close, name="vitprune-orbax-settle", daemon=True)
  waiter.start()
  try:
    waiter.join(SETTLE_S)
  except KeyboardInterrupt:      # a second Ctrl-C: stop waiting
    pass


_OS_ERROR_CODE = re.compile(r"os_error_code='?(\d+)")


def _no_room(e: Exception) -> OSError | None:
  """A full disk or quota as the OSError it is, naming no file (the writer of a staged
  directory names its output: `atomic`), where orbax reports it as tensorstore's
  'RESOURCE_EXHAUSTED: Error writing ... at local file "<hidden temporary>" ... [os_error_code=
  '28']'; None for any other failure."""
  code = _OS_ERROR_CODE.search(str(e))
  if code and int(code.group(1)) in atomic.NO_ROOM:
    return OSError(int(code.group(1)), os.strerror(int(code.group(1))))
  return None


def failure_text(error: BaseException) -> str:
  """`error`'s text without the storage layer's spec dump (` [tensorstore_spec='{...}']`: a
  kilobyte of settings that buried what was missing)."""
  return re.sub(r"\s*\[tensorstore_spec='.*?'\]", "", str(error), flags=re.S)


def restore(directory: str, target: Any) -> Any:
  """The pytree checkpointed in `directory`, restored onto `target`'s structure; the library's
  exception when it cannot (callers name the directory), without the tracebacks its I/O threads
  print on the way (`_stderr_kept_unless_failing`). A FIFO, device or socket inside is refused
  unopened (orbax would block on it for ever)."""
  directory = storage_path(directory)
  _check_regular_tree(directory)
  _start_backend()
  with _stderr_kept_unless_failing(), _library_warnings_on_one_line():
    ckptr = checkpointer()
    metadata = ckptr.metadata(directory)
    _check_stored_dtypes(metadata, target)
    try:
      return ckptr.restore(directory, target)
    except ValueError as e:
      if not any(said in str(e) for said in ("tree structures do not match",
                                               "Structure mismatch")):   # (orbax's two words)
        raise
      raise ValueError(_structure_difference(metadata, target)) from None


def _leaf_paths(tree: Any) -> Dict[str, Any]:
  import jax  # pylint: disable=g-import-not-at-top
  tree = getattr(tree, "item_metadata", tree)
  return {jax.tree_util.keystr(k): v for k, v in jax.tree.flatten_with_path(tree)[0]}


def _structure_difference(metadata: Any, target: Any) -> str:
  """One line naming a few of the leaves the checkpoint lacks or holds beyond `target`'s (the
  weights of another model), where orbax's own message listed every key over many lines."""
  stored, wanted = set(_leaf_paths(metadata)), set(_leaf_paths(target))
  missing, extra = sorted(wanted - stored), sorted(stored - wanted)

  def some(keys):
    return ", ".join(keys[:2]) + (f" and {len(keys) - 2} more" if len(keys) > 2 else "")
  return ("the stored weights are not this model's structure: "
          + ("; ".join(f"{what} {len(keys)} ({some(keys)})" for what, keys in
                       (("missing", missing), ("extra", extra)) if keys)
             or "the same leaves, nested otherwise"))


def _check_stored_dtypes(metadata: Any, target: Any) -> None:
  """ValueError naming the leaves stored in another dtype than `target` asks for: orbax casts
  them on restore (int32 values restored as float32 without a word)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  stored = {k: getattr(v, "dtype", None) for k, v in _leaf_paths(metadata).items()}
  wrong = [f"{key} is {stored[key]}" for key, want in
           ((jax.tree_util.keystr(k), v.dtype) for k, v in jax.tree.flatten_with_path(target)[0])
           if stored.get(key) is not None and np.dtype(stored[key]) != np.dtype(want)]
  if wrong:
    raise ValueError(f"values stored in other dtypes than the "
                     f"{np.dtype(jax.tree.leaves(target)[0].dtype)} restored (orbax would cast "
                     f"them): {', '.join(wrong[:3])}"
                     f"{f' and {len(wrong) - 3} more' if len(wrong) > 3 else ''}")


def _start_backend() -> None:
  """Starts JAX's backend before fd 2 is held back: XLA exits the process from C++ on a bad
  `XLA_FLAGS` ('Unknown flag in XLA_FLAGS: --bogus'), and inside the hold-back that line was
  lost with it (exit status 1, nothing printed)."""
  import jax  # pylint: disable=g-import-not-at-top  (orbax imports it too)
  jax.devices()


_LAYOUT_DEPTH = 2     # folders below the checkpoint walked: ocdbt.process_0/d (entries of d read)


def _check_regular_tree(directory: str) -> None:
  """OSError naming the first entry under `directory` (a link: its target) that is neither a
  regular file nor a folder; linked folders are walked too (a FIFO behind one blocked a restore
  for ever), each real folder once (a link loop ends), no deeper than orbax's layout reaches
  (`params/ocdbt.process_0/d/<file>`: a link to / walked the whole disk)."""
  for root, dirs, files in atomic.walk_following_links(directory, _LAYOUT_DEPTH):
    for name in dirs + files:
      path = os.path.join(root, name)
      try:
        mode = os.stat(path).st_mode
      except OSError:            # a dangling link: orbax reports what it misses
        continue
      if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise OSError(f"{path} is not a regular file (a FIFO, device or socket) inside the "
                      "checkpoint; refusing to open it")


class _AsWarning(logging.Filter):
  """Turns orbax's absl warning records into Python warnings (`warning: UserWarning: ...`, one
  line like the CLIs' others) and drops the raw record ('W1205 04:13:23.948 ... checkpoint.py:
  202] Metadata file does not exist: .../_CHECKPOINT_METADATA')."""

  def filter(self, record: logging.LogRecord) -> bool:
    if record.levelno == logging.WARNING:
      warnings.warn(f"orbax: {record.getMessage()}", UserWarning, stacklevel=2)
      return False
    return True


@contextlib.contextmanager
def _library_warnings_on_one_line():
  log, only = logging.getLogger("absl"), _AsWarning()
  log.addFilter(only)
  try:
    yield
  finally:
    log.removeFilter(only)


_REDIRECT = threading.Lock()   # one redirection of fd 2 at a time (restores are rare)


class _DropUnretrieved(logging.Filter):
  """Drops asyncio's "Future/Task exception was never retrieved" reports."""

  def filter(self, record: logging.LogRecord) -> bool:
    return "exception was never retrieved" not in str(record.msg)


def _quiet_unretrieved_futures() -> None:
  """After a failed save or restore, orbax's failed futures are reported by asyncio when they
  are garbage-collected, which can be after the hold-back, after the run's one error line (a
  full disk printed 4 to 127 more lines in 3 of 25 runs): collect them now, and drop such
  reports from then on in a command-line run (only these: the failure itself is the caller's
  to report; a library user's process keeps every report)."""
  gc.collect()
  from vitprune import console  # pylint: disable=g-import-not-at-top
  if not console.is_cli():
    return
  log = logging.getLogger("asyncio")
  if not any(isinstance(f, _DropUnretrieved) for f in log.filters):
    log.addFilter(_DropUnretrieved())


@contextlib.contextmanager
def _stderr_kept_unless_failing():
  """Holds back what is written to file descriptor 2 inside the block: replayed if the block
  succeeds, dropped if it raises. A corrupt checkpoint makes orbax's I/O threads print
  'Event loop is closed' tracebacks while the restore fails and for a moment after it; the
  caller reports the failure in one line instead. Without a usable fd 2 (stderr closed) it does
  nothing; overlapping restores in other threads run without the hold-back."""
  if sys.stderr is None or not _REDIRECT.acquire(blocking=False):
    yield
    return
  try:
    held = tempfile.TemporaryFile()
    saved = os.dup(2)
  except OSError:                # no fd 2 or no temporary file: do not hold anything back
    _REDIRECT.release()
    yield
    return
  try:
    sys.stderr.flush()
    os.dup2(held.fileno(), 2)
    try:
      yield
    except BaseException:
      time.sleep(1.0)            # the I/O threads finish failing within it (error path only)
      _quiet_unretrieved_futures()
      raise
    finally:
      try:
        sys.stderr.flush()
      except (OSError, ValueError):
        pass
      os.dup2(saved, 2)
    held.seek(0)
    text = held.read()
    while text:
      text = text[os.write(2, text):]
  finally:
    os.close(saved)
    held.close()
    _REDIRECT.release()
