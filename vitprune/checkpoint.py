"""Weights on disk: an orbax checkpoint of the parameter pytree plus the config that built it.

Layout of a weights directory (e.g. `weights/deit_small_patch16_224/`):
  config.json   {"format": "vitprune-weights", "version": 1, "config": ViTConfig fields,
                 "meta": {free-form provenance: source checkpoint, its sha256, ...}}
  params/       orbax `StandardCheckpointer` checkpoint of the float32 parameter tree

`load_weights(dir)` needs nothing else: the config rebuilds the abstract tree orbax restores into.
Writes are atomic: everything is written into a temporary sibling directory which is renamed into
place only when complete, so a failure never leaves a partial `weights/<name>/`.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from vitprune import atomic
from vitprune.config import ViTConfig, config_from_dict, config_to_dict
from vitprune.model import Params, abstract_params, param_shapes

FORMAT = "vitprune-weights"
VERSION = 1


def check_params(cfg: ViTConfig, params: Params) -> None:
  """Raises ValueError listing every missing/unexpected leaf and shape mismatch vs `cfg`."""
  want = {jax.tree_util.keystr(k): tuple(v) for k, v in jax.tree.flatten_with_path(
      param_shapes(cfg), is_leaf=lambda x: isinstance(x, tuple))[0]}
  got = {jax.tree_util.keystr(k): tuple(np.shape(v))
         for k, v in jax.tree.flatten_with_path(params)[0]}
  missing = sorted(set(want) - set(got))
  unexpected = sorted(set(got) - set(want))
  mismatched = [f"{k}: expected {want[k]}, got {got[k]}"
                for k in sorted(set(want) & set(got)) if want[k] != got[k]]
  if missing or unexpected or mismatched:
    raise ValueError(f"parameters do not match {cfg.name}:\n  missing: {missing}\n"
                     f"  unexpected: {unexpected}\n  shape mismatches: {mismatched}")


def _checkpointer():
  import orbax.checkpoint as ocp  # imported lazily: orbax import is slow
  return ocp.StandardCheckpointer()


def save_weights(path: str, cfg: ViTConfig, params: Params, *,
                 meta: Optional[Dict[str, Any]] = None, overwrite: bool = False,
                 extra_json: Optional[Dict[str, Any]] = None) -> str:
  """Writes `params` (float32) and `cfg` to directory `path` atomically; returns its abs path.

  `extra_json` ({file name: object}) adds JSON files (e.g. training metrics) to the same atomic
  write, so the directory never exists without them.
  """
  check_params(cfg, params)
  path = os.path.abspath(path)
  if os.path.exists(path) and not overwrite:
    raise FileExistsError(f"{path} already exists (pass overwrite=True / --overwrite)")
  params32 = jax.tree.map(lambda a: np.asarray(a, np.float32), params)
  doc = {"format": FORMAT, "version": VERSION, "config": config_to_dict(cfg), "meta": meta or {}}
  with atomic.staged_dir(path) as tmp:
    ckptr = _checkpointer()
    ckptr.save(os.path.join(tmp, "params"), params32)
    ckptr.wait_until_finished()
    atomic.write_json(os.path.join(tmp, "config.json"), doc, sort_keys=True)
    for name, obj in (extra_json or {}).items():
      if name in ("config.json", "params") or os.path.basename(name) != name:
        raise ValueError(f"extra_json file name {name!r} must be a plain file name other than "
                         "config.json and params")
      atomic.write_json(os.path.join(tmp, name), obj, sort_keys=True)
  return path


def read_weights_config(path: str) -> Tuple[ViTConfig, Dict[str, Any]]:
  """(config, meta) of a weights directory, without touching the parameters."""
  cfg_file = os.path.join(path, "config.json")
  if not os.path.isfile(cfg_file):
    raise FileNotFoundError(f"{path} is not a vitprune weights directory (no config.json)")
  try:
    with open(cfg_file) as f:
      doc = json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f"{cfg_file} is corrupted: {e}") from None
  if doc.get("format") != FORMAT:
    raise ValueError(f"{cfg_file}: format {doc.get('format')!r} is not {FORMAT!r}")
  if doc.get("version") != VERSION:
    raise ValueError(f"{cfg_file}: unsupported version {doc.get('version')!r}")
  return config_from_dict(doc["config"]), doc.get("meta", {})


def load_weights(path: str) -> Tuple[ViTConfig, Params]:
  """(config, float32 params as jax arrays) from a directory written by `save_weights`."""
  path = os.path.abspath(path)
  cfg, _ = read_weights_config(path)
  params_dir = os.path.join(path, "params")
  if not os.path.isdir(params_dir):
    raise FileNotFoundError(f"{path} has no params/ checkpoint")
  try:
    params = _checkpointer().restore(params_dir, abstract_params(cfg))
  except Exception as e:  # orbax raises many types; name the directory
    raise ValueError(f"could not restore parameters from {params_dir}: {e}") from e
  check_params(cfg, params)
  return cfg, jax.tree.map(jnp.asarray, params)
