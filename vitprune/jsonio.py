"""Reading the project's JSON formats: one strict reader, field checks, canonical digests.

Every file format of vitprune (estimate, solution, deployment manifest, weights config, latency
profile) is a JSON object with a `format` name and a version. `read_json` is the one place that
opens such a file; `check_format` the one place that checks its name and version; the `require_*`
helpers check single fields with a message naming the file and the field. Writing is
`vitprune.atomic.write_json`. No jax here: record modules that import this stay light.
"""
from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import sys
from typing import Any, Dict, Optional, Sequence, Type

from vitprune.config import check_path


class FormatError(ValueError):
  """A file or document that does not follow its format; the message names where and what."""


def why_not_a_file(path: str) -> str:
  """Why `path` cannot be read as a file ('does not exist', 'is a directory', 'is a dangling
  link', 'is a loop of symbolic links ...', 'lies under a loop ...', 'is not a regular file (a
  device, FIFO or socket)'); '' when it is a regular file (through links)."""
  if os.path.isfile(path):
    return ""
  if not os.path.lexists(path):
    try:
      os.lstat(path)
    except OSError as e:
      if e.errno == errno.ELOOP:
        return "lies under a loop of symbolic links (or too long a chain of them)"
    return "does not exist"
  if not os.path.exists(path):
    return ("is a loop of symbolic links (or too long a chain of them)" if is_link_loop(path)
            else "is a dangling link")
  return ("is a directory" if os.path.isdir(path) else
          "is not a regular file (a device, FIFO or socket)")


def is_link_loop(path: str) -> bool:
  """Whether following `path`'s symbolic links loops (or runs too long a chain of them: ELOOP),
  which `os.path.exists` reports as a dangling link (`why_not_a_file`, `atomic.describe`)."""
  try:
    os.stat(path)
  except OSError as e:
    return e.errno == errno.ELOOP
  return False


def read_json(path: str, what: str, error: Type[ValueError] = FormatError) -> Dict[str, Any]:
  """The JSON object in `path` (`what` names the kind of file in messages).

  Raises FileNotFoundError when `path` is not a file, `error` when it is not valid UTF-8 JSON or
  not an object.
  """
  path = check_path(f"the {what} path", path)   # (None: "expected str, bytes or os.PathLike")
  why = why_not_a_file(path)
  if why:                             # (one type for every caller; the message says which)
    raise FileNotFoundError(f"{what} file {path!r} {why}")
  try:
    with open(path, encoding="utf-8") as f:
      doc = json.load(f, parse_constant=_no_constant, parse_int=_bounded_int,
                      parse_float=_finite_float, object_pairs_hook=_unique_keys)
  except (ValueError, RecursionError) as e:   # bad JSON, bytes, NaN, a 5000-digit int, nesting
    raise error(f"{path}: not valid JSON: {_first_line(e)}{_json_beside(path, what)}") from None
  if not isinstance(doc, dict):
    raise error(f"{path}: expected a JSON object ({what} file), got {type(doc).__name__}")
  return doc


def _json_beside(path: str, what: str) -> str:
  """' (the profile file is the JSON beside it: X.json)' when `path` is not a .json and its
  stem's .json exists (a profile's CSV or a solution's PNG passed for it: "not valid JSON"
  alone), else ''."""
  stem, ext = os.path.splitext(str(path))
  twin = stem + ".json"
  if ext.lower() == ".json" or not os.path.isfile(twin):
    return ""
  return f" (the {what} file is the JSON beside it: {twin})"


def _bounded_int(text: str) -> int:
  """A JSON integer no float overflows on (every number a record holds is used as one)."""
  digits = len(text.lstrip("-"))
  if digits > 309:             # above float's range (and past int()'s 4300-digit limit, whose
    raise ValueError(f"integer of {digits} digits is out of range")   # message names sys.*)
  value = int(text)
  if abs(value) > sys.float_info.max:
    raise ValueError(f"integer of {digits} digits is out of range")
  return value


def _finite_float(text: str) -> float:
  value = float(text)
  if not math.isfinite(value):          # 1e400 parses to inf
    raise ValueError(f"number {text} is out of range")
  return value


def _unique_keys(pairs) -> Dict[str, Any]:
  """An object whose keys are distinct: a key written twice (a hand edit appending a second
  "seed") was read as the last one, silently."""
  doc = dict(pairs)
  if len(doc) != len(pairs):
    seen = set()
    dup = next(k for k, _ in pairs if k in seen or seen.add(k))
    raise ValueError(f"key {dup!r} appears twice in one object")
  return doc


def _no_constant(name: str):
  """JSON's non-standard NaN / Infinity: none of our writers produce them (allow_nan=False)."""
  raise ValueError(f"{name} is not a JSON number")


