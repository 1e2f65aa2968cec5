"""Weights on disk: an orbax checkpoint of the parameter pytree plus the config that built it.

Layout of a weights directory (e.g. `weights/deit_small_patch16_224/`):
  config.json   {"format": "vitprune-weights", "version": 1, "config": ViTConfig fields,
                 "meta": {free-form provenance: source checkpoint, its sha256, ...},
                 "class_names": ["0", ..., "9"] (optional: the names of the outputs, in order)}
  params/       orbax `StandardCheckpointer` checkpoint of the float32 parameter tree

`load_weights(dir)` needs nothing else: the config rebuilds the abstract tree orbax restores into.
Writes are atomic: everything is written into a temporary sibling directory which is renamed into
place only when complete, so a failure never leaves a partial `weights/<name>/`. Without
`overwrite` the path is claimed atomically (of two concurrent writers one gets FileExistsError);
with it, only a weights directory (its config.json marker) is replaced, never a foreign folder.
Non-finite parameters are refused.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Dict, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from vitprune import atomic
from vitprune.config import Preprocessing, ViTConfig
from vitprune.data import check_class_names
from vitprune.model import Params, abstract_params, param_shapes

FORMAT = "vitprune-weights"
VERSION = 1
CONFIG_FILE = "config.json"

# A directory is a weights directory (so `save_weights(overwrite=True)` may replace it) when its
# config.json carries our format marker.
is_weights_dir = atomic.json_marker(CONFIG_FILE, FORMAT)


def config_to_dict(cfg: ViTConfig) -> Dict[str, Any]:
  return dataclasses.asdict(cfg)


_POSITIVE_INTS = ("img_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads",
                  "mlp_hidden")
_NON_NEGATIVE_INTS = ("num_classes", "num_reg_tokens")


def check_config(cfg: ViTConfig) -> ViTConfig:
  """Raises ValueError on impossible sizes or wrongly typed fields (e.g. img_size=-32)."""
  for f in _POSITIVE_INTS + _NON_NEGATIVE_INTS:
    v = getattr(cfg, f)
    if isinstance(v, bool) or not isinstance(v, int) or v < (1 if f in _POSITIVE_INTS else 0):
      kind = "a positive" if f in _POSITIVE_INTS else "a non-negative"
      raise ValueError(f"{cfg.name}: {f} must be {kind} integer, got {v!r}")
  for f in ("class_token", "dist_token", "no_embed_class", "layerscale"):
    if not isinstance(getattr(cfg, f), bool):
      raise ValueError(f"{cfg.name}: {f} must be true or false, got {getattr(cfg, f)!r}")
  if isinstance(cfg.norm_eps, bool) or not isinstance(cfg.norm_eps, (int, float)) or not (
      math.isfinite(cfg.norm_eps) and cfg.norm_eps > 0):
    raise ValueError(f"{cfg.name}: norm_eps must be a finite number > 0, got {cfg.norm_eps!r}")
  prep = cfg.preprocessing
  if isinstance(prep.input_size, bool) or not isinstance(prep.input_size, int) or (
      prep.input_size < 1):
    raise ValueError(f"{cfg.name}: preprocessing.input_size must be a positive integer, got "
                     f"{prep.input_size!r}")
  for f in ("mean", "std"):
    v = getattr(prep, f)
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
               for x in v) or (f == "std" and not all(x > 0 for x in v)):
      raise ValueError(f"{cfg.name}: preprocessing.{f} must be finite numbers"
                       f"{' > 0' if f == 'std' else ''}, got {v!r}")
  if not (isinstance(prep.crop_pct, (int, float)) and math.isfinite(prep.crop_pct)
          and 0 < prep.crop_pct <= 1):
    raise ValueError(f"{cfg.name}: preprocessing.crop_pct must be in (0, 1], got "
                     f"{prep.crop_pct!r}")
  return cfg


def config_from_dict(d: Dict[str, Any]) -> ViTConfig:
  """Inverse of `config_to_dict`; raises ValueError on unknown or missing fields (field types
  and ranges: `check_config`)."""
  if not isinstance(d, dict):
    raise ValueError(f"config must be an object, got {type(d).__name__}")
  d = dict(d)
  known = {f.name for f in dataclasses.fields(ViTConfig)}
  unknown = sorted(set(d) - known)
  if unknown:
    raise ValueError(f"config has unknown fields {unknown}")
  prep = d.pop("preprocessing", None)
  try:
    if prep is not None:
      if not isinstance(prep, dict):
        raise TypeError("preprocessing must be an object")
      prep = dict(prep)
      for k in ("mean", "std"):
        if k in prep:
          prep[k] = tuple(prep[k])
      d["preprocessing"] = Preprocessing(**prep)
    return ViTConfig(**d)
  except TypeError as e:
    raise ValueError(f"invalid config: {e}") from None


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


def check_finite(params: Params, what: str = "parameters") -> None:
  """Raises ValueError naming every leaf of `params` holding NaN or inf values."""
  bad = [jax.tree_util.keystr(k) for k, v in jax.tree.flatten_with_path(params)[0]
         if not np.all(np.isfinite(np.asarray(v)))]
  if bad:
    raise ValueError(f"{what} hold NaN/inf values in {bad}; refusing to save them")


def _checkpointer():
  import orbax.checkpoint as ocp  # imported lazily: orbax import is slow
  return ocp.StandardCheckpointer()


def save_weights(path: str, cfg: ViTConfig, params: Params, *,
                 meta: Optional[Dict[str, Any]] = None, overwrite: bool = False,
                 extra_json: Optional[Dict[str, Any]] = None,
                 class_names: Optional[Sequence[str]] = None) -> str:
  """Writes `params` (float32) and `cfg` to directory `path` atomically; returns its abs path.

  `extra_json` ({file name: object}) adds JSON files (e.g. training metrics) to the same atomic
  write, so the directory never exists without them. `class_names` (one per output) are recorded
  so image folders can be labelled by class name (`read_class_names`). Raises FileExistsError
  when `path` exists (or is claimed meanwhile by another writer) and not `overwrite`,
  `atomic.ForeignOutputError` when `overwrite` would replace something that is not a weights
  directory, ValueError on mismatched or non-finite parameters.
  """
  check_config(cfg)
  check_params(cfg, params)
  path = os.path.abspath(path)
  params32 = jax.tree.map(lambda a: np.asarray(a, np.float32), params)
  check_finite(params32)
  doc = {"format": FORMAT, "version": VERSION, "config": config_to_dict(cfg), "meta": meta or {}}
  if class_names is not None:
    doc["class_names"] = list(check_class_names(
        [str(c) for c in class_names] if isinstance(class_names, (list, tuple)) else class_names,
        cfg.num_classes))
  with atomic.staged_dir(path, overwrite=bool(overwrite), is_ours=is_weights_dir) as tmp:
    ckptr = _checkpointer()
    ckptr.save(os.path.join(tmp, "params"), params32)
    ckptr.wait_until_finished()
    atomic.write_json(os.path.join(tmp, CONFIG_FILE), doc, sort_keys=True)
    for name, obj in (extra_json or {}).items():
      if name in ("config.json", "params") or os.path.basename(name) != name:
        raise ValueError(f"extra_json file name {name!r} must be a plain file name other than "
                         "config.json and params")
      atomic.write_json(os.path.join(tmp, name), obj, sort_keys=True)
  return path


def _read_doc(path: str) -> Tuple[str, Dict[str, Any]]:
  """(config.json path, its validated top-level document)."""
  cfg_file = os.path.join(path, CONFIG_FILE)
  if not os.path.isfile(cfg_file):
    raise FileNotFoundError(f"{path} is not a vitprune weights directory (no config.json)")
  try:
    with open(cfg_file) as f:
      doc = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"{cfg_file} is corrupted: {e}") from None
  if not isinstance(doc, dict):
    raise ValueError(f"{cfg_file} is corrupted: not a JSON object")
  if doc.get("format") != FORMAT:
    raise ValueError(f"{cfg_file}: format {doc.get('format')!r} is not {FORMAT!r}")
  if doc.get("version") != VERSION:
    raise ValueError(f"{cfg_file}: unsupported version {doc.get('version')!r}")
  if not isinstance(doc.get("config"), dict):
    raise ValueError(f"{cfg_file}: 'config' must be an object of ViTConfig fields")
  if not isinstance(doc.get("meta", {}), dict):
    raise ValueError(f"{cfg_file}: 'meta' must be an object")
  return cfg_file, doc


def read_weights_config(path: str) -> Tuple[ViTConfig, Dict[str, Any]]:
  """(config, meta) of a weights directory, without touching the parameters."""
  cfg_file, doc = _read_doc(path)
  try:
    cfg = check_config(config_from_dict(doc["config"]))
  except ValueError as e:
    raise ValueError(f"{cfg_file}: {e}") from None
  if "class_names" in doc and doc["class_names"] is not None:
    check_class_names(doc["class_names"], cfg.num_classes, f"{cfg_file}: class_names")
  return cfg, doc.get("meta", {})


def read_class_names(path: str) -> Optional[Tuple[str, ...]]:
  """The class names a weights directory records (index order), or None if it has none."""
  cfg_file, doc = _read_doc(path)
  names = doc.get("class_names")
  if names is None:
    return None
  cfg, _ = read_weights_config(path)
  return check_class_names(names, cfg.num_classes, f"{cfg_file}: class_names")


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
