"""Static configuration: model architecture, preprocessing, and the registry of timm names.

Everything here is a frozen (hashable) dataclass so it can be a static argument of `jax.jit`.
"""
from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
from typing import Any, Dict, List, Optional, Tuple, Type

import numpy as np


# The compute dtypes vitprune builds graphs in (`vitprune.model.DTYPES` maps them to jnp types);
# profiles, manifests and benchmarks are checked against them.
COMPUTE_DTYPES = ("float32", "bfloat16")
# The matmul precisions of `vitprune.model.forward` (jax.lax.Precision names); estimate and
# artifact files are checked against them.
PRECISIONS = ("highest", "high", "default")
# The token-reduction methods (`vitprune.reduce.methods.METHODS` builds them; that module asserts
# the two agree); estimate and solution files are checked against them without importing jax.
METHOD_NAMES = ("evit", "pomt", "random", "tome", "topk")
# Each method's options (its reducer's dataclass fields) and their kinds; `reduce.methods` asserts
# they agree with the reducers, so records can check `method.kwargs` without importing jax.
METHOD_OPTIONS: Dict[str, Dict[str, str]] = {
    "evit": {"normalize": "bool"}, "pomt": {}, "random": {"seed": "int", "nested": "bool"},
    "tome": {}, "topk": {}}
_OPTION_KINDS = {"bool": (bool, np.bool_), "int": (int, np.integer),
                 "float": (int, float, np.integer, np.floating), "str": (str,)}


def real_number(value: Any) -> Optional[float]:
  """`value` as a float when it is one real number: Python's, a numpy scalar or a 0-d numpy or
  JAX array of an integer or float dtype (bfloat16 too), or another library's 0-d tensor whose
  `item()` is one of those; None otherwise (bools, strings, a 0-d
  array of strings: `np.array("0.5")` read as 0.5, and a JAX float, which is no
  `numbers.Real`, was refused where numpy's was taken). Reads the solver's alpha and metrics,
  ToMe's inflection and float schedule counts."""
  if isinstance(value, (bool, np.bool_, str, bytes)):
    return None
  if isinstance(value, numbers.Real):
    return float(value)
  dtype = getattr(value, "dtype", None)
  if getattr(value, "shape", None) != () or dtype is None:
    return None
  try:
    numeric = np.dtype(dtype).kind in "iu" or is_float_dtype(dtype)
  except TypeError:        # (another library's 0-d tensor, torch's: its item() is Python's)
    item = getattr(value, "item", None)
    return real_number(item()) if callable(item) else None
  return float(value) if numeric else None


def is_float_dtype(dtype: Any) -> bool:
  """Whether `dtype` is a real floating-point type: numpy's, or ml_dtypes' extended ones
  (bfloat16, float8_*) which numpy stores as kind 'V'. The one float check of images, parameter
  leaves and checkpoint values (jax-free, for the deployed-model and conversion paths too)."""
  import ml_dtypes   # pylint: disable=g-import-not-at-top  (a jax dependency; imported late)
  dt = np.dtype(dtype)
  if dt.kind == "f":
    return True
  if dt.kind != "V":
    return False
  try:
    ml_dtypes.finfo(dt)
  except ValueError:
    return False
  return True


def is_method_name(name: Any) -> bool:
  """Whether `name` names a token-reduction method (case and surrounding spaces ignored)."""
  return isinstance(name, str) and name.strip().lower() in METHOD_NAMES


def same_method(a: str, b: str) -> bool:
  """Whether two method names name one method, as the readers take them (case and surrounding
  spaces ignored: `is_method_name`)."""
  return a.strip().lower() == b.strip().lower()


def not_a_method(what: str, name: Any) -> str:
  """The readers' refusal of `name` in field `what` (when `is_method_name(name)` is false)."""
  return f"{what} {name!r} is not a token-reduction method ({', '.join(METHOD_NAMES)})"


