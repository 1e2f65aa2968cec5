"""Runs the IREE modules of a deployment artifact with `iree.runtime` + numpy only (no jax).

    model = load("deploy/vit_digits_pomt")            # picks the first target this host runs
    model = load("deploy/vit_digits_pomt", "iree:host")
    logits = model(images)                            # float32 [B, H, W, C] -> numpy [B, K]

Artifact files written by `vitprune.iree_build` (next to the jax export):
  iree/<target slug>.json   per-target record (format "vitprune-edge-target", version 1):
      target, backend, driver, runtime {profile, driver, gflop, shards, source}, compiler
      {iree_version, input_type, target_backends, flags, profile, fallback},
      function, module {file, sha256, bytes}, weights {mode "args"|"baked", file, sha256,
      params_sha256, leaves [{name, shape, dtype, offset, nbytes}], source_sha256, training
      (the weights' dataset and split where their source says: `training_of`)}, input {shape, dtype,
      layout}, output {shape, dtype}, model, schedule, preprocessing, class_names, host_cpu
      (the compiling CPU, for iree:host), compile_s.
  iree/<target slug>.vmfb   the compiled module; function `<function>(*weights, images) -> logits`
      (`function_name`: 'main_' + a digest of the record; 'main' in records written before).
  iree/weights.bin          float32 leaves, C order, 64-byte aligned (mode "args"; shared).

A module with runtime.shards = S > 1 takes [B / S, ...]: `EdgeModel` splits the batch into S
parts run at once, each through its own VM context of the module in its own thread, on one
device of the driver with one copy of the weights (`Runner`). Modules run on the
record's driver unless `load(..., driver=)` names another one the target
accepts (llvm-cpu: local-sync or local-task). Every file is checked against its sha256 before
use; a missing, edited or replaced file, a module for a device this host lacks or a driver the
target cannot use raises `EdgeError` with a one-line message.
"""
from __future__ import annotations

import concurrent.futures
import functools
import math
import os
import reprlib
import signal
import subprocess
import sys
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from vitprune import console
from vitprune import jsonio
from vitprune.digest import file_sha256
from vitprune.records.manifest import ArtifactError, Manifest
from vitprune.config import Preprocessing, check_path, is_float_dtype
from vitprune.edge.targets import (EdgeError, check_driver, check_runnable, host_cpu,
                                    iree_runtime, parse_target, profile_flags_problem,
                                    targets_mismatch)

RECORD_FORMAT = "vitprune-edge-target"
RECORD_VERSION = 2          # 2: the record holds the reducer (part of its function's identity)
RECORD_VERSIONS = (1, 2)    # what this runtime reads (an older runtime refuses version 2 by name)
EDGE_DIR = "iree"
WEIGHTS_FILE = "iree/weights.bin"
ALIGN = 64


def read_json(path: str, what: str) -> Dict[str, Any]:
  """`vitprune.jsonio.read_json` with every failure as an `EdgeError` naming `what`."""
  why = jsonio.why_not_a_file(path)
  if why:                      # (a FIFO or a folder there was called "missing")
    raise EdgeError(f"{what}: {path} {'is missing' if why == 'does not exist' else why}")
  try:
    return jsonio.read_json(path, what)
  except jsonio.FormatError as e:
    raise EdgeError(f"{what}: {e}") from None


def checked_file(root: str, entry: Dict[str, Any], what: str) -> str:
  """Absolute path of `entry['file']` under `root` after checking it exists and its sha256."""
  rel = entry.get("file")
  if not isinstance(rel, str) or os.path.isabs(rel) or ".." in rel.split("/"):
    raise EdgeError(f"{what}: bad file entry {rel!r}")
  path = os.path.join(root, *rel.split("/"))
  why = jsonio.why_not_a_file(path)
  if why == "does not exist":
    raise EdgeError(f"{what}: {rel} is missing from {root} (incomplete copy?)")
  if why:                           # (a link to /dev/zero was called dangling)
    raise EdgeError(f"{what}: {rel} in {root} {why} (replaced?)")
  got = file_sha256(path)
  if got != entry.get("sha256"):
    raise EdgeError(f"{what}: {rel} has sha256 {got[:16]}..., the record says "
                    f"{str(entry.get('sha256'))[:16]}... (file corrupted or replaced)")
  return path


def record_driver(root: str, record: Dict[str, Any]) -> str:
  """The driver `record` of artifact `root` names, if its target's modules run on it; else
  EdgeError naming the record's file (the record was edited: a --driver is checked before)."""
  try:
    return check_driver(parse_target(record["target"]), record["driver"])
  except EdgeError as e:
    raise EdgeError(f"{os.path.join(root, record.get('_file', EDGE_DIR))}: {e} (an edited "
                    "record?)") from None


