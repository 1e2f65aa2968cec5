"""Deployment artifacts: a pruned ViT's forward as serialized StableHLO plus orbax weights.

    export_artifact("deploy/deit_s_pomt", cfg, params, schedule=s, reducer=r,
                    platforms=("cpu", "cuda"))           # writes the directory atomically
    model = load("deploy/deit_s_pomt")                  # jax + orbax + the files, no model code
    logits = model(images)                              # images [B, H, W, C] -> [B, K]

Layout of an artifact directory:
  forward.jax_export  `jax.export.Exported.serialize()` bytes of `jit(forward)` specialised to one
                      (config, schedule, reducer, dtype, precision, input shape); the function
                      takes `(params, images)`: the weights are an argument, not constants.
  params/             orbax `StandardCheckpointer` checkpoint of the float32 parameter tree.
  manifest.json       the `Manifest` record (`vitprune.records.manifest`): model config,
                      schedule, reducer, compute, input/output shapes, preprocessing, weights
                      sha256 + leaf shapes, platforms, files and their sha256, class names,
                      provenance, versions, and `identity`: the digest of everything that
                      decides what the graph computes, also carried in the exported forward's
                      name, so an edited manifest cannot describe a graph it does not hold.

`load` reads the manifest strictly, checks it against the exported forward (identity, input and
output shapes, platforms), rebuilds the parameter tree from the exported function's own input
tree (`exported.in_tree` / `in_avals`), restores it with orbax, and refuses an artifact whose
files, weights (shape or sha256), format version or platforms do not match (`ArtifactError`).
Only the export path imports `vitprune.model` (lazily): a deployed model runs without the model
code.

The weights hash (`params_sha256`) is over the parameter leaves, not over orbax's files: the
sha256 of, for every leaf in sorted key-path order, its key path, dtype, shape and C-order bytes.
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import importlib.metadata as md
import os
import platform as _platform
import time
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

import vitprune
from vitprune import atomic
from vitprune import jsonio
from vitprune import orbax_io
from vitprune.config import ViTConfig, check_config, check_path, check_switch, is_float_dtype
from vitprune.data import check_class_names, iterate_batches
from vitprune.profile import protocol
from vitprune.profile.protocol import Measurement, TimingConfig
from vitprune.digest import file_sha256, params_sha256  # noqa: F401  (file_sha256: public API)
from vitprune.edge.runtime import check_finite_outputs, number_array, training_of
from vitprune.edge.targets import check_compute_dtype, parse_targets
from vitprune.records.manifest import (BATCH_SYMBOL, FORMAT, MANIFEST_FILE, VERSION,  # noqa: F401
                                       WEIGHTS_SHA256_OF, ArtifactError, Manifest,
                                       listed_count, read_manifest)
from vitprune.schedule import check_schedule, full_schedule

FORWARD_FILE = "forward.jax_export"
PARAMS_DIR = "params"
KNOWN_PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
IDENTITY_PREFIX = "vitprune_"

# `export_artifact(overwrite=True)` replaces only a directory whose manifest.json is ours (its
# layout: `atomic.DIRECTORY_LAYOUTS`).
is_artifact_dir = atomic.json_marker(MANIFEST_FILE, FORMAT)

Params = Dict[str, Any]


# ----------------------------------------------------------------------------- small helpers


def leaf_listing(tree: Any) -> Dict[str, Dict[str, Any]]:
  """`{key path: {"shape": [...], "dtype": str}}` of arrays or `ShapeDtypeStruct`s."""
  return {jax.tree_util.keystr(k): {"shape": [int(d) for d in v.shape],
                                    "dtype": np.dtype(v.dtype).name}
          for k, v in jax.tree.flatten_with_path(tree)[0]}


def local_platform() -> str:
  """The `jax.export` platform name of the default backend: 'cpu', 'cuda', 'rocm' or 'tpu'."""
  backend = jax.default_backend()
  if backend == "gpu":
    version = str(getattr(jax.devices()[0].client, "platform_version", "")).lower()
    return "rocm" if "rocm" in version else "cuda"
  return backend


def normalize_platforms(platforms: Optional[Sequence[str]]) -> Tuple[str, ...]:
  """Validated, de-duplicated lower-case platform names; None means `(local_platform(),)`."""
  if platforms is None:
    return (local_platform(),)
  if isinstance(platforms, str):
    platforms = platforms.split(",")
  out = []
  for p in platforms:
    p = str(p).strip().lower()
    if p not in KNOWN_PLATFORMS:
      raise ValueError(f"unknown platform {p!r}; expected some of {', '.join(KNOWN_PLATFORMS)}")
    if p in out:
      raise ValueError(f"platform {p!r} given twice")
    out.append(p)
  if not out:
    raise ValueError("no platform given")
  return tuple(out)


def _versions() -> Dict[str, str]:

  def version(dist):
    try:
      return md.version(dist)
    except md.PackageNotFoundError:
      return "unknown"

  return {"jax": jax.__version__, "jaxlib": version("jaxlib"),
          "orbax-checkpoint": version("orbax-checkpoint"),
          "vitprune": getattr(vitprune, "__version__", "unknown"),
          "python": _platform.python_version()}


def _jsonable(x: Any) -> Any:
  """Dataclasses, tuples and numpy scalars -> plain JSON values (others -> repr)."""
  if dataclasses.is_dataclass(x) and not isinstance(x, type):
    return {f.name: _jsonable(getattr(x, f.name)) for f in dataclasses.fields(x)}
  if isinstance(x, Mapping):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, np.generic):
    return x.item()
  if x is None or isinstance(x, (bool, int, float, str)):
    return x
  return repr(x)


def describe_reducer(reducer: Any, name: Optional[str] = None,
                     options: Optional[Mapping[str, Any]] = None) -> Optional[Dict[str, Any]]:
  """Manifest entry of a reducer: name, the options it was made with, its fields and repr."""
  if reducer is None:
    return None
  fields = _jsonable(reducer) if dataclasses.is_dataclass(reducer) else {}
  return {"name": name or getattr(reducer, "name", type(reducer).__name__),
          "options": _jsonable(dict(options or {})),
          "class": f"{type(reducer).__module__}.{type(reducer).__qualname__}",
          "fields": fields, "repr": repr(reducer)}


# ----------------------------------------------------------------------------- export


def export_forward(cfg: ViTConfig, *, schedule=None, reducer=None, dtype: str = "float32",
                   precision: str = "highest", batch_size: Optional[int] = 1,
                   platforms: Optional[Sequence[str]] = None,
                   name: str = "forward") -> jax.export.Exported:
  """`jax.export` of `jit(forward)` specialised to everything static; args `(params, images)`.

  Args:
    cfg, schedule, reducer, dtype, precision: as `vitprune.model.forward` (all static).
    batch_size: a fixed batch B >= 1, or None for a symbolic batch dimension 'b'.
    platforms: lowering platforms (e.g. ('cpu', 'cuda')); default the local one.
    name: the exported function's name (`Exported.fun_name`; artifacts carry their identity).

  Returns:
    The `Exported` of `params (float32 tree), images f32[B, S, S, C] -> f32[B, K]`.
  """
  from vitprune import model  # pylint: disable=g-import-not-at-top  (load() must not need it)
  platforms = normalize_platforms(platforms)
  batch = _batch_dim(batch_size)

  def fn(params, images):
    return model.forward(params, images, cfg=cfg, schedule=schedule, reducer=reducer,
                         dtype=dtype, precision=precision)

  fn.__name__ = fn.__qualname__ = name
  images = jax.ShapeDtypeStruct((batch, cfg.img_size, cfg.img_size, cfg.in_chans), jnp.float32)
  return jax.export.export(jax.jit(fn), platforms=platforms)(model.abstract_params(cfg), images)


def _batch_dim(batch_size: Optional[int]):
  if batch_size is None:
    return jax.export.symbolic_shape(BATCH_SYMBOL)[0]
  if isinstance(batch_size, (int, np.integer)) and not isinstance(batch_size, bool) \
      and batch_size >= 1:
    return int(batch_size)
  raise ValueError(f"batch_size must be a positive int or None (symbolic), got {batch_size!r}")


def plan_manifest(cfg: ViTConfig, params: Params, *, counts: Sequence[int],
                  reducer_entry: Optional[Dict[str, Any]], dtype: str, precision: str,
                  batch_size: Optional[int], platforms: Sequence[str],
                  class_names: Optional[Sequence[str]] = None,
                  provenance: Optional[Mapping[str, Any]] = None,
                  weights_source: Optional[Mapping[str, Any]] = None) -> Manifest:
  """The manifest of an artifact before export (the forward's sha256 is filled in after)."""
  _batch_dim(batch_size)
  b = BATCH_SYMBOL if batch_size is None else int(batch_size)
  source = _jsonable(dict(weights_source or {}))
  provenance = _jsonable(dict(provenance or {}))
  jsonio.check_storable(source, "weights_source")       # (before the export: NaN failed once
  jsonio.check_storable(provenance, "provenance")       # it was written)
  return Manifest(
      config=cfg, counts=tuple(int(c) for c in counts), reducer=reducer_entry, dtype=dtype,
      precision=precision, input_shape=(b, cfg.img_size, cfg.img_size, cfg.in_chans),
      output_shape=(b, cfg.num_classes or cfg.embed_dim),
      weights={"sha256": params_sha256(params), "sha256_of": WEIGHTS_SHA256_OF,
               "num_params": int(sum(np.size(v) for v in jax.tree.leaves(params))),
               "leaves": leaf_listing(params), "source": source,
               "source_sha256": jsonio.canonical_sha256(source)},
      platforms=tuple(platforms),
      files={"forward": FORWARD_FILE, "forward_sha256": "", "params": PARAMS_DIR},
      created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      class_names=None if class_names is None else tuple(class_names),
      provenance=provenance, versions=_versions())


def export_artifact(out: str, cfg: ViTConfig, params: Params, *, schedule=None,
                    reducer=None, reducer_name: Optional[str] = None,
                    reducer_options: Optional[Mapping[str, Any]] = None,
                    platforms: Optional[Sequence[str]] = None,
                    batch_size: Optional[int] = 1, dtype: str = "float32",
                    precision: str = "highest",
                    provenance: Optional[Mapping[str, Any]] = None,
                    weights_source: Optional[Mapping[str, Any]] = None,
                    class_names: Optional[Sequence[str]] = None,
                    verify: bool = True, overwrite: bool = False,
                    targets: Optional[Sequence[str]] = None,
                    cpu_cores: Optional[int] = None) -> str:
  """Writes a deployment artifact for `(cfg, params, schedule, reducer)` to directory `out`.

  Everything is staged in a temporary sibling directory that is renamed to `out` only when
  complete (and, with `verify`, checked), so a failure leaves no partial artifact.

  Args:
    out: the artifact directory; must not exist unless `overwrite`.
    cfg, params: the model and its float32 parameter tree (as `vitprune.checkpoint.load_weights`).
    schedule, reducer, dtype, precision: as `vitprune.model.forward`.
    reducer_name, reducer_options: how the reducer was made (recorded in the manifest; they must
      make `reducer` where either is one of `reduce.methods.METHODS`: `manifest_name`).
    platforms: export platforms, e.g. ('cpu', 'cuda'); default the local one.
    batch_size: fixed batch B, or None for a symbolic batch dimension.
    provenance: free-form JSON-able record (solver output, profile, estimate, ...).
    weights_source: where the weights came from (directory, its meta).
    class_names: optional names of the `num_classes` outputs (index order).
    verify: load the staged artifact and compare its outputs with `jitted_forward` on
      deterministic images (exact equality on CPU); only when the local platform is exported.
    overwrite: replace an existing `out` (the one there when this call began: one another run
      published meanwhile is not, `atomic.ReplacedMeanwhileError`).
    targets: deployment targets ('jax', 'iree:host', 'iree:cuda:sm_87', ...): IREE modules
      are compiled into the staged directory by `vitprune.iree_build.write_targets` and listed
      in the manifest's "targets"; default (or just 'jax') the jax export alone.
    cpu_cores: cores of the CPU the IREE CPU modules will run on, for batch shards
      (`vitprune.iree_build.choose_runtime`; default: this machine's for iree:host, 1 for a
      cross-compiled CPU).

  Returns:
    The absolute path of the artifact.
  """
  from vitprune.model import check_options, check_params  # pylint: disable=g-import-not-at-top
  check_switch("verify", verify)
  check_config(cfg)      # (one its manifest cannot hold was refused after the export, naming
                         # the staging folder)
  out = os.path.abspath(check_path("the artifact path", out))   # ('': the working directory)
  atomic.check_output_dir_target(out, overwrite, is_artifact_dir)   # before the (slow) export
  # Replaced only as it was now: an artifact another run publishes there meanwhile is not (two
  # deploys with --overwrite into one folder both said they wrote it; it held one of them).
  began = atomic.output_stamp(out)
  orbax_io.writable_path(out)                                 # the weights checkpoint goes below
  check_params(cfg, params)
  schedule = check_schedule(cfg, schedule, reducer)
  # What the graph runs, as `jitted_forward` normalises it: a schedule that reduces nothing runs
  # no reducer, and bfloat16 runs at its one precision ('highest' was recorded for it, and a
  # method for the unpruned graph: identical graphs under other identities; a probe).
  if schedule.counts == full_schedule(cfg).counts:
    reducer = reducer_name = reducer_options = None
  else:    # (a manifest naming 'tome' with options {'bogus': 1} held a POMT graph, and loaded)
    from vitprune.reduce.methods import manifest_name   # (load() imports no reducer)
    reducer_name, reducer_options = manifest_name(reducer, reducer_name, reducer_options)
  check_options(dtype, precision)
  if dtype == "bfloat16":
    precision = "default"
  if class_names is not None:     # (as weights hold them: ten 'a', '' or None were exported)
    class_names = list(check_class_names(class_names, cfg.num_classes))
  platforms = normalize_platforms(platforms)
  parsed = parse_targets(targets or ())
  iree = [t.text for t in parsed if t.is_iree]
  if batch_size is None and iree:     # (refused by the IREE lowering, after the jax export)
    raise ValueError(f"IREE targets need a fixed batch size: a symbolic batch (batch_size=None) "
                     f"exports for jax only, not for {iree[0]}")
  check_compute_dtype(parsed, dtype,         # (refused after the export and each compile)
                      "export bfloat16 for targets=['jax'] alone")
  params32 = jax.tree.map(lambda a: np.asarray(a, np.float32), params)
  manifest = plan_manifest(
      cfg, params32, counts=schedule.counts,
      reducer_entry=describe_reducer(reducer, reducer_name, reducer_options), dtype=dtype,
      precision=precision, batch_size=batch_size, platforms=platforms,
      class_names=class_names, provenance=provenance, weights_source=weights_source)
  exported = export_forward(cfg, schedule=schedule, reducer=reducer, dtype=dtype,
                            precision=precision, batch_size=batch_size, platforms=platforms,
                            name=IDENTITY_PREFIX + manifest.identity())
  blob = exported.serialize()
  manifest = dataclasses.replace(manifest, files=dict(
      manifest.files, forward_sha256=hashlib.sha256(blob).hexdigest(),
      calling_convention_version=int(exported.calling_convention_version)))
  with atomic.staged_dir(out, overwrite=overwrite, is_ours=is_artifact_dir,
                         replaces=began) as tmp:
    with open(os.path.join(tmp, FORWARD_FILE), "wb") as f:
      f.write(blob)
    orbax_io.save(os.path.join(tmp, PARAMS_DIR), params32)
    if targets and [str(t) for t in targets] != ["jax"]:
      from vitprune import iree_build  # pylint: disable=g-import-not-at-top  (IREE: optional)
      manifest = dataclasses.replace(manifest, targets=tuple(iree_build.write_targets(
          tmp, cfg, params32, targets, schedule=schedule, reducer=reducer, dtype=dtype,
          precision=precision, batch_size=batch_size, class_names=class_names,
          cores=cpu_cores, reducer_entry=manifest.identity_fields()["reducer"],
          source_sha256=manifest.weights.get("source_sha256"),
          training=training_of(manifest.weights.get("source")))))
    atomic.write_json(os.path.join(tmp, MANIFEST_FILE), manifest.to_json(), sort_keys=True)
    if verify and local_platform() in platforms:
      _verify(tmp, cfg, params32, schedule, reducer, dtype, precision, batch_size)
  return out


def _verify(path, cfg, params, schedule, reducer, dtype, precision, batch_size) -> None:
  """Loads the staged artifact and checks it reproduces the in-process jitted forward: at its
  fixed batch, or a symbolic batch at 1 and 3 (a shape bug of one or of an odd batch would
  otherwise first show at the user's)."""
  from vitprune import model  # pylint: disable=g-import-not-at-top  (load() must not need it)
  deployed = load(path)
  weights = jax.tree.map(jnp.asarray, params)
  for b in (batch_size,) if batch_size else (1, 3):
    images = np.random.default_rng(b).normal(
        size=(b, cfg.img_size, cfg.img_size, cfg.in_chans)).astype(np.float32)
    got = np.asarray(deployed(images))
    want = np.asarray(model.jitted_forward(weights, images, cfg=cfg, schedule=schedule,
                                           reducer=reducer, dtype=dtype, precision=precision))
    same = np.array_equal(got, want) if local_platform() == "cpu" else np.allclose(
        got, want, rtol=1e-4, atol=1e-4)
    if not same:
      at = "" if batch_size else f" at batch {b} (symbolic batch)"
      raise ArtifactError(f"exported forward does not reproduce the in-process forward{at}: "
                          f"max abs difference {np.max(np.abs(got - want)):.3g}")


# ----------------------------------------------------------------------------- load


def _read_exported(path: str, manifest: Manifest) -> jax.export.Exported:
  fwd = os.path.join(path, manifest.files["forward"])
  if not os.path.isfile(fwd):     # (a folder there, by an edited manifest, was "missing")
    raise ArtifactError(f"{path}: the exported forward {os.path.basename(fwd)} is "
                        + (f"{atomic.describe(fwd)}, not a file" if os.path.lexists(fwd)
                           else "missing"))
  with open(fwd, "rb") as f:
    blob = f.read()
  want = manifest.files["forward_sha256"]
  got = hashlib.sha256(blob).hexdigest()
  if want != got:
    raise ArtifactError(f"{fwd}: sha256 {got} does not match the manifest's {want} (the file "
                        "is corrupted or was replaced)")
  try:
    return jax.export.deserialize(bytearray(blob))
  except Exception as e:  # flatbuffer/MLIR errors come in many types
    raise ArtifactError(f"{fwd} cannot be deserialized: {e}") from e


def _dims(shape) -> Tuple:
  return tuple(d if isinstance(d, int) else str(d) for d in shape)


def _check_exported(exported: jax.export.Exported, manifest: Manifest, path: str) -> None:
  """This jax runs the graph's calling convention, and the manifest describes the graph:
  identity, input and output shapes."""
  version = int(exported.calling_convention_version)
  low = jax.export.minimum_supported_calling_convention_version
  high = jax.export.maximum_supported_calling_convention_version
  if not low <= version <= high:       # (jax itself checks it when exporting, not here)
    raise ArtifactError(f"{path}: the exported forward uses jax.export calling convention "
                        f"version {version}, this jax {jax.__version__} runs versions "
                        f"{low}..{high}: re-export it with this jax (experiments.deploy), or "
                        "load it with a jax that runs that version")
  name = str(exported.fun_name)
  if name.startswith(IDENTITY_PREFIX) and name != IDENTITY_PREFIX + manifest.identity():
    raise ArtifactError(f"{path}: the manifest does not describe the exported forward (its "
                        "config, schedule, reducer, compute, shapes or class names were edited)")
  got_in, got_out = _dims(exported.in_avals[-1].shape), _dims(exported.out_avals[0].shape)
  if got_in != manifest.input_shape or got_out != manifest.output_shape:
    raise ArtifactError(f"{path}: the exported forward maps {list(got_in)} -> {list(got_out)}, "
                        f"the manifest says {list(manifest.input_shape)} -> "
                        f"{list(manifest.output_shape)}")


def _check_platform(exported: jax.export.Exported, manifest: Manifest, path: str) -> str:
  if list(manifest.platforms) != list(exported.platforms):
    raise ArtifactError(f"{path}: manifest platforms {list(manifest.platforms)} do not match "
                        f"the exported forward's {list(exported.platforms)}")
  here = local_platform()
  if here not in exported.platforms:
    raise ArtifactError(f"{path} was exported for platforms {list(exported.platforms)}, but "
                        f"this host runs {here!r}; re-export with --platforms including {here}")
  return here


def _restore_params(path: str, manifest: Manifest, exported: jax.export.Exported
                    ) -> Params:
  """Restores params into the exported function's input tree; checks shapes and sha256."""
  avals = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in exported.in_avals]
  args, kwargs = jax.tree.unflatten(exported.in_tree, avals)
  if kwargs or len(args) != 2:
    raise ArtifactError(f"{path}: the exported forward does not take (params, images)")
  target = args[0]
  want = leaf_listing(target)
  listed = manifest.weights.get("leaves")
  if listed != want:
    raise ArtifactError(f"{path}: the manifest's weight listing does not match the exported "
                        f"forward's parameters: {_diff(listed or {}, want)}")
  pdir = os.path.join(path, manifest.files["params"])
  if not os.path.isdir(pdir):
    raise ArtifactError(f"{path}: the weights checkpoint {os.path.basename(pdir)}/ is missing")
  orbax_io.storage_path(pdir)            # its own message, not wrapped as a restore failure
  try:
    params = orbax_io.restore(pdir, target)
  except Exception as e:  # orbax raises many types; name the directory
    raise ArtifactError(f"could not restore the weights from {pdir}: "
                        f"{orbax_io.failure_text(e)}") from e
  got = leaf_listing(params)
  if got != want:  # orbax may restore a stored shape that differs from the target's
    raise ArtifactError(f"{pdir}: weights do not match the exported forward: "
                        f"{_diff(got, want)}")
  digest = params_sha256(params)
  if digest != manifest.weights.get("sha256"):
    raise ArtifactError(f"{pdir}: weights sha256 {digest} does not match the manifest's "
                        f"{manifest.weights.get('sha256')} (weights changed or corrupted)")
  return params