def options_text(options: Optional[Dict[str, Any]]) -> str:
  """{option: value} -> 'nested=false,seed=3' (JSON values, sorted keys): the form a
  --method_opts flag takes (`experiments.common.parse_method_options` reads it back)."""
  return ",".join(f"{k}={json.dumps(v)}" for k, v in sorted((options or {}).items()))


def method_label(method: str, options: Optional[Dict[str, Any]] = None) -> str:
  """How output names a reducer: 'tome', or with options 'random(nested=false,seed=3)'
  (`options_text`), so two runs of one method with other options never print alike."""
  opts = options_text(options)
  return f"{method}({opts})" if opts else method


def record_option_defaults(method: str, version: int) -> Dict[str, Any]:
  """The options of `method` that an estimate or solution record of format `version` fixes
  without saying them: version 1 predates random drop's `nested` option, and its random drop
  drew each layer's own subset (nested=False)."""
  if version < 2 and str(method).strip().lower() == "random":
    return {"nested": False}
  return {}


def record_method_kwargs(method: str, kwargs: Optional[Dict[str, Any]],
                         version: int) -> Optional[Dict[str, Any]]:
  """The options a record of format `version` means by `kwargs`: those it fixes unsaid
  (`record_option_defaults`) under those it says; None (a solution's "not said") stays None."""
  if kwargs is None:
    return None
  return {**record_option_defaults(method, version), **kwargs}


def is_option_kind(value: Any, kind: str) -> bool:
  """Whether `value` fits the option kind 'bool' | 'int' | 'float' | 'str' (numpy scalars count;
  a bool is not a number here)."""
  if isinstance(value, (bool, np.bool_)) and kind != "bool":
    return False
  return isinstance(value, _OPTION_KINDS[kind])


def method_options_problem(name: str, kwargs: Dict[str, Any],
                           elsewhere: Optional[Dict[str, str]] = None) -> str:
  """Why `kwargs` are not options of method `name` ('' when they are): an option the method
  does not take, a value of the wrong kind ("False" from a command line is not False) or one
  the reducer refuses (a negative seed: a record carrying it failed only at deploy).
  `elsewhere`: options a command line sets by another flag ({'seed': '--seed'}), left out of
  the accepted ones it names (which listed 'seed', then refused it)."""
  elsewhere = elsewhere or {}
  options = METHOD_OPTIONS[name.strip().lower()]
  unknown = sorted(k for k in kwargs if k not in options)
  if unknown:
    here = sorted(k for k in options if k not in elsewhere)
    by_flag = "".join(f" ({k}: {flag})" for k, flag in sorted(elsewhere.items())
                      if k in options)
    return (f"method {name.strip().lower()!r} accepts {here or 'no options'}{by_flag}, "
            f"got {unknown}")
  for k, v in kwargs.items():
    if not is_option_kind(v, options[k]):
      return f"method {name.strip().lower()!r} option {k} must be {options[k]}, got {v!r}"
    if options[k] == "int" and v < 0:       # (the int options are seeds: the reducer refuses
      return (f"method {name.strip().lower()!r} option {k} must be a non-negative int, "  # < 0)
              f"got {v!r}")
  return ""


@dataclasses.dataclass(frozen=True)
class Preprocessing:
  """Eval-time preprocessing, as timm's `pretrained_cfg` defines it.

  Images are resized so the shorter side is `floor(input_size / crop_pct)` with `interpolation`,
  center-cropped to `input_size`, scaled to [0, 1] and normalised with `mean`/`std` per channel.
  """
  input_size: int = 224
  mean: Tuple[float, float, float] = (0.485, 0.456, 0.406)
  std: Tuple[float, float, float] = (0.229, 0.224, 0.225)
  crop_pct: float = 0.9
  interpolation: str = "bicubic"  # 'bicubic' | 'bilinear' | 'nearest'
  channels: int = 3

  def __post_init__(self):
    for f in ("mean", "std"):    # (lists left a ViTConfig unhashable: a jit static argument)
      if isinstance(getattr(self, f), list):
        object.__setattr__(self, f, tuple(getattr(self, f)))
    _check_preprocessing(self)   # (a NaN std normalised every image to NaN without a word)


