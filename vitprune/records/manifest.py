"""The deployment manifest record: what an artifact directory holds and how to call it.

Written by `vitprune.deploy.export_artifact` as `manifest.json`; read (strictly, every field) by
`vitprune.deploy.load`. Layout (format "vitprune-deploy", version 2; version 1, read too, lacks
weights.source_sha256):

  {"format", "version", "created",
   "model": {"name", "config"},
   "schedule": {"counts": [depth + 1 ints], "text": compact schedule},
   "reducer": null | {"name", "options", "class", "fields", "repr"},
   "compute": {"dtype", "precision"},
   "input": {"layout": "NHWC", "shape": [B | "b", S, S, C], "dtype", "batch_size": B | null,
             "symbolic_batch": bool},
   "output": {"shape": [B | "b", K], "dtype", "kind": "logits" | "features"},
   "preprocessing": the model's Preprocessing fields,
   "weights": {"sha256", "sha256_of", "num_params", "leaves": {path: {"shape", "dtype"}},
               "source": {...}, "source_sha256": of source (the weights' origin: the
               training-data guard reads its split)},
   "platforms": [...], "files": {"forward", "forward_sha256", "params",
                                 "calling_convention_version"},
   "class_names": null | [num_classes names],
   "targets": ["jax", IREE targets...] (modules and their records in iree/, `vitprune.edge`),
   "identity": sha256 of the canonical JSON of `identity_fields` (also carried inside the
               exported forward, so an edited manifest is detected),
   "provenance": {...}, "versions": {...}}

Everything that decides what the graph computes (config, schedule, reducer, compute, shapes,
preprocessing, class names; from version 2 the weights source's digest) is checked for
consistency here and tied to the exported forward by `identity` (on a board, without the
forward, the IREE records carry the digest); free-form entries (provenance, versions) are kept
as given, and the weights source as given when it still hashes to its `source_sha256`.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, Optional, Tuple, Union

from vitprune import atomic
from vitprune import jsonio
from vitprune import schedule as schedule_lib
from vitprune.config import (COMPUTE_DTYPES, PRECISIONS, Preprocessing, ViTConfig,
                             check_config_types, check_path, config_from_dict, config_to_dict)

FORMAT = "vitprune-deploy"
VERSION = 2
READ_VERSIONS = (1, 2)    # 2: weights.source_sha256 required (1: before it was recorded)
MANIFEST_FILE = "manifest.json"
BATCH_SYMBOL = "b"
DTYPES = COMPUTE_DTYPES
WEIGHTS_SHA256_OF = "parameter leaves (vitprune.deploy.params_sha256)"

Dim = Union[int, str]


class ArtifactError(jsonio.FormatError):
  """A deployment artifact is missing, corrupt, or does not match its weights or this host."""


def _req(cond: bool, where: str, msg: str):
  jsonio.require(cond, where, msg, ArtifactError)


@dataclasses.dataclass(frozen=True)
class Manifest:
  """A deployment artifact's manifest (see the module docstring for the JSON layout)."""
  config: ViTConfig
  counts: Tuple[int, ...]
  reducer: Optional[Dict[str, Any]]
  dtype: str
  precision: str
  input_shape: Tuple[Dim, ...]
  output_shape: Tuple[Dim, ...]
  weights: Dict[str, Any]
  platforms: Tuple[str, ...]
  files: Dict[str, Any]
  created: str
  class_names: Optional[Tuple[str, ...]] = None
  targets: Tuple[str, ...] = ("jax",)    # "jax" + IREE targets compiled into iree/
  provenance: Dict[str, Any] = dataclasses.field(default_factory=dict)
  versions: Dict[str, Any] = dataclasses.field(default_factory=dict)
  source: str = dataclasses.field(default="manifest", compare=False)

  @property
  def model(self) -> str:
    return self.config.name

  @property
  def schedule(self) -> schedule_lib.Schedule:
    return schedule_lib.Schedule(self.counts)

  @property
  def schedule_text(self) -> str:
    return schedule_lib.format_schedule(self.schedule, self.config)

  @property
  def preprocessing(self) -> Preprocessing:
    return self.config.preprocessing

  @property
  def batch_size(self) -> Optional[int]:
    b = self.input_shape[0]
    return b if isinstance(b, int) else None

  @property
  def reducer_name(self) -> Optional[str]:
    return None if self.reducer is None else self.reducer.get("name")

  def identity_fields(self) -> Dict[str, Any]:
    """What the exported graph computes and expects: tied to the forward by `identity`."""
    return {"config": config_to_dict(self.config), "counts": list(self.counts),
            "reducer": None if self.reducer is None else
            {k: self.reducer.get(k) for k in ("name", "options", "fields")},
            "dtype": self.dtype, "precision": self.precision,
            "input_shape": list(self.input_shape), "output_shape": list(self.output_shape),
            "class_names": None if self.class_names is None else list(self.class_names),
            # (version 2: the weights' source digest, so a manifest set back to version 1
            # without it no longer describes the exported forward)
            **({"weights_source_sha256": self.weights["source_sha256"]}
               if "source_sha256" in self.weights else {})}

  def identity(self) -> str:
    return jsonio.canonical_sha256(self.identity_fields())

  def to_json(self) -> Dict[str, Any]:
    symbolic = self.batch_size is None
    return {
        "format": FORMAT, "version": VERSION if "source_sha256" in self.weights else 1,
        "created": self.created,
        "model": {"name": self.model, "config": config_to_dict(self.config)},
        "schedule": {"counts": list(self.counts), "text": self.schedule_text},
        "reducer": self.reducer,
        "compute": {"dtype": self.dtype, "precision": self.precision},
        "input": {"layout": "NHWC", "shape": list(self.input_shape), "dtype": "float32",
                  "batch_size": self.batch_size, "symbolic_batch": symbolic},
        "output": {"shape": list(self.output_shape), "dtype": "float32",
                   "kind": "logits" if self.config.num_classes else "features"},
        "preprocessing": config_to_dict(self.config)["preprocessing"],
        "weights": dict(self.weights), "platforms": list(self.platforms),
        "files": dict(self.files),
        "class_names": None if self.class_names is None else list(self.class_names),
        "targets": list(self.targets), "identity": self.identity(),
        "provenance": dict(self.provenance), "versions": dict(self.versions),
    }

  @classmethod
  def from_json(cls, doc: Any, where: str = MANIFEST_FILE) -> "Manifest":
    """Checks every field (type, range, consistency with the config); `ArtifactError` naming
    the file and the field otherwise."""
    _req(isinstance(doc, dict) and doc.get("format") == FORMAT, where,
         f"format {doc.get('format') if isinstance(doc, dict) else None!r} is not {FORMAT!r}")
    _req(jsonio.is_int(doc.get("version")) and doc["version"] in READ_VERSIONS, where,
         f"unsupported format version {doc.get('version')!r} (this vitprune reads versions "
         f"{' and '.join(map(str, READ_VERSIONS))})")
    missing = [k for k in ("created", "model", "schedule", "reducer", "compute", "input",
                           "output", "preprocessing", "weights", "platforms", "files")
               if k not in doc]
    _req(not missing, where, f"lacks required entries {missing}")
    for key in ("model", "schedule", "compute", "input", "output", "preprocessing", "weights",
                "files"):
      _req(isinstance(doc[key], dict), where, f"{key} must be an object, got "
           f"{type(doc[key]).__name__}")
    try:
      cfg = config_from_dict(doc["model"].get("config") or {})
    except (ValueError, TypeError) as e:
      raise ArtifactError(f"{where}: model.config is invalid: {e}") from None
    check_config_types(cfg, where, ArtifactError)
    _req(doc["model"].get("name") == cfg.name, where,
         f"model.name {doc['model'].get('name')!r} != config name {cfg.name!r}")
    _req(doc["preprocessing"] == config_to_dict(cfg)["preprocessing"], where,
         "preprocessing does not match model.config.preprocessing (edited?)")
    counts = doc["schedule"].get("counts")
    _req(isinstance(counts, list) and all(jsonio.is_int(c) for c in counts), where,
         f"schedule.counts must be a list of ints, got {counts!r}")
    try:
      schedule = schedule_lib.check_schedule(cfg, schedule_lib.Schedule(tuple(counts)))
    except (ValueError, TypeError) as e:
      raise ArtifactError(f"{where}: schedule.counts {counts} is not a schedule of {cfg.name}: "
                          f"{e}") from None
    # The text parses to the counts (not: equals today's compact form of them, which changed:
    # a constant-r schedule's text was list:..., now rN).
    text = doc["schedule"].get("text")
    try:
      described = (isinstance(text, str)
                   and schedule_lib.parse_schedule(cfg, text).counts == schedule.counts)
    except ValueError:
      described = False
    if not described:
      _req(False, where, f"schedule.text {text!r} does not describe schedule.counts {counts} "
           f"({schedule_lib.format_schedule(schedule, cfg)!r})")
    reducer = doc["reducer"]
    _req(reducer is None or (isinstance(reducer, dict) and isinstance(reducer.get("name"), str)),
         where, "reducer must be null or an object with a name")
    _req(reducer is not None or schedule == schedule_lib.full_schedule(cfg), where,
         "reducer is null but schedule.counts reduce tokens")
    dtype, precision = doc["compute"].get("dtype"), doc["compute"].get("precision")
    _req(dtype in DTYPES, where, f"compute.dtype {dtype!r} not in {DTYPES}")
    _req(precision in PRECISIONS, where, f"compute.precision {precision!r} not in {PRECISIONS}")
    in_shape, out_shape = doc["input"].get("shape"), doc["output"].get("shape")
    for side in ("input", "output"):   # the exported function takes and returns float32
      _req(doc[side].get("dtype") == "float32", where,
           f"{side}.dtype {doc[side].get('dtype')!r} is not 'float32'")
    symbolic, fixed = doc["input"].get("symbolic_batch"), doc["input"].get("batch_size")
    _req(isinstance(symbolic, bool), where,     # (0 and 0.0 were taken for false)
         f"input.symbolic_batch must be true or false, got {symbolic!r}")
    _req((symbolic and fixed is None) or (not symbolic and jsonio.is_int(fixed) and fixed >= 1),
         where, f"input.batch_size must be null with symbolic_batch true, else an int >= 1; "
         f"got {fixed!r} with symbolic_batch {str(symbolic).lower()}")
    batch = BATCH_SYMBOL if symbolic else fixed
    want_in = [batch, cfg.img_size, cfg.img_size, cfg.in_chans]
    _req(in_shape == want_in, where, f"input.shape {in_shape} is not {want_in} for {cfg.name}")
    want_out = [batch, cfg.num_classes or cfg.embed_dim]
    _req(out_shape == want_out, where, f"output.shape {out_shape} is not {want_out} for "
         f"{cfg.name}")
    w = doc["weights"]
    sha = w.get("sha256")
    _req(jsonio.is_sha256(sha), where,
         f"weights.sha256 must be a sha256 hex digest (64 lower-case hex digits), got {sha!r}")
    _req(isinstance(w.get("leaves"), dict), where, "weights.leaves must be an object")
    # Every version wrote these; version 2 also the source's digest.
    required = ["num_params", "sha256_of", "source"] + (["source_sha256"]
                                                        if doc["version"] >= 2 else [])
    missing = [f"weights.{k}" for k in required if k not in w] + [
        f"{side}.{k}" for side, k in (("input", "layout"), ("output", "kind"))
        if k not in doc[side]]
    _req(not missing, where, f"lacks {missing} (edited?)")
    _req(w["sha256_of"] == WEIGHTS_SHA256_OF, where,
         f"weights.sha256_of {w['sha256_of']!r} is not {WEIGHTS_SHA256_OF!r} (edited?)")
    listed = listed_count(w["leaves"])
    _req(listed is None or (jsonio.is_int(w["num_params"]) and w["num_params"] == listed),
         where, f"weights.num_params {w['num_params']!r} is not the {listed} parameters its "
         "leaves list (edited?)")
    _req(isinstance(w["source"], dict), where,
         f"weights.source must be an object, got {type(w['source']).__name__}")
    digest = w.get("source_sha256")
    _req(digest is None or (jsonio.is_sha256(digest) and
                            digest == jsonio.canonical_sha256(w["source"])), where,
         "weights.source no longer hashes to weights.source_sha256 (edited? the training-data "
         "check reads the weights' split there)")
    _req(doc["input"]["layout"] == "NHWC", where,
         f"input.layout {doc['input']['layout']!r} is not 'NHWC' (the exported forward takes "
         "[B, H, W, C] images)")
    kind = "logits" if cfg.num_classes else "features"
    _req(doc["output"]["kind"] == kind, where,
         f"output.kind {doc['output']['kind']!r} is not {kind!r} for num_classes="
         f"{cfg.num_classes}")
    platforms = doc["platforms"]
    _req(isinstance(platforms, list) and platforms and all(isinstance(p, str) for p in platforms),
         where, f"platforms must be a non-empty list of names, got {platforms!r}")
    files = doc["files"]
    for key in ("forward", "forward_sha256", "params"):
      _req(isinstance(files.get(key), str) and files[key], where,
           f"files.{key} must be a non-empty string")
    _req(jsonio.is_sha256(files["forward_sha256"]), where, "files.forward_sha256 must be a sha256 "
         f"hex digest (64 lower-case hex digits), got {files['forward_sha256']!r}")
    for key in ("forward", "params"):
      _req(os.path.basename(files[key]) == files[key] and files[key] not in (".", ".."), where,
           f"files.{key} {files[key]!r} must be a plain name inside the artifact")
    names = doc.get("class_names")
    _req(names is None or (isinstance(names, list) and len(names) == cfg.num_classes and
                           all(isinstance(n, str) for n in names)), where,
         f"class_names must be null or {cfg.num_classes} strings")
    targets = doc.get("targets", ["jax"])
    _req(isinstance(targets, list) and targets[:1] == ["jax"] and
         all(isinstance(t, str) for t in targets), where,
         f"targets must be a list of target names starting with 'jax', got {targets!r}")
    for key in ("provenance", "versions"):
      _req(isinstance(doc.get(key) or {}, dict), where,
           f"{key} must be an object, got {doc.get(key)!r}")
    m = cls(config=cfg, counts=tuple(counts), reducer=reducer, dtype=dtype, precision=precision,
            input_shape=tuple(in_shape), output_shape=tuple(out_shape), weights=dict(w),
            platforms=tuple(platforms), files=dict(files), created=str(doc["created"]),
            class_names=None if names is None else tuple(names), targets=tuple(targets),
            provenance=dict(doc.get("provenance") or {}),
            versions=dict(doc.get("versions") or {}), source=where)
    ident = doc.get("identity")
    _req(ident is None or ident == m.identity(), where,
         "identity does not match the manifest's fields (the manifest was edited)")
    return m