def _diff(got: Mapping[str, Any], want: Mapping[str, Any]) -> str:
  missing = sorted(set(want) - set(got))
  extra = sorted(set(got) - set(want))
  changed = [f"{k}: {got[k]} vs expected {want[k]}" for k in sorted(set(got) & set(want))
             if got[k] != want[k]]
  return f"missing {missing}, unexpected {extra}, mismatched {changed}"


class DeployedModel:
  """A loaded artifact: `model(images [B, H, W, C] float32) -> [B, K] float32` (jax.Array).

  Attributes:
    manifest: the `Manifest` record.
    class_names: names of the outputs when the artifact records them, else None.
    preprocessing: the model's `Preprocessing` (resize/crop/normalise before calling).
    input_shape: `(B, H, W, C)`, B None for a symbolic batch.
    batch_size: the fixed batch, or None when any batch size runs.
    platforms: the platforms the forward was exported for.
    exported: the deserialized `jax.export.Exported`.
    params: the restored parameter tree (device arrays).
  """

  def __init__(self, path: str, manifest: Manifest, exported: jax.export.Exported,
               params: Params):
    self.path = path
    self.manifest = manifest
    self.exported = exported
    self.params = jax.device_put(params)
    self.preprocessing = manifest.preprocessing
    shape = exported.in_avals[-1].shape
    self.input_shape = tuple(d if isinstance(d, int) else None for d in shape)
    self.batch_size = self.input_shape[0]
    self.platforms = tuple(exported.platforms)
    self.class_names = None if manifest.class_names is None else list(manifest.class_names)
    self._call = jax.jit(exported.call)

  @property
  def num_outputs(self) -> int:
    return int(self.exported.out_avals[0].shape[-1])

  def __call__(self, images) -> jax.Array:
    """images [B, H, W, C], preprocessed floats (converted to float32) -> [B, K] float32.
    Raw integer pixels and NaN/inf are refused (they would run and give wrong classes), and so
    are outputs that are not finite (finite inputs of 3e38 gave NaN logits: class 0)."""
    x = self.check_images(images)
    return check_finite_outputs(self.call_checked(x), x)

  def check_images(self, images) -> jax.Array:
    """`images` as the float32 [B, H, W, C] array the graph takes; ValueError for another
    shape or batch, images that are not one array of numbers (ragged, objects), integer/bool
    pixels, or NaN/inf values."""
    arr = number_array(images)
    if not is_float_dtype(arr.dtype):
      raise ValueError(f"images must be floating point, preprocessed as the artifact records "
                       f"(manifest 'preprocessing'; vitprune.data.preprocess_image), got "
                       f"{arr.dtype} pixels")
    x = jnp.asarray(arr, jnp.float32)
    want = self.input_shape
    if x.ndim != 4 or tuple(x.shape[1:]) != want[1:]:
      raise ValueError(f"{self.manifest.model} artifact expects images "
                       f"[B, {want[1]}, {want[2]}, {want[3]}] (NHWC), got shape {tuple(x.shape)}")
    if self.batch_size is not None and x.shape[0] != self.batch_size:
      raise ValueError(f"artifact was exported for batch size {self.batch_size}, got "
                       f"{x.shape[0]} images (pad the batch, or export with a symbolic batch)")
    if x.shape[0] < 1:
      raise ValueError("empty batch")
    if not bool(jnp.isfinite(x).all()):
      raise ValueError("images hold NaN or inf values")
    return x

  def call_checked(self, x: jax.Array) -> jax.Array:
    """The exported graph on `x` from `check_images` (no checks: what `time_model` times)."""
    return self._call(self.params, x)

  def __repr__(self) -> str:
    b = self.batch_size if self.batch_size is not None else BATCH_SYMBOL
    return (f"DeployedModel({self.manifest.model!r}, schedule "
            f"{self.manifest.schedule_text!r}, input [{b}, {self.input_shape[1]}, "
            f"{self.input_shape[2]}, {self.input_shape[3]}], platforms {list(self.platforms)})")


