"""Content digests that tie files together: weights, checkpoints, profiles and estimates.

Light on purpose (hashlib, numpy; jax only to flatten parameter trees): deployment uses it
without the model code, and the board runner (`vitprune.edge`, no jax) for file digests.
"""
from __future__ import annotations

import hashlib
from typing import Any, Iterable, Tuple

import numpy as np


def params_sha256(params: Any) -> str:
  """sha256 hex digest of a parameter tree: every leaf in sorted key-path order, hashing its
  path, dtype, shape and little-endian C-order bytes.

  Depends only on the names and values of the leaves: not on the device, on how the tree or its
  checkpoint is laid out, or on the host's byte order. The estimate files and the deployment
  manifest record this same digest, so one weights tree has one identity everywhere.
  """
  # (lazy: boards running vitprune.edge have no jax)
  import jax  # pylint: disable=g-import-not-at-top
  return named_leaves_sha256((jax.tree_util.keystr(path), leaf)
                             for path, leaf in jax.tree.flatten_with_path(params)[0])


def named_leaves_sha256(named: Iterable[Tuple[str, Any]]) -> str:
  """`params_sha256` of the leaves `(key path string, array)` of a whole tree (no jax: an edge
  kit's packed weights, named by key path, are checked against the digest recorded with them)."""
  h = hashlib.sha256()
  for name, leaf in sorted(named, key=lambda kv: kv[0]):
    arr = np.ascontiguousarray(np.asarray(leaf))
    arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
    h.update(f"{name} {arr.dtype.str} {arr.shape}\n".encode())
    h.update(arr.tobytes())
  return h.hexdigest()


def file_sha256(path: str, chunk: int = 1 << 20) -> str:
  """sha256 hex digest of a file's bytes, read in `chunk`-byte blocks."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(chunk), b""):
      h.update(block)
  return h.hexdigest()