def check_record_files(root: str, records: List[Dict[str, Any]],
                       checked: Iterable[Tuple[Any, Any]] = ()) -> None:
  """Every file the records of artifact `root` list (modules, packed weights) exists with its
  recorded sha256, each file hashed once (`checked_file`; `checked`: the (file, sha256) entries
  already hashed): a truncated module or weights.bin loaded on the jax path without a word and
  failed only on the board. So do a record's driver (`record_driver`) and module function
  (`checked_function`): an edited one loaded there too."""
  seen = set(checked)
  for r in records:
    what = os.path.join(root, r.get("_file", EDGE_DIR))
    record_driver(root, r)        # what the board refuses on loading, refused on the jax path
    # (checked before the identity reads them: a string as module or runtime, or a list as a
    # file name, was a traceback on the jax path)
    for key in ("module", "weights", "runtime"):
      entry = r.get(key)
      if key == "runtime" and entry is None:      # (absent or null: one shard, as the board
        entry = {}                                # reads it)
      if not isinstance(entry, dict):
        raise EdgeError(f"{what}: {key} must be an object, got {type(entry).__name__}")
      if key != "runtime" and not (key == "weights" and entry.get("mode") == "baked"):
        for field in ("file", "sha256"):
          if not isinstance(entry.get(field), str):
            raise EdgeError(f"{what}: {key}.{field} must be a string, got "
                            f"{reprlib.repr(entry.get(field))}")
    compiler = r.get("compiler") if isinstance(r.get("compiler"), dict) else {}
    for name, profile in (("runtime", (r.get("runtime") or {}).get("profile")),
                          ("compiler", compiler.get("profile"))):
      problem = profile_flags_problem(profile, compiler.get("flags"))
      if problem:      # (an edited record: a board profile keys its curves by this)
        raise EdgeError(f"{what}: {name}: {problem}: edited after export?")
    checked_function(r, record_identity(r), what)
    for key in ("module", "weights"):
      entry = r[key]
      if key == "weights" and entry.get("mode") == "baked":
        continue
      if (entry.get("file"), entry.get("sha256")) not in seen:
        checked_file(root, entry, what)
        seen.add((entry.get("file"), entry.get("sha256")))


def read_weights(root: str, entry: Dict[str, Any], what: str) -> List[np.ndarray]:
  """The weight leaves of `entry` (mode 'args') in argument order; [] for baked weights."""
  if entry.get("mode") == "baked":
    return []
  path = checked_file(root, entry, what)
  blob = np.fromfile(path, np.uint8)
  out, end = [], 0
  leaves = entry.get("leaves")
  if not isinstance(leaves, list):
    raise EdgeError(f"{what}: weights.leaves must be a list, got {type(leaves).__name__}")
  for i, leaf in enumerate(leaves):
    bad = _bad_leaf_entry(leaf)
    if bad:                        # ("ab" as a shape: "invalid literal for int()", no file named)
      raise EdgeError(f"{what}: weights.leaves[{i}] {bad} (an edited record?)")
    if leaf.get("dtype") != "float32":     # (an edit met IREE's raw buffer diagnostics)
      raise EdgeError(f"{what}: weight leaf {leaf.get('name')} is stored as "
                      f"{leaf.get('dtype')!r}; vitprune packs float32 weights (an edited "
                      "record?)")
    dtype, shape = np.dtype(leaf["dtype"]), tuple(leaf["shape"])
    lo, n = int(leaf["offset"]), int(leaf["nbytes"])
    # (Python ints: a shape of 10**30 overflowed numpy's int64, a traceback)
    if lo + n > blob.size or n != math.prod(shape) * dtype.itemsize:
      raise EdgeError(f"{what}: weight leaf {leaf['name']} does not fit {path}")
    # The file is checked by its sha256, the table by the packing: an edited offset would read
    # the bytes of other leaves as this one.
    if lo != end + (-end % ALIGN):
      raise EdgeError(f"{what}: weight leaf {leaf['name']} is at offset {lo} of {path}, but "
                      f"the packing puts it at {end + (-end % ALIGN)} (an edited record?)")
    end = lo + n
    out.append(blob[lo:lo + n].view(dtype).reshape(shape))
  if end != blob.size:
    raise EdgeError(f"{what}: {path} holds {blob.size} bytes, its weight leaves end at {end}")
  return out


def _bad_leaf_entry(leaf: Any) -> Optional[str]:
  """Why a packed weight leaf entry {name, shape, dtype, offset, nbytes} is malformed, or None."""
  if not isinstance(leaf, dict):
    return "is not an object"
  if not isinstance(leaf.get("name"), str):
    return f"name must be a string, got {leaf.get('name')!r}"
  shape = leaf.get("shape")
  if not (isinstance(shape, list) and all(jsonio.is_int(d) and d >= 0 for d in shape)):
    return f"shape must be a list of non-negative integers, got {shape!r}"
  for key in ("offset", "nbytes"):
    if not (jsonio.is_int(leaf.get(key)) and leaf[key] >= 0):
      return f"{key} must be a non-negative integer, got {leaf.get(key)!r}"
  return None


def pack_weights(leaves: Sequence[np.ndarray], names: Sequence[str]):
  """-> (bytes, leaf entries): float leaves C-order, each at a 64-byte aligned offset."""
  parts, entries, offset = [], [], 0
  for name, a in zip(names, leaves):
    a = np.ascontiguousarray(a)
    pad = -offset % ALIGN
    parts.append(b"\0" * pad)
    offset += pad
    entries.append({"name": name, "shape": [int(d) for d in a.shape], "dtype": a.dtype.name,
                    "offset": offset, "nbytes": int(a.nbytes)})
    parts.append(a.tobytes())
    offset += a.nbytes
  return b"".join(parts), entries