def time_model(model: "DeployedModel", images: np.ndarray, cfg: TimingConfig) -> Measurement:
  """Steady-state latency of `model(images)` on device-resident images (`model` has been
  called once before, so compilation is excluded)."""
  x = jax.device_put(model.check_images(images))      # checked once, outside the timed calls
  return protocol.summarize(protocol.time_calls(model.call_checked, (x,), cfg,
                                                sync=jax.block_until_ready))


def classify(model: "DeployedModel", dataset, batch_size: int, num_workers: int = 0
             ) -> Dict[str, Any]:
  """Every image of `dataset` (an ImageFolder) through `model` in padded batches -> {"pred":
  argmax [M], "prob": max softmax probability [M], "first_batch": [B, H, W, C],
  "first_call_s": wall time of the first call (compilation + first run)}."""
  preds, probs, first, first_s = [], [], None, None
  for images, _, idx in iterate_batches(dataset, model.preprocessing, batch_size,
                                        num_workers=num_workers):
    t0 = time.perf_counter()
    logits = np.asarray(model(images), np.float64)
    if first is None:
      first, first_s = images, time.perf_counter() - t0
    valid = idx >= 0
    z = np.exp(logits - logits.max(-1, keepdims=True))
    preds.extend(np.argmax(logits, -1)[valid].tolist())
    probs.extend((z / z.sum(-1, keepdims=True)).max(-1)[valid].tolist())
  return {"pred": preds, "prob": probs, "first_batch": first, "first_call_s": first_s}