# timm's `str_to_interp_mode` names (vitprune.data maps each to its PIL filter).
INTERPOLATIONS = ("bicubic", "bilinear", "nearest", "lanczos", "box", "hamming")
_FLOAT32_MAX, _FLOAT32_TINY = float(np.finfo(np.float32).max), float(np.finfo(np.float32).tiny)


def _is_real(x: Any) -> bool:
  return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def _check_preprocessing(prep: Preprocessing) -> None:
  """ValueError naming the first impossible field of `prep` (`preprocessing.<field> ...`)."""
  if isinstance(prep.input_size, bool) or not isinstance(prep.input_size, int) or (
      prep.input_size < 1):
    raise ValueError(f"preprocessing.input_size must be a positive integer, got "
                     f"{prep.input_size!r}")
  if prep.channels not in (1, 3) or isinstance(prep.channels, bool):
    raise ValueError(f"preprocessing.channels must be 1 or 3, got {prep.channels!r}")
  for f in ("mean", "std"):
    v = getattr(prep, f)
    if not isinstance(v, (tuple, list)) or not all(
        _is_real(x) and math.isfinite(x) and abs(x) <= _FLOAT32_MAX for x in v) or (
            f == "std" and not all(x >= _FLOAT32_TINY for x in v)):   # (applied in float32)
      raise ValueError(f"preprocessing.{f} must be finite numbers"
                       f"{' > 0' if f == 'std' else ''}, got {v!r}")
    if len(v) not in (1, prep.channels):
      raise ValueError(f"preprocessing.{f} has {len(v)} values but channels={prep.channels}")
    if any(x > 1 for x in v):      # (mmcv's 123.675 / 58.395: every pixel near -2)
      raise ValueError(f"preprocessing.{f} {tuple(v)!r} is in 0-255 pixel units; pixels are "
                       "scaled to [0, 1] first, as timm's are: divide it by 255")
  if not (_is_real(prep.crop_pct) and math.isfinite(prep.crop_pct) and prep.crop_pct > 0):
    raise ValueError(f"preprocessing.crop_pct must be a finite number > 0, got "
                     f"{prep.crop_pct!r}")
  if prep.interpolation not in INTERPOLATIONS:
    raise ValueError(f"preprocessing.interpolation {prep.interpolation!r} is unknown; expected "
                     f"one of {', '.join(INTERPOLATIONS)}")


def _check_name_and_switches(cfg: "ViTConfig") -> None:
  """ValueError unless `name` is a non-empty str and the on/off fields are bools."""
  if not isinstance(cfg.name, str) or not cfg.name:
    raise ValueError(f"config.name must be a non-empty str, got {cfg.name!r}")
  for f in ("class_token", "dist_token", "no_embed_class", "layerscale"):
    if not isinstance(getattr(cfg, f), bool):
      raise ValueError(f"{cfg.name}: {f} must be true or false, got {getattr(cfg, f)!r}")