def _first_line(e: BaseException) -> str:
  text = str(e) or type(e).__name__
  return ("maximum nesting depth exceeded" if isinstance(e, RecursionError)
          else text.splitlines()[0])


def check_format(doc: Any, where: str, fmt: str, versions: Sequence[int],
                 error: Type[ValueError] = FormatError, version_key: str = "version") -> int:
  """Checks `doc["format"] == fmt` and `doc[version_key] in versions`; returns the version."""
  if not isinstance(doc, dict):
    raise error(f"{where}: expected a JSON object, got {type(doc).__name__}")
  if doc.get("format") != fmt:
    raise error(f"{where}: format {doc.get('format')!r} is not {fmt!r}")
  version = doc.get(version_key)
  if not is_int(version) or version not in versions:
    raise error(f"{where}: unsupported {version_key} {version!r} (this vitprune reads "
                f"{', '.join(map(str, versions))})")
  return version


def is_int(x: Any) -> bool:
  return isinstance(x, int) and not isinstance(x, bool)


def is_num(x: Any) -> bool:
  """A finite int or float (bool excluded)."""
  return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def is_sha256(x: Any) -> bool:
  """Whether `x` is a sha256 hex digest as vitprune writes them (64 lower-case hex digits)."""
  return isinstance(x, str) and len(x) == 64 and all(c in "0123456789abcdef" for c in x)


def is_share(x: Any, count: int) -> bool:
  """Whether `x` is k / count for an integer k, as a metric counted over `count` >= 1 images is
  (float64 division, exact through JSON)."""
  return is_num(x) and count >= 1 and float(x) == round(float(x) * count) / count


def require(cond: bool, where: str, msg: str, error: Type[ValueError] = FormatError) -> None:
  if not cond:
    raise error(f"{where}: {msg}")


def require_keys(doc: Dict[str, Any], keys: Sequence[str], where: str,
                 error: Type[ValueError] = FormatError) -> None:
  """Raises `error` naming every key of `keys` missing from `doc`."""
  missing = [k for k in keys if k not in doc]
  if missing:
    raise error(f"{where}: missing {'field' if len(missing) == 1 else 'fields'} "
                f"{', '.join(map(repr, missing))}")


def plain(value: Any) -> Any:
  """`json.dumps(default=...)`: a numpy scalar (np.int64 3, np.float32 0.5, np.bool_) as the
  Python number it holds; anything else a TypeError naming its type (as json's own)."""
  import numpy as np  # pylint: disable=g-import-not-at-top  (light callers stay light)
  if isinstance(value, np.generic) and value.dtype.kind in "biuf":
    return value.item()
  raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def check_storable(obj: Any, what: str) -> None:
  """ValueError naming the entry of `obj` (called `what`: 'meta', 'provenance') that a strict
  JSON file cannot hold (NaN or infinity, a set, a key that is no string, any other object;
  numpy scalars are numbers): a NaN in a deployment's provenance failed as json's anonymous
  "Out of range float values" when the manifest was written, after the export and every
  compile."""
  import numpy as np  # pylint: disable=g-import-not-at-top  (light callers stay light)

  def bad(x: Any, where: str) -> Optional[str]:
    if isinstance(x, np.generic) and x.dtype.kind in "biuf":
      x = x.item()
    if isinstance(x, float):
      return None if math.isfinite(x) else f"{where} is {x!r}"
    if x is None or isinstance(x, (bool, int, str)):
      return None
    if isinstance(x, dict):    # (keys: strings, as a file holds them; 3 beside 'a' failed the
      keys = [k for k in x if not isinstance(k, str)]            # sorted write, unnamed)
      return (f"{where} has a key {keys[0]!r} of type {type(keys[0]).__name__}, not a string"
              if keys else
              next(filter(None, (bad(v, f"{where}[{k!r}]") for k, v in x.items())), None))
    if isinstance(x, (list, tuple)):
      return next(filter(None, (bad(v, f"{where}[{i}]") for i, v in enumerate(x))), None)
    return f"{where} is a {type(x).__name__}"

  problem = bad(obj, what)
  if problem:
    raise ValueError(f"{problem}, which a JSON file cannot hold")


def json_form(obj: Any) -> Any:
  """`obj` as its JSON round trip gives it back: tuples as lists, numpy scalars as numbers
  (`plain`); TypeError for what JSON cannot hold."""
  return json.loads(json.dumps(obj, default=plain))


def canonical(obj: Any) -> bytes:
  """Canonical JSON bytes of `obj`: sorted keys, no whitespace, NaN/inf rejected, numpy
  scalars as the numbers they hold (`plain`)."""
  return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False,
                    default=plain).encode()


def canonical_sha256(obj: Any) -> str:
  """sha256 of `canonical(obj)`: the identity of a record, whatever file layout it was read
  from (indentation, key order)."""
  return hashlib.sha256(canonical(obj)).hexdigest()