def listed_count(leaves: Dict[str, Any]) -> Optional[int]:
  """Parameters of a weights listing {path: {"shape": [...]}}; None when a shape is not a list
  of non-negative ints (the listing check against the exported forward names that)."""
  total = 0
  for leaf in leaves.values():
    shape = leaf.get("shape") if isinstance(leaf, dict) else None
    if not (isinstance(shape, list) and all(jsonio.is_int(d) and d >= 0 for d in shape)):
      return None
    size = 1
    for d in shape:
      size *= d
    total += size
  return total


def read_manifest(path: str) -> Manifest:
  """The manifest of the artifact directory `path` (`ArtifactError` naming what is wrong)."""
  path = check_path("the artifact path", path)      # ('': the working directory)
  if not os.path.isdir(path):
    raise ArtifactError(f"{path} is not a deployment artifact directory (it does not exist "
                        f"or is not a directory){atomic.moved_aside_note(path)}")
  mf = os.path.join(path, MANIFEST_FILE)
  why = jsonio.why_not_a_file(mf)
  if why == "does not exist":
    raise ArtifactError(f"{path} is not a deployment artifact: {MANIFEST_FILE} is missing")
  if why:                        # (a folder or FIFO there was called "missing")
    raise ArtifactError(f"{mf} {why}: an artifact's manifest is a JSON file")
  try:
    doc = jsonio.read_json(mf, "manifest", ArtifactError)
  except ArtifactError as e:
    raise ArtifactError(f"{mf} is corrupted: {e}") from None
  return Manifest.from_json(doc, where=mf)