def listed_param_count(manifest: Manifest) -> int:
  """Parameters the manifest's weight listing holds (`load` checks the listing against the
  exported forward; this needs neither the weights nor the model code)."""
  count = listed_count(manifest.weights.get("leaves", {}))
  if count is None:
    raise ArtifactError(f"{manifest.source}: weights.leaves is not a listing of leaf shapes "
                        "(edited?)")
  return count


def _check_targets(path: str, manifest: Manifest) -> None:
  """ArtifactError when the manifest's targets and the IREE module records in iree/ disagree
  (`vitprune.edge.targets.targets_mismatch`), a record and the manifest state different
  weights, schedule, reducer, ... (`runtime.check_against_manifest`, as the board checks: an
  iree/ folder copied in from another artifact loaded here), or a module or weights file of
  iree/ is missing or not the one recorded (`runtime.check_record_files`)."""
  from vitprune.edge import runtime, targets  # pylint: disable=g-import-not-at-top
  try:
    files = runtime.record_files(os.path.join(path, runtime.EDGE_DIR))  # as the board finds them
    if files:
      records = runtime.read_records(path)
      runtime.check_against_manifest(path, records)
      runtime.check_record_files(path, records)      # (the jax path does not run them)
  except targets.EdgeError as e:
    raise ArtifactError(str(e)) from None
  if files:
    return
  why = targets.targets_mismatch(manifest.targets, [])
  if why:
    raise ArtifactError(f"{path}: {why}")


def load(path: str) -> DeployedModel:
  """Loads the artifact directory `path` written by `export_artifact`.

  Needs only jax, orbax and the files (never imports `vitprune.model`). Raises `ArtifactError`
  when a file is missing or corrupt, the format version is unknown, the weights do not match
  the manifest (shapes or sha256), or the local platform is not among the exported ones. An
  artifact another run replaced while it was read is read again (`atomic.read_folder`).
  """
  path = os.path.abspath(check_path("the artifact path", path))

  def read() -> DeployedModel:
    manifest = read_manifest(path)
    _check_targets(path, manifest)
    exported = _read_exported(path, manifest)
    _check_exported(exported, manifest, path)
    _check_platform(exported, manifest, path)
    params = _restore_params(path, manifest, exported)
    return DeployedModel(path, manifest, exported, params)
  return atomic.read_folder(path, read)