@dataclasses.dataclass(frozen=True)
class ViTConfig:
  """Architecture of one timm-compatible Vision Transformer.

  Token layout inside the model: `[cls?, dist?, reg * num_reg_tokens, patches...]`; the leading
  `num_prefix_tokens` are never removed by token reduction.
  """
  name: str
  img_size: int = 224
  patch_size: int = 16
  in_chans: int = 3
  embed_dim: int = 768
  depth: int = 12
  num_heads: int = 12
  mlp_hidden: int = 3072        # fc1 output width (for SwiGLU: both halves together)
  mlp_type: str = "gelu"        # 'gelu' (fc1 -> exact GELU -> fc2) | 'swiglu' (timm SwiGLUPacked)
  num_classes: int = 1000       # 0: no head, the forward returns pooled features
  class_token: bool = True
  dist_token: bool = False      # DeiT-distilled: second head on the dist token, heads averaged
  num_reg_tokens: int = 0       # DINOv2 registers
  no_embed_class: bool = False  # True: pos_embed covers patches only (add, then concat prefix)
  layerscale: bool = False      # LayerScale gammas after attention and MLP (DeiT-3, DINOv2)
  global_pool: str = "token"    # 'token' (first token) | 'avg' (mean of patch tokens, fc_norm)
  norm_eps: float = 1e-6
  preprocessing: Preprocessing = Preprocessing()

  def __post_init__(self):
    _check_name_and_switches(self)      # ('False' switched LayerScale on: a string is truthy)
    _check_sizes(self)         # before dividing by them (patch_size 0 was a ZeroDivisionError)
    if self.img_size % self.patch_size:
      raise ValueError(f"{self.name}: img_size {self.img_size} is not a multiple of "
                       f"patch_size {self.patch_size}")
    if self.embed_dim % self.num_heads:
      raise ValueError(f"{self.name}: embed_dim {self.embed_dim} is not divisible by "
                       f"num_heads {self.num_heads}")
    if self.mlp_type not in ("gelu", "swiglu"):
      raise ValueError(f"{self.name}: unknown mlp_type {self.mlp_type!r}")
    if self.mlp_type == "swiglu" and self.mlp_hidden % 2:
      raise ValueError(f"{self.name}: swiglu mlp_hidden must be even, got {self.mlp_hidden}")
    if self.global_pool not in ("token", "avg"):
      raise ValueError(f"{self.name}: unknown global_pool {self.global_pool!r}")
    if self.global_pool == "token" and not self.class_token:
      raise ValueError(f"{self.name}: global_pool='token' needs a class token")
    if self.dist_token and not self.class_token:
      raise ValueError(f"{self.name}: a distillation token needs a class token")
    if self.dist_token and (self.global_pool != "token" or self.num_reg_tokens):
      raise ValueError(f"{self.name}: a distillation token needs global_pool='token' and no "
                       f"register tokens (timm's distilled DeiT), got global_pool="
                       f"{self.global_pool!r}, {self.num_reg_tokens} register tokens")
    _check_norm_eps(self)      # (a hand-built -1.0 gave NaN logits: `forward` checks types only)

  @property
  def grid_size(self) -> int:
    return self.img_size // self.patch_size

  @property
  def num_patches(self) -> int:
    return self.grid_size ** 2

  @property
  def num_prefix_tokens(self) -> int:
    return int(self.class_token) + int(self.dist_token) + self.num_reg_tokens

  @property
  def num_tokens(self) -> int:
    """Tokens entering block 0 without reduction: prefix + patches."""
    return self.num_prefix_tokens + self.num_patches

  @property
  def head_dim(self) -> int:
    return self.embed_dim // self.num_heads

  @property
  def pos_embed_len(self) -> int:
    return self.num_patches + (0 if self.no_embed_class else self.num_prefix_tokens)

  @property
  def use_fc_norm(self) -> bool:
    return self.global_pool == "avg"

  def replace(self, **changes) -> "ViTConfig":
    """A copy with `changes` applied (validated again)."""
    size = changes.get("img_size")
    if (isinstance(size, int) and not isinstance(size, bool) and size >= 1
        and "preprocessing" not in changes):   # (else __post_init__ names the bad img_size)
      changes["preprocessing"] = dataclasses.replace(self.preprocessing,
                                                     input_size=changes["img_size"])
    return dataclasses.replace(self, **changes)


def check_switch(name: str, value: Any, *, optional: bool = False) -> None:
  """TypeError unless `value` is True or False (or None where `optional`): a string is truthy,
  so overwrite='no' replaced an existing output and pre_logits='no' returned features."""
  if not (isinstance(value, (bool, np.bool_)) or (optional and value is None)):
    raise TypeError(f"{name} must be True or False, got {value!r}")


def check_path(name: str, value: Any) -> str:
  """`value` as a non-empty str path (os.fspath), else TypeError / ValueError naming `name`:
  None failed as "expected str, bytes or os.PathLike object", and '' read the working
  directory (an image folder of whatever it held)."""
  if not isinstance(value, (str, os.PathLike)):
    raise TypeError(f"{name} must be a path (str or os.PathLike), got "
                    f"{type(value).__name__} {' '.join(repr(value).split())[:60]}")
  text = os.fspath(value)
  if not isinstance(text, str):
    raise TypeError(f"{name} must be a path as str, got bytes {text[:60]!r}")
  if not text:
    raise ValueError(f"{name} is empty")
  return text


