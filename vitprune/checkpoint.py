"""Weights on disk: an orbax checkpoint of the parameter pytree plus the config that built it.

Layout of a weights directory (e.g. `weights/deit_small_patch16_224/`):
  config.json   {"format": "vitprune-weights", "version": 2, "config": ViTConfig fields,
                 "meta": {free-form provenance: source checkpoint, its sha256, ...},
                 "class_names": ["0", ..., "9"] (optional: the names of the outputs, in order),
                 "params_sha256": `digest.params_sha256` of params/, "config_sha256": of
                 "config", "meta_sha256": of class_names and meta (the labels and the
                 training split the data guards read) (all checked on load; absent in
                 version-1 folders written before them, required from version 2)}
  params/       orbax `StandardCheckpointer` checkpoint of the float32 parameter tree

`load_weights(dir)` needs nothing else: the config rebuilds the abstract tree orbax restores into.
Writes are atomic: everything is written into a temporary sibling directory which is renamed into
place only when complete, so a failure never leaves a partial `weights/<name>/`. Without
`overwrite` the path is claimed atomically (of two concurrent writers one gets FileExistsError);
with it, only a weights directory (its config.json marker) is replaced, never a foreign folder.
Non-finite parameters are refused.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from vitprune import atomic
from vitprune import digest
from vitprune import jsonio
from vitprune import orbax_io
from vitprune.config import (ViTConfig, check_config, check_config_types, check_path,
                             check_switch, config_from_dict, config_to_dict)
from vitprune.data import check_class_names
from vitprune.model import Params, abstract_params, check_params, leaf_name

FORMAT = "vitprune-weights"
VERSION = 2               # 2: every digest of DIGEST_KEYS recorded (1: those of its day, if any)
READ_VERSIONS = (1, 2)
CONFIG_FILE = "config.json"
DIGEST_KEYS = ("params_sha256", "config_sha256", "meta_sha256")   # in the order they came

# A directory is a weights directory (so `save_weights(overwrite=True)` may replace it) when its
# config.json carries our format marker (its layout: `atomic.DIRECTORY_LAYOUTS`).
is_weights_dir = atomic.json_marker(CONFIG_FILE, FORMAT)


def check_finite(params: Params, what: str = "parameters",
                 refusing: str = "refusing to save them") -> None:
  """Raises ValueError naming (dotted: 'blocks.1.mlp.fc1.kernel') every leaf of `params`
  holding NaN or inf values."""
  bad = [leaf_name(k) for k, v in jax.tree.flatten_with_path(params)[0]
         if not np.all(np.isfinite(np.asarray(v)))]
  if bad:
    raise ValueError(f"{what} hold NaN/inf values in {bad}; {refusing}")


def save_weights(path: str, cfg: ViTConfig, params: Params, *,
                 meta: Optional[Dict[str, Any]] = None, overwrite: bool = False,
                 extra_json: Optional[Dict[str, Any]] = None,
                 class_names: Optional[Sequence[str]] = None,
                 replaces: Any = atomic.ANY_OUTPUT) -> str:
  """Writes `params` (float32) and `cfg` to directory `path` atomically; returns its abs path.

  `extra_json` ({file name: object}) adds JSON files (e.g. training metrics) to the same atomic
  write, so the directory never exists without them. `class_names` (one per output) are recorded
  so image folders can be labelled by class name (`read_class_names`). Raises FileExistsError
  when `path` exists (or is claimed meanwhile by another writer) and not `overwrite`,
  `atomic.ForeignOutputError` when `overwrite` would replace something that is not a weights
  directory, ValueError on mismatched or non-finite parameters. `replaces`: the
  `atomic.output_stamp` of `path` when the caller's work began (training, a conversion):
  weights another run published there since are not replaced (`atomic.ReplacedMeanwhileError`),
  and these are kept beside them as `<path>.partial-XXXXXXXX` (with or without `overwrite`).
  """
  check_switch("overwrite", overwrite)   # ('no' replaced the weights: a string is truthy)
  check_config(cfg)                        # (a TypeError for 'test_tiny_vit', not AttributeError)
  check_params(cfg, params)
  # (abspath of '': the working directory, offered for overwrite)
  path = os.path.abspath(check_path("the weights path", path))
  orbax_io.writable_path(path)     # before any work: the checkpoint goes below it
  jsonio.check_storable(meta or {}, "meta")               # (before any work)
  for name, obj in (extra_json or {}).items():
    jsonio.check_storable(obj, f"extra_json[{name!r}]")
  params32 = jax.tree.map(lambda a: np.asarray(a, np.float32), params)
  check_finite(params32)
  doc = {"format": FORMAT, "version": VERSION, "config": config_to_dict(cfg), "meta": meta or {},
         "params_sha256": digest.params_sha256(params32),
         "config_sha256": jsonio.canonical_sha256(config_to_dict(cfg))}
  if class_names is not None:
    doc["class_names"] = list(check_class_names(
        [str(c) for c in class_names] if isinstance(class_names, (list, tuple)) else class_names,
        cfg.num_classes))
  doc["meta_sha256"] = meta_sha256(jsonio.json_form(doc))
  for name in extra_json or {}:     # before any work ('' or '..' failed after the save)
    if not isinstance(name, str) or name in ("", ".", "..", CONFIG_FILE, "params",
                                             atomic.INVENTORY_FILE) or \
        os.path.basename(name) != name:
      raise ValueError(f"extra_json file name {name!r} must be a plain file name other than "
                       f"{CONFIG_FILE}, params and {atomic.INVENTORY_FILE}")
  with atomic.staged_dir(path, overwrite=overwrite, is_ours=is_weights_dir,
                         replaces=replaces) as tmp:
    orbax_io.save(os.path.join(tmp, "params"), params32)
    atomic.write_json(os.path.join(tmp, CONFIG_FILE), doc, sort_keys=True)
    for name, obj in (extra_json or {}).items():
      atomic.write_json(os.path.join(tmp, name), obj, sort_keys=True)
  return path


def _read_doc(path: str, named: Optional[str] = None) -> Tuple[str, Dict[str, Any]]:
  """(config.json path, its validated top-level document); `named`: how a missing or wrong
  folder is named (a CLI's '--weights=DIR'; default `path`)."""
  cfg_file = os.path.join(path, CONFIG_FILE)
  if not os.path.isfile(cfg_file):
    what = ("does not exist" if not os.path.lexists(path) else
            "is a file, not a vitprune weights directory (give the folder holding config.json"
            " and params/)" if os.path.isfile(path) else
            "is not a vitprune weights directory (no config.json)" if not os.path.lexists(
                cfg_file) else f"is not a vitprune weights directory (its config.json is "
            f"{atomic.describe(cfg_file)}, not a file)")
    raise FileNotFoundError(f"{named or path} {what}{atomic.moved_aside_note(path)}")
  try:
    doc = jsonio.read_json(cfg_file, "weights config")
  except jsonio.FormatError as e:
    raise ValueError(f"{cfg_file} is corrupted: {e}") from None
  if doc.get("format") != FORMAT:
    raise ValueError(f"{cfg_file}: format {doc.get('format')!r} is not {FORMAT!r}")
  if not jsonio.is_int(doc.get("version")) or doc["version"] not in READ_VERSIONS:  # (true
    raise ValueError(f"{cfg_file}: unsupported version {doc.get('version')!r}")       # == 1)
  if not isinstance(doc.get("config"), dict):
    raise ValueError(f"{cfg_file}: 'config' must be an object of ViTConfig fields")
  if not isinstance(doc.get("meta", {}), dict):
    raise ValueError(f"{cfg_file}: 'meta' must be an object")
  for key in DIGEST_KEYS:      # (absent: written before that digest existed, in version 1)
    sha = doc.get(key)
    if key not in doc and doc["version"] >= 2:   # (the last digest deleted was unseen in 1)
      raise ValueError(f"{cfg_file}: records no {key} (edited? every version-2 folder records "
                       f"{', '.join(DIGEST_KEYS)}); save the weights again with "
                       "vitprune.save_weights")
    if key in doc and sha is None:      # (no version wrote null: it switched the check off)
      raise ValueError(f"{cfg_file}: {key} is null (edited?); save the weights again with "
                       "vitprune.save_weights")
    if sha is not None and not jsonio.is_sha256(sha):
      raise ValueError(f"{cfg_file}: {key} must be a 64-digit hex string, got {sha!r}")
  # The digests came in this order and every later version wrote the earlier ones too: a
  # folder that records a later one without an earlier one was edited (deleting only
  # params_sha256 let edited parameters load unchecked).
  for later, earlier in zip(DIGEST_KEYS[1:], DIGEST_KEYS):
    if later in doc and earlier not in doc:
      raise ValueError(f"{cfg_file}: records {later} but not {earlier} (edited? every "
                       f"version that wrote {later} wrote {earlier}); save the weights again "
                       "with vitprune.save_weights")
  return cfg_file, doc


def recorded_params_sha256(path: str) -> Optional[str]:
  """The sha256 of the parameters a weights directory's config.json records (None: written
  before it did), without loading them."""
  return _read_doc(path)[1].get("params_sha256")


def meta_sha256(doc: Dict[str, Any]) -> str:
  """The digest of a weights config document's class names and meta."""
  return jsonio.canonical_sha256({"class_names": doc.get("class_names"),
                                  "meta": doc.get("meta", {})})


def read_weights_config(path: str, named: Optional[str] = None
                        ) -> Tuple[ViTConfig, Dict[str, Any]]:
  """(config, meta) of a weights directory, without touching the parameters (`named`: as
  `_read_doc`)."""
  return _config_of(*_read_doc(path, named))


def _config_of(cfg_file: str, doc: Dict[str, Any]) -> Tuple[ViTConfig, Dict[str, Any]]:
  try:
    cfg = config_from_dict(doc["config"])
  except ValueError as e:
    raise ValueError(f"{cfg_file}: {e}") from None
  check_config_types(cfg, cfg_file, key="config")   # ("name": 5 loaded as a model named 5)
  if "class_names" in doc and doc["class_names"] is not None:
    check_class_names(doc["class_names"], cfg.num_classes, f"{cfg_file}: class_names")
  recorded = doc.get("config_sha256")
  if recorded is not None and jsonio.canonical_sha256(doc["config"]) != recorded:
    raise ValueError(f"{cfg_file}: its config no longer hashes to the config_sha256 it records "
                     "(edited? another num_heads or norm_eps is another model for the same "
                     "parameters); save the weights again with vitprune.save_weights")
  recorded = doc.get("meta_sha256")      # (after the checks that name a malformed field)
  if recorded is not None and meta_sha256(doc) != recorded:
    raise ValueError(f"{cfg_file}: its class_names and meta no longer hash to the meta_sha256 "
                     "it records (edited? reversed class names relabel every image, another "
                     "split seed lifts the training-data guard); save the weights again with "
                     "vitprune.save_weights")
  return cfg, doc.get("meta", {})


def read_class_names(path: str) -> Optional[Tuple[str, ...]]:
  """The class names a weights directory records (index order), or None if it has none."""
  cfg_file, doc = _read_doc(path)
  _config_of(cfg_file, doc)     # checks the names (`check_class_names`) and their digest
  names = doc.get("class_names")
  return None if names is None else tuple(names)


def source_class_names(weights_source: str) -> Optional[Tuple[str, ...]]:
  """The class names recorded with the weights `weights_source` names: a weights directory's
  (`read_class_names`), None for random weights ('init_params(seed=0)') or none recorded."""
  return read_class_names(weights_source) if os.path.isdir(weights_source) else None


def load_weights(path: str) -> Tuple[ViTConfig, Params]:
  """(config, float32 params as jax arrays) from a directory written by `save_weights` (read
  again when another run replaced it meanwhile: `atomic.read_folder`)."""
  path = os.path.abspath(check_path("the weights path", path))
  return atomic.read_folder(path, lambda: _load_weights(path))


def _load_weights(path: str) -> Tuple[ViTConfig, Params]:
  """`load_weights` of the absolute `path`, read once."""
  cfg_file, doc = _read_doc(path)
  cfg, _ = _config_of(cfg_file, doc)
  recorded = doc.get("params_sha256")
  params_dir = os.path.join(path, "params")
  if not os.path.isdir(params_dir):
    raise FileNotFoundError(f"{path} has no params/ checkpoint")
  orbax_io.storage_path(params_dir)      # its own message, not wrapped as a restore failure
  try:
    params = orbax_io.restore(params_dir, abstract_params(cfg))
  except Exception as e:  # orbax raises many types; name the directory
    raise ValueError(f"could not restore parameters from {params_dir}: "
                     f"{orbax_io.failure_text(e)}") from e
  check_params(cfg, params)
  # A diverged training run saved by hand: every output would be NaN (prune failed with a
  # traceback, estimate after the whole evaluation).
  check_finite(params, f"the parameters in {params_dir}", "refusing to load them")
  if recorded is not None and digest.params_sha256(params) != recorded:   # a flipped byte
    raise ValueError(f"the parameters in {params_dir} do not match the params_sha256 its "
                     f"config.json records (corrupted or edited since they were saved, or being "
                     f"replaced by another writer: read them again once it is done; a change "
                     f"meant: save them with vitprune.save_weights)")
  return cfg, jax.tree.map(jnp.asarray, params)
