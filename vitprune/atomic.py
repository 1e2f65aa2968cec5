"""Atomic writes: files via a temporary file + `os.replace`, directories via a staged sibling.

A reader sees either the old file/directory or the complete new one, never a half-written one; on
any failure the temporary is removed and the old one is left as it was.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from typing import Any, Iterator


def write_bytes(path: str, data: bytes) -> str:
  """Writes `data` to `path` atomically (creating its directory); returns `path`."""
  if not isinstance(data, (bytes, bytearray)):
    raise TypeError(f"write_bytes needs bytes, got {type(data).__name__}")
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.tmp-")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise
  return path


def write_json(path: str, obj: Any, *, indent: int = 2, sort_keys: bool = False) -> str:
  """Writes `obj` as JSON (NaN/inf rejected) to `path` atomically; returns `path`.

  The text is rendered before anything touches the disk, so an unserialisable object leaves no
  trace.
  """
  text = json.dumps(obj, indent=indent, sort_keys=sort_keys, allow_nan=False) + "\n"
  return write_bytes(path, text.encode())


@contextlib.contextmanager
def staged_dir(path: str) -> Iterator[str]:
  """Yields an empty temporary sibling directory of `path` to fill; on normal exit it replaces
  `path` (an existing one is moved aside first and deleted only once the new one is in place),
  on an exception it is deleted and `path` is left untouched."""
  path = os.path.abspath(path)
  parent, name = os.path.dirname(path), os.path.basename(path)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
  os.chmod(tmp, 0o755)
  try:
    yield tmp
    if os.path.lexists(path):
      old = tempfile.mkdtemp(prefix=f".{name}.old-", dir=parent)
      os.rename(path, os.path.join(old, name))
      try:
        os.rename(tmp, path)
      except BaseException:
        os.rename(os.path.join(old, name), path)
        raise
      finally:
        shutil.rmtree(old, ignore_errors=True)
    else:
      os.rename(tmp, path)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