def check_config_type(cfg: Any) -> ViTConfig:
  """`cfg` when it is a `ViTConfig`, else TypeError naming what it is (a model name or a dict
  failed deep inside with "'str' object has no attribute 'img_size'")."""
  if not isinstance(cfg, ViTConfig):
    raise TypeError(f"cfg must be a vitprune ViTConfig (vitprune.load_weights(path)[0] or "
                    f"vitprune.registry.get_config(name)), got {type(cfg).__name__} "
                    f"{' '.join(repr(cfg).split())[:60]}")
  return cfg


def config_to_dict(cfg: ViTConfig) -> Dict[str, Any]:
  """The JSON form of `cfg`: every field, preprocessing as a nested dict, tuples as lists."""
  d = dataclasses.asdict(cfg)
  d["preprocessing"] = {k: list(v) if isinstance(v, tuple) else v
                        for k, v in d["preprocessing"].items()}
  return d


def config_differences(a: Dict[str, Any], b: Dict[str, Any]) -> List[str]:
  """The fields in which two configs in JSON form (`config_to_dict`, or as a record holds one)
  differ, sorted, a nested one by its path ('preprocessing.crop_pct'); a field only one of them
  has differs. The one home of the comparison every "configs differ" message names fields by."""
  out = []
  for k in sorted(set(a) | set(b), key=str):
    x, y = a.get(k), b.get(k)
    if x != y:
      nested = isinstance(x, dict) and isinstance(y, dict)
      out += [f"{k}.{n}" for n in config_differences(x, y)] if nested else [str(k)]
  return out


def config_field(d: Dict[str, Any], path: str) -> Any:
  """The value at a `config_differences` path in a config's JSON form (None where it lacks it)."""
  for key in path.split("."):
    d = d.get(key) if isinstance(d, dict) else None
  return d


def configs_shown(name_a: str, a: Dict[str, Any], name_b: str, b: Dict[str, Any],
                  keys: Optional[List[str]] = None) -> Tuple[str, str]:
  """Two configs in JSON form as their model names with the fields that differ, each with its
  own value: ('vit_digits (depth 6)', 'vit_digits (depth 7)') (the names alone read 'vit_digits'
  vs 'vit_digits'); `keys`: those fields (default: `config_differences`)."""
  keys = config_differences(a, b) if keys is None else keys
  shown = lambda name, c: f"{name} ({', '.join(f'{k} {config_field(c, k)!r}' for k in keys)})"
  return shown(name_a, a), shown(name_b, b)


def config_from_dict(d: Dict[str, Any]) -> ViTConfig:
  """Inverse of `config_to_dict`; raises ValueError on unknown or missing fields (field types
  and ranges: `check_config`, `check_config_types`)."""
  if not isinstance(d, dict):
    raise ValueError(f"config must be an object, got {type(d).__name__}")
  d = dict(d)
  known = {f.name for f in dataclasses.fields(ViTConfig)}
  unknown = sorted(set(d) - known)
  if unknown:
    raise ValueError(f"config has unknown fields {unknown}")
  # Every field: config_to_dict writes them all (each existed from the first record), and a
  # missing one silently took its default (a profile without depth became a 12-block model).
  missing = [f.name for f in dataclasses.fields(ViTConfig) if f.name not in d]
  if missing:
    raise ValueError(f"config is missing fields {missing}")
  prep = d.pop("preprocessing")
  if not isinstance(prep, dict):
    raise ValueError("invalid config: preprocessing must be an object")
  prep = dict(prep)
  missing = [f.name for f in dataclasses.fields(Preprocessing) if f.name not in prep]
  if missing:
    raise ValueError(f"config is missing fields {['preprocessing.' + k for k in missing]}")
  for k in ("mean", "std"):
    if not isinstance(prep[k], (list, tuple)):
      raise ValueError(f"invalid preprocessing: {k} must be a list, got {prep[k]!r}")
    prep[k] = tuple(prep[k])
  try:
    d["preprocessing"] = Preprocessing(**prep)
  except (TypeError, ValueError) as e:
    name = f" of {d['name']}" if isinstance(d.get("name"), str) else ""
    raise ValueError(f"invalid preprocessing{name}: {e}") from None
  try:
    return ViTConfig(**d)
  except TypeError as e:
    raise ValueError(f"invalid config: {e}") from None


