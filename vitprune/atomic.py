"""Atomic file writes: a temporary file in the target's directory, fsync, then `os.replace`.

A reader sees either the old file or the complete new one, never a half-written file; on any
failure the temporary file is removed and the old file is left as it was.
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any


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