class Runner:
  """One IREE device of `driver` with modules loaded on it (one VM context per load) and
  device-resident arrays. With `shards` > 1 a batch can run split into up to that many equal
  parts at once (`put_batch`, `bind`): each part through its own context of the same module, in
  its own thread (IREE releases the GIL while a function runs; local-sync runs it on the calling
  thread), all reading the same device-resident weights."""

  def __init__(self, driver: str, shards: int = 1):
    ireert = iree_runtime()
    self._rt = ireert
    self.driver, self.shards = driver, check_shards(shards, shards, "runner")
    self.config = ireert.Config(driver)
    self.device = self.config.device
    self._pool = (concurrent.futures.ThreadPoolExecutor(shards - 1, "vitprune-shard")
                  if shards > 1 else None)

  def load(self, path: str, function: str = "main", contexts: int = 1) -> List[Callable]:
    """The function `function` of module file `path`, loaded into `contexts` VM contexts (one
    per shard that runs it)."""
    with open(path, "rb") as f:
      blob = f.read()
    return [self.load_bytes(blob, function, path) for _ in range(contexts)]

  def load_bytes(self, blob: bytes, function: str = "main", path: str = "module") -> Callable:
    rt = self._rt
    try:      # the bytes are verified here (a damaged module fails in copy_buffer)
      vm = rt.VmModule.copy_buffer(self.config.vm_instance, blob)
      mod = rt.load_vm_module(vm, self.config)
    except Exception as e:  # the runtime raises several types for incompatible modules
      raise EdgeError(f"{path} cannot be loaded on the {self.driver} device: "
                      f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    try:
      return mod[function]
    except Exception:  # KeyError / RuntimeError, by runtime version
      raise EdgeError(f"{path} has no function {function!r}: the record or kit entry naming it "
                      "does not belong to this module") from None

  def put(self, array: np.ndarray):
    return self._rt.asdevicearray(self.device, np.ascontiguousarray(array))

  def put_batch(self, x: np.ndarray, parts: int) -> List[Any]:
    """`x` [B, ...] split along the batch into `parts` equal device arrays [B / parts, ...]."""
    if not 1 <= parts <= self.shards or x.shape[0] % parts:
      raise ValueError(f"a batch of {x.shape[0]} does not split into {parts} equal shards "
                       f"(this runner runs at most {self.shards})")
    return [self.put(part) for part in np.split(x, parts)]

  def _invoke(self, fn: Callable, weights: Sequence[Any], x: Any) -> np.ndarray:
    """fn(*weights, x) on the host; the runtime's failure (RuntimeError: e.g. the board out of
    memory for the batch, RESOURCE_EXHAUSTED) as one EdgeError line, not a traceback."""
    try:
      return fn(*weights, x).to_host()
    except RuntimeError as e:
      exhausted = console.resource_exhausted(e)
      lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
      why = exhausted or (lines[0] if lines else type(e).__name__)
      hint = (": not enough memory on this device for the batch (try a smaller batch size)"
              if exhausted else "")
      raise EdgeError(f"the module failed on the {self.driver} device{hint}: "
                      f"{why[:300]}") from None

  def bind(self, fns: Sequence[Callable], weights: Sequence[Any],
           inputs: Sequence[Any]) -> Callable[[], np.ndarray]:
    """A no-argument call running fns[i](*weights, inputs[i]) for every part at once -> the
    results on the host, concatenated along the batch. A part that fails raises once every
    part has finished (no call outlives it)."""
    calls = [functools.partial(self._invoke, f, weights, x) for f, x in zip(fns, inputs)]
    if len(calls) == 1:
      return calls[0]
    pool, first, rest = self._pool, calls[0], calls[1:]

    def run():
      futures = [pool.submit(c) for c in rest]
      try:
        head = first()
      finally:
        concurrent.futures.wait(futures)
      return np.concatenate([np.asarray(head)] + [np.asarray(f.result()) for f in futures])
    return run


class EdgeModel:
  """`model(images [B, H, W, C]) -> numpy [B, K]` from one IREE target of an artifact.

  Attributes: path, record (the per-target JSON), target (text), driver (the one it runs on),
  batch_size, input_shape, preprocessing (a `vitprune.config.Preprocessing`), class_names,
  num_outputs, output_kind ("logits", or "features" for a model without a head), manifest (the
  artifact's manifest.json the records were checked against; None for a copy of iree/ alone).
  """

  def __init__(self, path: str, record: Dict[str, Any], where: str,
               manifest: Optional[Dict[str, Any]] = None):
    self.path, self.record, self.target = path, record, record["target"]
    self.manifest = manifest
    self.driver = record_driver(path, record)
    self.input_shape = tuple(int(d) for d in record["input"]["shape"])
    self.batch_size = self.input_shape[0]
    self.shards = check_shards((record.get("runtime") or {}).get("shards", 1),
                               self.batch_size, where, record["module"])
    function = checked_function(record, record_identity(record), where)
    module = checked_file(path, record["module"], where)
    weights = read_weights(path, record["weights"], where)
    self._runner = Runner(self.driver, self.shards)
    self._fns = self._runner.load(module, function, self.shards)
    self._weights = [self._runner.put(w) for w in weights]
    self.num_outputs = int(record["output"]["shape"][-1])
    # (absent: a record built before kinds, whose artifact's manifest may state it)
    kind = _sub(manifest, "output", "kind")
    self.output_kind = record["output"].get(
        "kind", kind if kind in ("logits", "features") else "logits")
    prep = dict(record["preprocessing"])
    for k in ("mean", "std"):
      prep[k] = tuple(prep[k])
    self.preprocessing = Preprocessing(**prep)
    self.class_names = record.get("class_names")

  def _check(self, images) -> np.ndarray:
    """`images` as the float32 array the module takes; ValueError for another shape,
    integer/bool/complex pixels (raw uint8 pixels were classified as they were) or NaN/inf
    values (all-NaN logits, read as class 0), as `vitprune.load`'s model refuses them."""
    arr = number_array(images)
    # (ml_dtypes is asked only about its own kinds: a board may run without it)
    if not (arr.dtype.kind == "f" or arr.dtype.kind == "V" and is_float_dtype(arr.dtype)):
      raise ValueError(f"images must be floating point, preprocessed as the record says "
                       f"('preprocessing'; vitprune.edge run does it for image files), got "
                       f"{arr.dtype} pixels")
    with np.errstate(over="ignore"):          # (a float64 beyond float32 becomes inf: refused)
      x = arr.astype(np.float32, copy=False)
    if x.shape != self.input_shape:
      raise ValueError(f"{self.target} module expects images {list(self.input_shape)} "
                       f"(NHWC float32), got {list(x.shape)}")
    if not np.isfinite(x).all():
      raise ValueError("images hold NaN or inf values")
    return x

  def __call__(self, images) -> np.ndarray:
    """images [B, H, W, C] preprocessed float32 -> [B, K]; non-finite outputs refused."""
    x = self._check(images)
    return check_finite_outputs(np.asarray(self._bound(x)()), x)

  def timed_call(self, images) -> Callable[[], Any]:
    """A no-argument call on device-resident `images` that returns when the result is on the
    host (what the timing protocol times)."""
    return self._bound(self._check(images))

  def _bound(self, x: np.ndarray) -> Callable[[], Any]:
    """`timed_call` of images `x` already checked (`_check`)."""
    return self._runner.bind(self._fns, self._weights, self._runner.put_batch(x, self.shards))


def number_array(images) -> Any:
  """`images` (an array, or nested lists of arrays and numbers) as one array of numbers, its
  element type theirs: ValueError in one line for a ragged batch (numpy's "inhomogeneous
  shape" error, raw) or objects that are not numbers; an object array of ints stays ints (a cast
  to float32 took raw pixels as preprocessed), for the callers' dtype checks."""
  try:
    arr = images if hasattr(images, "dtype") else np.asarray(images)
    if arr.dtype == object:
      arr = np.asarray(arr.tolist())
  except (TypeError, ValueError) as e:
    raise ValueError("images must be one [B, H, W, C] array of numbers "
                     f"({' '.join(str(e).split())})") from None
  if arr.dtype == object:
    raise ValueError("images must be one [B, H, W, C] array of numbers, got objects among "
                     "them (None?)")
  return arr


def check_finite_outputs(outputs: Any, images: np.ndarray) -> Any:
  """`outputs` [B, K] of a deployed model on `images` [B, H, W, C] (JAX's or a board's), or
  FloatingPointError naming the images whose outputs are NaN/inf: finite inputs far outside
  the preprocessed range (3e38) gave all-NaN logits, read as class 0 without a word."""
  bad = ~np.isfinite(np.asarray(outputs)).reshape(len(outputs), -1).all(axis=1)
  if bad.any():
    rows = np.flatnonzero(bad)
    peak = float(np.max(np.abs(np.asarray(images)[rows])))
    raise FloatingPointError(
        f"the model's outputs are NaN/inf for {rows.size} of {len(outputs)} images (first: "
        f"batch row {rows[0]}), whose values reach {peak:.3g}: are they preprocessed as the "
        "artifact records ('preprocessing')?")
  return outputs


def record_identity(record: Dict[str, Any]) -> Dict[str, Any]:
  """What an artifact's target record says its module computes and how it is called: the
  fields its function name is derived from (`function_name`)."""
  weights = record.get("weights") or {}
  # "reducer": in records written since it was recorded (older ones keep their function names)
  return {**{k: record.get(k) for k in ("target", "model", "schedule", "compute", "preprocessing",
                                        "class_names", "input", "output")},
          **({"reducer": record["reducer"]} if "reducer" in record else {}),
          "shards": (record.get("runtime") or {}).get("shards", 1),
          "module_batch": (record.get("module") or {}).get("batch_size"),
          "weights": {**{k: weights.get(k) for k in ("mode", "sha256", "params_sha256",
                                                      "leaves")},
                      # (in records written since it was recorded: older names unchanged)
                      **({"training": weights["training"]} if "training" in weights else {})}}


def function_name(identity: Dict[str, Any]) -> str:
  """The module function of an artifact target or kit point: 'main_' + 16 hex digits of the
  sha256 of its identity. Built into the module (whose sha256 the record holds), so a record
  edited after export (class names, preprocessing, schedule, shapes, ...) names a function its
  module lacks, as a jax artifact's manifest identity is its exported function's name."""
  try:
    return "main_" + jsonio.canonical_sha256(identity)[:16]
  except ValueError as e:      # NaN or inf in a record
    raise EdgeError(f"bad value in a record: {e}") from None


def checked_function(entry: Dict[str, Any], identity: Dict[str, Any], where: str) -> str:
  """The function an artifact record or kit point calls: `function_name(identity)`, which its
  'function' field must name; 'main' (written before identities) is taken unchecked."""
  named = entry.get("function", "main")
  if named == "main":
    return named
  want = function_name(identity)
  if named != want:
    raise EdgeError(f"{where}: the record does not match its module (function {named!r}, its "
                    f"fields give {want!r}): edited after export?")
  return named


def _is_count(v: Any) -> bool:
  return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def check_shards(shards: Any, batch: int, where: str, module: Optional[Dict] = None) -> int:
  """`shards` (from a record or kit; 1 when absent, as in files written before sharding) if it
  splits a batch of `batch` into equal parts, each the batch the `module` entry says it was
  compiled for (when it says); raises EdgeError naming `where` otherwise."""
  if not _is_count(shards) or batch % shards:
    raise EdgeError(f"{where}: shards {shards!r} does not split the batch of {batch} into "
                    "equal parts")
  module_batch = (module or {}).get("batch_size", batch // shards)
  if not _is_count(module_batch) or module_batch * shards != batch:
    raise EdgeError(f"{where}: a module for batch {module_batch!r} in "
                    f"{console.counted(shards, 'shard')} cannot take the batch of {batch}")
  return shards


def record_files(folder: str) -> List[str]:
  """The `*.json` files of an artifact's `iree/` folder, sorted (names starting with '.' left
  out, as a glob does); [] when there is no such folder. Listed, not globbed: a glob read the
  artifact's own path as a pattern ('art[1]' found no records, 'd*' a sibling's). EdgeError
  naming the folder when it cannot be read (it was 'holds no module record')."""
  try:
    names = os.listdir(folder)
  except (FileNotFoundError, NotADirectoryError):
    return []
  except OSError as e:
    raise EdgeError(f"cannot list {folder}: {e.strerror or e}") from None
  return sorted(os.path.join(folder, n) for n in names
                if n.endswith(".json") and not n.startswith("."))


def _holds_records(folder: str) -> bool:
  """Whether `folder` holds a module record (a JSON file of RECORD_FORMAT)."""
  try:
    files = record_files(folder)
  except EdgeError:
    return False
  for f in files:
    try:
      if jsonio.read_json(f, "record").get("format") == RECORD_FORMAT:
        return True
    except (jsonio.FormatError, OSError, AttributeError):
      continue
  return False


def check_not_in_records_folder(path: str, flag: str) -> None:
  """ValueError naming `--flag` when `path` is a .json file in an artifact's iree/ folder (one
  holding module records): every iree/*.json is read as a module record, so a result written
  there broke the artifact. The inventory check (`atomic.check_outside_published`) catches that
  only where the inventory was copied too; the board setup copies iree/ alone."""
  folder = os.path.dirname(os.path.realpath(path))
  if (path.endswith(".json") and os.path.basename(folder) == EDGE_DIR
      and _holds_records(folder)):
    raise ValueError(f"--{flag}={path} is inside {folder}, an artifact's {EDGE_DIR}/ folder "
                     "whose every .json is read as a module record: write elsewhere")


def read_records(path: str) -> List[Dict[str, Any]]:
  """The per-target records of artifact `path`, in file-name order (validated headers)."""
  if not os.path.isdir(path):
    raise EdgeError(f"{path} is not an artifact directory")
  files = record_files(os.path.join(path, EDGE_DIR))
  if not files:
    from vitprune.edge.kit import KIT_MANIFEST  # pylint: disable=g-import-not-at-top  (a cycle)
    if os.path.isfile(os.path.join(path, KIT_MANIFEST)):
      raise EdgeError(f"{path} is a profiling kit ({KIT_MANIFEST}), not an artifact: profile it "
                      f"with python -m vitprune.edge profile --kit={path}; deploy a model with "
                      "python -m experiments.deploy --target=iree:host")
    if (os.path.basename(os.path.normpath(path)) == EDGE_DIR
        and record_files(path)):                   # (the artifact's own iree/ folder given)
      parent = os.path.dirname(os.path.normpath(path))
      raise EdgeError(f"{path} is the {EDGE_DIR}/ folder of an artifact: give the artifact, "
                      f"--artifact={parent}")
    if os.path.lexists(os.path.join(path, "manifest.json")):
      # (a manifest listing an IREE target whose record is missing: a partial copy, named as
      # vitprune.load names it; it was 'holds no IREE target ... export it')
      check_against_manifest(path, [])
    raise EdgeError(f"{path} holds no IREE target (no {EDGE_DIR}/*.json); export it with "
                    "python -m experiments.deploy --target=iree:host")
  out = []
  for f in files:
    doc = read_json(f, "edge target record")
    if doc.get("format") != RECORD_FORMAT:     # (read_json: always an object)
      raise EdgeError(f"{f}: not a {RECORD_FORMAT} record (format {doc.get('format')!r}): a file "
                      f"put into {EDGE_DIR}/ after the export? move it out (every "
                      f"{EDGE_DIR}/*.json is read as a module record)")
    if not jsonio.is_int(doc.get("version")) or doc["version"] not in RECORD_VERSIONS:
      # (true passed as version 1)
      raise EdgeError(f"{f}: not a {RECORD_FORMAT} record of version "
                      f"{' or '.join(map(str, RECORD_VERSIONS))} (a newer vitprune wrote it?)")
    if doc["version"] >= 2 and "reducer" not in doc:
      raise EdgeError(f"{f}: record lacks ['reducer']")
    missing = [k for k in ("target", "driver", "module", "weights", "input", "output",
                           "preprocessing") if k not in doc]
    if missing:
      raise EdgeError(f"{f}: record lacks {missing}")
    doc["_file"] = os.path.relpath(f, path)
    out.append(doc)
  return out


def with_driver(record: Dict[str, Any], driver: Optional[str]) -> Dict[str, Any]:
  """`record` running on `driver` (None: its own), checked against its target."""
  if driver is None:
    return record
  return dict(record, driver=check_driver(parse_target(record["target"]), driver))


def _sub(d: Any, *keys: str) -> Any:
  """d[k0][k1]..., None where a level is missing or not an object."""
  for k in keys:
    d = d.get(k) if isinstance(d, dict) else None
  return d


_ABSENT = object()     # a key a record or the manifest does not have (not the same as null)


def _key(d: Any, *keys: str) -> Any:
  """d[k0][k1]...; `_ABSENT` where the last key is missing, None where a level above it is."""
  parent = _sub(d, *keys[:-1])
  return parent.get(keys[-1], _ABSENT) if isinstance(parent, dict) else None


# The fields an artifact's IREE record and its manifest both state: (what, the manifest's,
# the record's). A field the record lacks (`_ABSENT`: written before it was recorded) is not
# compared.
_SHARED_FIELDS = (
    ("weights", lambda m: _sub(m, "weights", "sha256"),
     lambda r: _sub(r, "weights", "params_sha256")),
    ("model", lambda m: _sub(m, "model", "name") if isinstance(m.get("model"), dict)
     else m.get("model"), lambda r: r.get("model")),
    ("schedule", lambda m: _sub(m, "schedule", "text"), lambda r: r.get("schedule")),
    ("reducer", lambda m: None if not isinstance(m.get("reducer"), dict) else
     {k: m["reducer"].get(k) for k in ("name", "options", "fields")},
     lambda r: _key(r, "reducer")),                     # (records before version 2 lack it)
    ("class_names", lambda m: m.get("class_names"), lambda r: r.get("class_names")),
    ("preprocessing", lambda m: m.get("preprocessing"), lambda r: r.get("preprocessing")),
    ("compute", lambda m: m.get("compute"), lambda r: r.get("compute")),
    ("input shape", lambda m: _sub(m, "input", "shape"), lambda r: _sub(r, "input", "shape")),
    ("output shape", lambda m: _sub(m, "output", "shape"),
     lambda r: _sub(r, "output", "shape")),
    ("weights source", lambda m: _key(m, "weights", "source_sha256"),
     lambda r: _key(r, "weights", "source_sha256")),
    ("weights training", lambda m: training_of(_sub(m, "weights", "source")),
     lambda r: _key(r, "weights", "training")))


def _shown(what: str, value: Any) -> str:
  """A shared field's value in a message: a weights digest by its first 12 digits."""
  return f"{str(value)[:12]}..." if what == "weights" else reprlib.repr(value)


def _first_difference(what: str, got: Any, want: Any) -> Tuple[str, Any, Any]:
  """(what, got, want) narrowed to the first differing key where both are objects, e.g.
  ('preprocessing mean', [0.5, ...], [0.485, ...]), so the message shows the field that differs
  rather than two truncated dicts; `want` is `_ABSENT` where the manifest lacks that key."""
  while isinstance(got, dict) and isinstance(want, dict):
    keys = [k for k in sorted(set(got) | set(want), key=str) if got.get(k) != want.get(k)]
    if len(keys) != 1:
      if keys:
        what = f"{what} {', '.join(map(str, keys))}"
        got, want = ({k: got.get(k) for k in keys}, {k: want.get(k) for k in keys})
      break
    what, got, want = f"{what} {keys[0]}", got.get(keys[0]), want.get(keys[0], _ABSENT)
  return what, got, want


def training_of(source: Any) -> Optional[Dict[str, Any]]:
  """What a weights source (`manifest.weights.source`) says of the weights' training data: its
  meta's "dataset" and "split" (`train_digits` records them), None where it says nothing."""
  meta = source.get("meta") if isinstance(source, dict) else None
  if not isinstance(meta, dict) or "dataset" not in meta:
    return None
  return {k: meta[k] for k in ("dataset", "split") if k in meta}


def record_training(record: Dict[str, Any]) -> Any:
  """What an IREE record says of its weights' training data (`training_of`), as `weights_meta`
  reads a manifest: a board holding `iree/` without the manifest checks the images by it."""
  return _sub(record, "weights", "training")


def weights_meta(manifest: Dict[str, Any]) -> Any:
  """What an artifact's manifest says of its weights' origin (`train_digits` records the
  dataset and split there), None where it says nothing; EdgeError when the source no longer
  hashes to its recorded `source_sha256` (an edited split lifted the training-data guard)."""
  if not isinstance(manifest, dict):      # (a board copy of iree/ alone: no manifest)
    return None
  digest = _sub(manifest, "weights", "source_sha256")
  version = manifest.get("version")
  if digest is None and not (jsonio.is_int(version) and version < 2):   # (version 2 records it)
    raise EdgeError("manifest.json lacks weights.source_sha256 (edited? the training-data "
                    "check reads the weights' split from weights.source)")
  if digest is not None and digest != jsonio.canonical_sha256(_sub(manifest, "weights",
                                                                   "source")):
    raise EdgeError("manifest.json: weights.source no longer hashes to weights.source_sha256 "
                    "(edited? the training-data check reads the weights' split there)")
  return _sub(manifest, "weights", "source", "meta")


def check_against_manifest(path: str, records: List[Dict[str, Any]]) -> Optional[Dict]:
  """The IREE records of an artifact must be of the artifact: every field a record and the
  manifest both state (`_SHARED_FIELDS`). A module copied in from another artifact ran other
  weights, another reducer or another label order, while the jax graph beside it answered for
  these. Returns the manifest (None where the artifact has none)."""
  manifest = os.path.join(path, "manifest.json")
  if not os.path.lexists(manifest):      # a board copy of iree/ alone: its records with each other
    _check_one_artifact(path, records)
    return None
  if not os.path.isfile(manifest):       # (a directory there skipped every check)
    raise EdgeError(f"{manifest} exists but is not a regular file: copy the artifact's "
                    "manifest.json with its iree/ folder, or the iree/ folder alone")
  doc = read_json(manifest, "artifact manifest")
  try:        # read as the jax path reads it (an edited format, version or identity ran here)
    listed = list(Manifest.from_json(doc, manifest).targets)   # (absent: "jax" alone)
  except ArtifactError as e:
    raise EdgeError(str(e)) from None
  why = targets_mismatch(listed, [str(r["target"]) for r in records])
  if why:
    raise EdgeError(f"{manifest}: {why}")
  for r in records:
    bad = [(what, got, want) for what, of_manifest, of_record in _SHARED_FIELDS
           for got, want in [(of_record(r), of_manifest(doc))]
           if got is not _ABSENT and got != want]
    if bad:
      what, got, want = _first_difference(*bad[0])
      if want is _ABSENT or (want is None and bad[0][0].split()[0] not in doc):
        raise EdgeError(f"{manifest}: states no {what} (the {r.get('target')} module's record "
                        "does): an edited or truncated manifest? rebuild it with "
                        "experiments.deploy")
      raise EdgeError(f"{path}: the {r.get('target')} module's record is not of this artifact: "
                      f"its {what} {_shown(what, got)} differs from the manifest's "
                      f"{_shown(what, want)}"
                      f"{f' (and {len(bad) - 1} more field(s))' if len(bad) > 1 else ''}: "
                      "files mixed from two artifacts? rebuild it with experiments.deploy")
  return doc


def _check_one_artifact(path: str, records: List[Dict[str, Any]]) -> None:
  """Without a manifest, the records must still be of one artifact: every field an artifact's
  targets share (`_SHARED_FIELDS`) the same in all of them (iree/ folders of two artifacts
  copied into one ran one's module with the other's labels or preprocessing, unsaid)."""
  first = records[0]
  for r in records[1:]:
    for what, _, of_record in _SHARED_FIELDS:
      got, want = of_record(r), of_record(first)
      if got is not _ABSENT and want is not _ABSENT and got != want:
        what, got, want = _first_difference(what, got, want)
        raise EdgeError(f"{path}: the {r.get('target')} module's record ({r['_file']}) and the "
                        f"{first.get('target')} one's ({first['_file']}) are of two artifacts: "
                        f"their {what} differ ({_shown(what, got)} vs {_shown(what, want)}); "
                        "copy one artifact's iree/ folder, with its manifest.json")


# True in the trial's own process (`_TRIAL_PRELUDE` sets it first), which does not probe (or
# check the artifact's files) again. (An environment variable did this: exported by hand, it
# switched both off in every process.)
_IN_TRIAL_CHILD = False
_TRIAL_PRELUDE = ("import sys, numpy as np\n"
                  "from vitprune.edge import runtime as _runtime\n"
                  "_runtime._IN_TRIAL_CHILD = True\n")


def check_runs_here(path: str, record: Dict[str, Any], where: str) -> None:
  """An artifact's module for a named CPU runs one batch of zeros in a child process first
  (`trial_in_child`)."""
  trial_in_child(record["target"], where, "from vitprune.edge import runtime as r\n"
                 "m = r.load(sys.argv[1], sys.argv[2], sys.argv[3])\n"
                 "m(np.zeros(m.input_shape, np.float32))\n",
                 path, record["target"],
                 record.get("driver") or parse_target(record["target"]).driver)


def trial_in_child(target: str, where: str, code: str, *argv: str) -> None:
  """For a module compiled for a named CPU (`iree:llvm-cpu:<triple>:<cpu>`), runs `code` (with
  `sys`, `np` and `argv` as sys.argv[1:]) in a child process first: on a CPU of the same
  architecture that lacks one of the named CPU's instructions it dies of SIGILL (IREE does not
  check them all), which no process survives (exit 132 and a native stack dump, not an error
  line). EdgeError when the child dies of SIGILL, an interrupt when of SIGINT; any other
  failure is left to this process to meet and report (and a child still running after 600 s
  is let go). Nothing for other targets, or inside such a child."""
  cpu = parse_target(target).cpu
  if cpu in (None, "host", "generic") or _IN_TRIAL_CHILD:
    return
  package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  env = dict(os.environ, **{"PYTHONPATH": os.pathsep.join(
      p for p in (package_root, os.environ.get("PYTHONPATH")) if p)})
  try:
    child = subprocess.run([sys.executable, "-c", _TRIAL_PRELUDE + code, *argv],
                           env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=600, check=False)
  except subprocess.TimeoutExpired:
    return
  if -child.returncode == signal.SIGINT:     # the terminal's Ctrl-C reached it too
    console.raise_if_interrupted()
    raise KeyboardInterrupt
  if -child.returncode == signal.SIGILL:
    raise EdgeError(f"{where} was compiled for the CPU {cpu!r}, and a trial run on this CPU "
                    f"({host_cpu()['model']}) died of SIGILL: this CPU lacks instructions the "
                    "module uses; compile for this board's CPU (--target=iree:host on it)")
  # Another signal (SIGSEGV, the OOM killer's SIGKILL, a SIGTERM) says nothing about the
  # instructions: this process meets the cause, or not, itself.


def _complete(path: str, records: List[Dict[str, Any]], model: "EdgeModel") -> "EdgeModel":
  """`model` once the records of artifact `path` pass the jax path's `check_record_files`
  (every module and weights file there with its recorded sha256, every record's driver and
  function): an incomplete or edited copy ran on the board, which checked the record it picked
  only. Not again in a named CPU's trial child (`trial_in_child`): its parent checks. The
  files `model` was built from are not hashed again."""
  if not _IN_TRIAL_CHILD:
    check_record_files(path, records, {(model.record[k].get("file"), model.record[k].get(
        "sha256")) for k in ("module", "weights")})
  return model


def load(path: str, target: Optional[str] = None, driver: Optional[str] = None,
         flag: Optional[str] = None) -> EdgeModel:
  """The artifact's module for `target` (default: the first one this host can run), on
  `driver` (default: the one its record names). `flag` ('--artifact'): the command-line flag
  `path` came through, named by a refusal of the artifact itself (missing, of another kind,
  incomplete, its records or manifest bad: `console.input_flag`), not by what comes after
  (this host lacking the IREE runtime or the target's device is no fault of the flag's)."""
  with console.input_flag(flag, path):
    path = os.path.abspath(check_path("the artifact path", path))  # ('': the working directory)
    records = read_records(path)
    manifest = check_against_manifest(path, records)
  if target is not None:
    parsed = parse_target(target)
    want = parsed.text
    chosen = [r for r in records if r["target"] == want]
    if not parsed.is_iree:            # (said only that the artifact has no module for jax)
      raise EdgeError(f"--target={want} is not an edge target: vitprune.edge runs the IREE "
                      f"modules of {path} ({', '.join(r['target'] for r in records)}); run "
                      "its jax export with python -m experiments.run_deployed")
    if not chosen:
      raise EdgeError(f"{path} has no module for target {want} (it has "
                      f"{', '.join(r['target'] for r in records)})")
    record = with_driver(chosen[0], driver)
    check_runnable(record, f"{path} ({want})")
    check_runs_here(path, record, f"{path} ({want})")
    return _complete(path, records, EdgeModel(path, record, f"{path} ({want})", manifest))
  reasons = []
  for r in records:
    try:
      record = with_driver(r, driver)
      check_runnable(record, f"{r['target']}")
      check_runs_here(path, record, f"{r['target']}")
    except EdgeError as e:
      reasons.append(str(e))
      continue
    return _complete(path, records, EdgeModel(path, record, f"{path} ({r['target']})",
                                              manifest))
  raise EdgeError(f"{path}: no target runs on this host: {'; '.join(reasons)}")