_POSITIVE_INTS = ("img_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads",
                  "mlp_hidden")
_NON_NEGATIVE_INTS = ("num_classes", "num_reg_tokens")


MAX_SIZE = 2**31 - 1      # any size field (a depth of 2**63 overflowed in numpy, not here)


def _check_sizes(cfg: ViTConfig) -> None:
  for f in _POSITIVE_INTS + _NON_NEGATIVE_INTS:
    v = getattr(cfg, f)
    if isinstance(v, bool) or not isinstance(v, int) or v < (1 if f in _POSITIVE_INTS else 0):
      kind = "a positive" if f in _POSITIVE_INTS else "a non-negative"
      raise ValueError(f"{cfg.name}: {f} must be {kind} integer, got {v!r}")
    if v > MAX_SIZE:
      raise ValueError(f"{cfg.name}: {f} must be at most {MAX_SIZE}, got {v!r}")


def _check_norm_eps(cfg: ViTConfig) -> None:
  eps = cfg.norm_eps
  if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (
      math.isfinite(eps) and eps > 0):
    raise ValueError(f"{cfg.name}: norm_eps must be a finite number > 0, got {eps!r}")


def check_config(cfg: ViTConfig) -> ViTConfig:
  """Raises ValueError on impossible sizes or wrongly typed fields (e.g. img_size=-32), TypeError
  when `cfg` is not a ViTConfig (`check_config_type`)."""
  check_config_type(cfg)
  _check_name_and_switches(cfg)
  _check_sizes(cfg)
  _check_norm_eps(cfg)
  try:                # (built in Python it was checked; this names the model, e.g. for JSON)
    _check_preprocessing(cfg.preprocessing)
  except ValueError as e:
    raise ValueError(f"{cfg.name}: {e}") from None
  if cfg.preprocessing.crop_pct > 1:      # timm's eval crops never pad
    raise ValueError(f"{cfg.name}: preprocessing.crop_pct must be in (0, 1], got "
                     f"{cfg.preprocessing.crop_pct!r}")
  prep = cfg.preprocessing     # (images were made for another input than the model's: a shape
  for field, model_field in (("input_size", "img_size"), ("channels", "in_chans")):   # error
    if getattr(prep, field) != getattr(cfg, model_field):                            # deep in jit)
      raise ValueError(f"{cfg.name}: preprocessing.{field} {getattr(prep, field)!r} differs "
                       f"from {model_field} {getattr(cfg, model_field)!r}: the images it makes "
                       "would not fit the model")
  return cfg


def check_config_types(cfg: ViTConfig, where: str, error: Type[ValueError] = ValueError,
                       key: str = "model.config") -> None:
  """A config read from JSON has no types: each scalar field must have its default's type
  (`error` naming `where` and `<key>.<field>` otherwise; `name`, which has no default, is
  checked by the ViTConfig itself)."""
  for f in dataclasses.fields(ViTConfig):
    default, value = f.default, getattr(cfg, f.name)
    if isinstance(default, bool):
      ok = isinstance(value, bool)
    elif isinstance(default, int):
      ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
      ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))
    elif isinstance(default, str):
      ok = isinstance(value, str)
    else:
      continue
    if not ok:
      raise error(f"{where}: {key}.{f.name} must be {type(default).__name__}, got {value!r}")
  try:
    check_config(cfg)
  except ValueError as e:
    raise error(f"{where}: {key}: {e}") from None
