"""timm checkpoints -> vitprune parameter trees (and weights directories).

    sd, fmt = load_checkpoint("deit_small.safetensors")   # {timm name: np.ndarray}
    params = convert_state_dict(cfg, sd)                  # tree of `vitprune.model.param_shapes`
    convert_checkpoint("deit_small_patch16_224", "deit_small.safetensors", "weights/deit_small")

Name mapping (timm -> ours; Linear weights [out, in] become kernels [in, out]):
  patch_embed.proj.weight [C, Cin, P, P] -> patch_embed/kernel [P, P, Cin, C] (HWIO)
  blocks.i.{norm1,norm2}.weight/bias     -> blocks[i]/{norm1,norm2}/scale/bias
  blocks.i.attn.{qkv,proj}, blocks.i.mlp.{fc1,fc2} -> .../kernel, bias
  blocks.i.{ls1,ls2}.gamma, cls_token, dist_token, reg_token, pos_embed -> same names
  norm | fc_norm, head, head_dist        -> same names
Also accepted, renamed like timm's `checkpoint_filter_fn`: original DeiT-3 `blocks.i.gamma_1/2`,
original DINOv2 (`register_tokens`, `mlp.w12/w3`; its `mask_token` must be ignored explicitly),
and AugReg/big_vision `.npz` names (mapped like timm's `_load_weights`).

Strict: every checkpoint key is consumed and every parameter filled, otherwise a
`ConversionError` holds all missing keys, unexpected keys and shape mismatches at once (its
message: the first 8 of each, after the sizes where the checkpoint is a model of another). Keys that
are legitimately unused are only dropped on request (`drop_head=True`, `ignore_keys=(...)`).
"""
from __future__ import annotations

import datetime
import fnmatch
import math
import os
import re
import tokenize
import zipfile
import zlib
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from safetensors import SafetensorError
from safetensors.flax import load_file as load_safetensors_jax
from safetensors.numpy import load_file as load_safetensors_numpy

from vitprune import atomic
from vitprune import jsonio
from vitprune import orbax_io
from vitprune.checkpoint import check_config, is_weights_dir, save_weights
from vitprune.config import ViTConfig, check_path, is_float_dtype
from vitprune.digest import file_sha256
from vitprune.model import Params, check_params, jitted_forward, param_shapes
from vitprune.posembed import resample_abs_pos_embed

StateDict = Dict[str, np.ndarray]
EXTENSIONS = {".safetensors": "safetensors", ".pth": "torch", ".pt": "torch", ".bin": "torch",
              ".npz": "npz"}
HEAD_KEYS = ("head.*", "head_dist.*")
# Resampling used when the checkpoint's patch grid differs from the config's (like timm).
TIMM_RESAMPLE = ("bicubic", True)        # checkpoint_filter_fn
BIG_VISION_RESAMPLE = ("bilinear", False)  # _load_weights


class ConversionError(ValueError):
  """The checkpoint does not fit the config: holds every missing/unexpected/mismatched key (its
  message names the first 8 of each)."""

  def __init__(self, name: str, missing=(), unexpected=(), mismatched=(),
               features_only: bool = False, sizes: Optional[Tuple[Tuple[int, int],
                                                                  Tuple[int, int]]] = None):
    """sizes: ((depth, width) the checkpoint holds, (depth, width) of `name`), named when they
    differ (every key listed then is a symptom of that one cause)."""
    self.missing, self.unexpected, self.mismatched = list(missing), list(unexpected), list(
        mismatched)
    lines = [f"checkpoint does not match {name}:"]
    if sizes is not None and sizes[0] != sizes[1]:      # the cause first (one line in a CLI)
      (depth, width), (want_depth, want_width) = sizes
      lines.append(f"  (the checkpoint holds a ViT of depth {depth}, width {width}; {name} has "
                   f"depth {want_depth}, width {want_width}: convert it for a model of its "
                   "size, unless the file is cut short)")
    # The kinds that occur, ';' between them (a CLI's one line ran 'and 24 more unexpected keys
    # (1): ['foo'] shape mismatches (0): []' together)
    kinds = [(f"missing keys ({len(self.missing)}): {_first(self.missing)}", self.missing),
             (f"unexpected keys ({len(self.unexpected)}): {_first(self.unexpected)}",
              self.unexpected),
             (f"shape mismatches ({len(self.mismatched)}): " + _first(
                 [f"{k}: expected {e}, got {g}" for k, e, g in self.mismatched]), self.mismatched)]
    kinds = [text for text, keys in kinds if keys]
    lines += [f"  {text}" + (";" if i < len(kinds) - 1 else "") for i, text in enumerate(kinds)]
    if "dist_token" in self.unexpected:     # (the head hint below could not help)
      lines.append("  (a distilled checkpoint: convert it for the *_distilled_* model)")
    elif "dist_token" in self.missing:
      lines.append("  (the model is distilled, the checkpoint is not: pick the model without "
                   "_distilled_)")
    elif features_only and any(k.startswith(("head.", "head_dist.")) for k in self.unexpected):
      lines.append("  (a features-only config with num_classes=0 drops the checkpoint's head "
                   "only with drop_head=True / --drop_head)")
    if "mask_token" in self.unexpected:        # (DINOv2's: dropped only when asked, as said)
      lines.append("  (mask_token is DINOv2's masked-training token, unused by the forward: "
                   "drop it with ignore_keys=('mask_token',) / --ignore_keys=mask_token)")
    prefixes = {k.split(".", 1)[0] + "." for k in self.unexpected if "." in k}
    prefix = next(iter(prefixes)) if len(prefixes) == 1 else None
    # (stripped, they fit; nothing missing: keys the model lacks, not a wrapper's prefix)
    if prefix and self.missing and all(k.startswith(prefix) for k in self.unexpected) and set(
        self.missing) <= {k[len(prefix):] for k in self.unexpected}:
      lines.append(f"  (every unexpected key starts with {prefix!r}: a wrapped state dict? "
                   "strip that prefix)")
    super().__init__("\n".join(lines))


def _first(items: List[Any], shown: int = 8) -> str:
  """`items` as a list, cut to the first `shown` ('... and N more'): a depth-12 model's keys
  against a depth-2 checkpoint made a 5 KB message (all of them stay on the error)."""
  if len(items) <= shown:
    return str(items)
  return f"{items[:shown]} and {len(items) - shown} more"


def state_dict_size(sd: Mapping[str, Any]) -> Optional[Tuple[int, int]]:
  """(depth, width) of the ViT a timm-named state dict holds: its `blocks.<i>.` indices and
  its cls token's (else patch embedding's) width; None when it names neither."""
  blocks = [int(m.group(1)) for k in sd for m in [re.match(r"blocks\.(\d+)\.", k)] if m]
  for key, axis in (("cls_token", -1), ("patch_embed.proj.weight", 0)):
    if key in sd and np.ndim(sd[key]) >= 1 and blocks:
      return max(blocks) + 1, int(np.shape(sd[key])[axis])
  return None


# ----------------------------------------------------------------------------- file loading


def _to_numpy_dict(sd: Dict[str, Any], path: str) -> StateDict:
  bad = sorted(k for k, v in sd.items() if not hasattr(v, "shape"))
  if bad:
    raise ValueError(f"{path}: entries {bad[:10]} are not arrays; not a state dict")
  return {k: np.asarray(v) for k, v in sd.items()}


def _load_safetensors(path: str) -> StateDict:
  try:
    return load_safetensors_numpy(path)
  except (SafetensorError, OSError, ValueError, TypeError, AttributeError) as e:
    if "bf16" in str(e).lower() or "bfloat16" in str(e).lower():  # numpy has no bfloat16
      try:     # (a damaged header's error lists BF16 among the dtypes it knows: refused here)
        return {k: np.asarray(v.astype(jnp.float32))
                for k, v in load_safetensors_jax(path).items()}
      except (SafetensorError, OSError, ValueError, TypeError, AttributeError) as e2:
        e = e2
    if isinstance(e, AttributeError) and "float8" in str(e):   # nor do safetensors' loaders
      raise ValueError(f"{path}: holds float8 tensors, which safetensors cannot load into "
                       "numpy or jax; dequantise them (float16, bfloat16 or float32) "
                       "first") from None
    raise ValueError(f"{path}: not a valid .safetensors file ({type(e).__name__}: {e})") from None


def unwrap_torch_state_dict(obj: Any, path: str = "<state dict>") -> Dict[str, Any]:
  """Unwraps a training checkpoint as timm's `load_checkpoint` does (its default `use_ema=True`):
  the EMA weights `state_dict_ema` / `model_ema` where it holds them (they were dropped for
  `model`), else `state_dict` / `model`; strips the `module.` / `_orig_mod.` key prefixes."""
  if not isinstance(obj, dict):
    raise ValueError(f"{path}: expected a dict state dict, got {type(obj).__name__}")
  for _ in range(2):                  # ({'model': {'state_dict': sd}} too)
    wrapper = next((w for w in ("state_dict_ema", "model_ema", "state_dict", "model")
                    if isinstance(obj.get(w), dict)), None)
    if wrapper is None:
      break
    obj = obj[wrapper]
  return _without_wrapper_prefixes(obj, path)


def _without_wrapper_prefixes(sd: Dict[str, Any], path: str = "<state dict>"
                              ) -> Dict[str, Any]:
  """`sd` with each key's wrapper prefixes stripped as timm's `clean_state_dict` does: `module.`
  (DataParallel / DDP, swa_utils.AveragedModel) then `_orig_mod.` (torch.compile); ValueError
  when two keys then collide."""
  out = {}
  for k, v in sd.items():
    name = _unwrapped(k)
    if name in out:
      raise ValueError(f"{path}: checkpoint keys collide once their wrapper prefix is "
                       f"stripped: {k!r} and another give {name!r}")
    out[name] = v
  return out


def _unwrapped(name: str) -> str:
  """`name` without its wrapper prefixes: `module.` then `_orig_mod.`."""
  name = name[len("module."):] if name.startswith("module.") else name
  return name[len("_orig_mod."):] if name.startswith("_orig_mod.") else name


def _load_torch(path: str) -> StateDict:
  try:
    import torch  # pylint: disable=g-import-not-at-top  (optional: .pth files only)
  except ImportError:
    raise ImportError(f"reading {path} needs PyTorch (torch), which is not installed in this "
                      "environment; install torch, or convert the file to .safetensors "
                      "(safetensors.torch.save_file) elsewhere") from None
  try:
    obj = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # torch raises many types for corrupt files
    raise ValueError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})"
                     ) from None
  sd = unwrap_torch_state_dict(obj, path)
  out = {}
  for k, v in sd.items():
    if not isinstance(v, torch.Tensor):
      raise ValueError(f"{path}: entry {k!r} is a {type(v).__name__}, not a tensor")
    out[k] = v.detach().to(torch.float32).cpu().numpy() if v.is_floating_point() else v.numpy()
  return out


# What zipfile and numpy raise for a damaged .npz: besides BadZipFile, a flipped bit gave zlib's
# error (a deflate stream), NotImplementedError (a compression method), RuntimeError (the
# 'encrypted' flag) and tokenize's TokenError / SyntaxError (an .npy header), each a traceback.
NPZ_ERRORS = (zipfile.BadZipFile, ValueError, OSError, EOFError, zlib.error,
              NotImplementedError, RuntimeError, SyntaxError, tokenize.TokenError)


def _error_name(e: BaseException) -> str:
  """`e`'s class by name, with its module where the name alone says nothing (zlib's 'error')."""
  name = type(e).__name__
  return f"{type(e).__module__}.{name}" if name == "error" else name


def _load_npz(path: str) -> StateDict:
  try:
    with open(path, "rb") as f:
      head = f.read(9)
  except OSError as e:
    raise ValueError(f"{path}: cannot be read ({e.strerror or e})") from None
  # Neither a zip archive nor one .npy array (below): numpy advised allow_pickle for a file of
  # another kind, e.g. a .safetensors file named .npz.
  if not head.startswith((b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY")):
    looks = (" (it looks like a .safetensors file: name it so)" if len(head) == 9 and
             head[8:9] == b"{" else "")
    raise ValueError(f"{path}: not a valid .npz file (no zip archive header){looks}")
  try:
    z = np.load(path, allow_pickle=False)
  except NPZ_ERRORS as e:
    raise ValueError(f"{path}: not a valid .npz file ({_error_name(e)}: {e})") from None
  if not isinstance(z, np.lib.npyio.NpzFile):     # a single array (.npy) named .npz
    raise ValueError(f"{path}: not a valid .npz file (it holds one {type(z).__name__}, not an "
                     "archive of named arrays)")
  # A zip may hold two members of one name ('w.npy' twice, or 'w' beside 'w.npy'): numpy read
  # one of them and the other was dropped in silence (a negated head converted, exit 0).
  dup = sorted({k for k in z.files if z.files.count(k) > 1})
  if dup:
    z.close()
    raise ValueError(f"{path}: not a valid .npz file (it holds more than one array named "
                     f"{_first(dup, 5)}: which one is meant cannot be told)")
  key = None
  try:
    with z:
      out = {}
      for key in z.files:
        out[key] = z[key]
      return out
  except NPZ_ERRORS as e:
    raise ValueError(f"{path}: not a valid .npz file ({_error_name(e)}: {e})") from None
  except MemoryError as e:       # a header declaring a huge array: numpy's line named neither
    raise MemoryError(f"{path}: entry {key!r} does not fit in memory "
                      f"({str(e) or 'MemoryError'})") from None


def check_checkpoint_path(path: str) -> str:
  """The format family of `path` by its extension ('safetensors', 'torch', 'npz'), after
  checking that it is a regular file: IsADirectoryError / FileNotFoundError / OSError /
  ValueError naming it (before any other work: a user told that the output exists added
  --overwrite, only to learn then that the checkpoint was missing)."""
  check_path("the checkpoint path", path)
  if os.path.isdir(path):     # e.g. a HF snapshot folder: the file inside it is meant
    raise IsADirectoryError(f"{path} is a directory, not a checkpoint file; pass the file "
                            f"itself ({', '.join(sorted(EXTENSIONS))})")
  why = jsonio.why_not_a_file(path)
  if why == "does not exist":
    raise FileNotFoundError(f"checkpoint file not found: {path}")
  if why:                                    # a FIFO was 'not found'
    raise OSError(f"checkpoint {path} {why}")
  ext = os.path.splitext(path)[1].lower()
  if ext not in EXTENSIONS:
    raise ValueError(f"{path}: unsupported checkpoint extension {ext!r}; expected one of "
                     f"{sorted(EXTENSIONS)}")
  return EXTENSIONS[ext]


def load_checkpoint(path: str, *, num_heads: Optional[int] = None) -> Tuple[StateDict, str]:
  """(state dict {name: np.ndarray}, format) from a checkpoint file.

  Formats: 'safetensors', 'torch' (.pth/.pt/.bin; needs torch), 'big_vision' (.npz with AugReg /
  big_vision names, returned already mapped to timm names), 'npz' (.npz with timm names); the
  `module.` / `_orig_mod.` key prefixes of wrapped models are stripped, whatever the format.
  num_heads: the config's; a big_vision npz with another number of heads is refused (the other
  formats flatten the heads: they cannot say).
  Raises IsADirectoryError / FileNotFoundError / ValueError / ImportError naming the file.
  """
  kind = check_checkpoint_path(path)
  if kind == "safetensors":     # (a `module.` prefix was stripped on the torch path only)
    return (_without_wrapper_prefixes(_to_numpy_dict(_load_safetensors(path), path), path),
            "safetensors")
  if kind == "torch":
    return _load_torch(path), "torch"
  raw = _without_wrapper_prefixes(_load_npz(path), path)
  if big_vision_prefix(raw) is not None:
    try:
      return big_vision_to_timm(raw, num_heads=num_heads), "big_vision"
    except ValueError as e:
      raise ValueError(f"{path}: {e}") from None
  if "patch_embed.proj.weight" in raw:
    return raw, "npz"
  raise ValueError(f"{path}: .npz has neither big_vision names ('embedding/kernel') nor timm "
                   f"names ('patch_embed.proj.weight'); first keys: {sorted(raw)[:5]}")


# ----------------------------------------------------------------------------- big_vision npz


def big_vision_prefix(w: StateDict) -> Optional[str]:
  """The weight prefix of an AugReg/big_vision npz (as timm's `_load_weights`), None if not one."""
  for prefix in ("", "opt/target/", "params/", "params/img/"):
    if f"{prefix}embedding/kernel" in w:
      return prefix
  return None


def _concatenate(parts: Dict[str, np.ndarray], fn: Callable[[np.ndarray], np.ndarray],
                 dst: str) -> np.ndarray:
  """np.concatenate of `fn` of each of `parts` ({npz key: array}); ValueError naming the keys
  and shapes where they do not fit together."""
  try:
    return np.concatenate([fn(v) for v in parts.values()])
  except (ValueError, IndexError) as e:
    shapes = ", ".join(f"{k!r} {v.shape}" for k, v in parts.items())
    raise ValueError(f"{shapes} cannot be concatenated into {dst!r} "
                     f"({type(e).__name__}: {e})") from None


def _check_heads(kernels: Dict[str, np.ndarray], num_heads: int, axis: int,
                 block: Optional[int]) -> None:
  """ValueError when an attention kernel of a big_vision npz (query/key/value [C, H, D], out
  [H, D, C]; `block`: its index along a scanned layout's depth axis) has 3 axes and not
  `num_heads` heads on `axis`."""
  for k, v in kernels.items():
    if v.ndim == 3 and v.shape[axis] != num_heads:
      where = "" if block is None else f" (block {block} of its depth axis)"
      raise ValueError(f"{k!r}{where} has shape {v.shape}: {v.shape[axis]} attention heads, "
                       f"but the config has num_heads={num_heads} (the npz keeps the heads apart; "
                       "converted, the weights would compute other outputs)")


def big_vision_to_timm(w: StateDict, *, num_heads: Optional[int] = None) -> StateDict:
  """Maps AugReg / big_vision npz names to timm state-dict names, like timm's `_load_weights`.

  The npz keeps the attention heads as an axis (query/key/value kernels [C, H, D], out [H, D, C])
  that timm's layout flattens: given `num_heads`, a kernel with another H is refused (converted,
  it loaded into the config and computed other outputs without a word).

  Keys outside the weight prefix (e.g. optimizer state next to `opt/target/`) are not weights and
  are skipped; keys under the prefix that have no mapping are passed through under their npz
  name, so `convert_state_dict` reports them as unexpected.
  """
  prefix = big_vision_prefix(w)
  if prefix is None:
    raise ValueError("not a big_vision checkpoint: no 'embedding/kernel'")
  w = {k[len(prefix):]: v for k, v in w.items() if k.startswith(prefix)}
  big_vision = (prefix.startswith("params/") or "pos_embedding" in w
                or "Transformer/encoderblock/LayerNorm_0/scale" in w)
  used = set()
  out: StateDict = {}

  def take(k, idx=None):
    used.add(k)
    v = np.asarray(w[k])
    if idx is not None and (v.ndim == 0 or v.shape[0] != depth):
      raise ValueError(f"{k!r} has shape {v.shape}, not one entry per block of the scanned "
                       f"depth {depth}")
    return v[idx] if idx is not None else v

  def put(dst, src, fn=lambda v: v, idx=None):
    if src in w:
      v = take(src, idx)
      try:
        out[dst] = fn(v)
      except (ValueError, IndexError) as e:   # a transpose/reshape of the wrong rank
        raise ValueError(f"{src!r} has shape {v.shape}, which cannot be {dst!r} "
                         f"({type(e).__name__}: {e})") from None

  put("patch_embed.proj.weight", "embedding/kernel", lambda v: v.transpose(3, 2, 0, 1))
  put("patch_embed.proj.bias", "embedding/bias")
  put("cls_token", "cls")
  put("pos_embed", "pos_embedding" if big_vision else "Transformer/posembed_input/pos_embedding")
  put("norm.weight", "Transformer/encoder_norm/scale")
  put("norm.bias", "Transformer/encoder_norm/bias")
  put("head.weight", "head/kernel", lambda v: v.T)
  put("head.bias", "head/bias")
  if "pos_embed" in out and out["pos_embed"].ndim == 2:
    out["pos_embed"] = out["pos_embed"][None]

  mha, mlp_sub, ln2 = (0, 0, 1) if big_vision else (1, 3, 2)
  scanned = "Transformer/encoderblock/LayerNorm_0/scale" in w
  if scanned:
    scale = np.shape(w["Transformer/encoderblock/LayerNorm_0/scale"])
    if len(scale) != 2:
      raise ValueError(f"'Transformer/encoderblock/LayerNorm_0/scale' has shape {scale}, not "
                       "[depth, C] of a scanned encoder")
    depth = scale[0]
  else:
    depth = len({m.group(1) for k in w
                 for m in [re.match(r"Transformer/encoderblock_(\d+)/", k)] if m})
  for i in range(depth):
    bp, idx = (("Transformer/encoderblock/", i) if scanned
               else (f"Transformer/encoderblock_{i}/", None))
    mp = f"{bp}MultiHeadDotProductAttention_{mha}/"
    t = f"blocks.{i}."
    put(t + "norm1.weight", bp + "LayerNorm_0/scale", idx=idx)
    put(t + "norm1.bias", bp + "LayerNorm_0/bias", idx=idx)
    qkv = [mp + f"{n}/kernel" for n in ("query", "key", "value")]
    if all(k in w for k in qkv):  # [C, H, D] each -> [3 * H * D, C]
      kernels = {k: take(k, idx) for k in qkv}
      if num_heads is not None:
        _check_heads(kernels, num_heads, axis=1, block=idx)
      out[t + "attn.qkv.weight"] = _concatenate(
          kernels, lambda v: v.reshape(v.shape[0], -1).T, t + "attn.qkv.weight")
    qkv_b = [mp + f"{n}/bias" for n in ("query", "key", "value")]
    if all(k in w for k in qkv_b):
      out[t + "attn.qkv.bias"] = _concatenate(
          {k: take(k, idx) for k in qkv_b}, lambda v: v.reshape(-1), t + "attn.qkv.bias")
    if num_heads is not None and mp + "out/kernel" in w:
      _check_heads({mp + "out/kernel": take(mp + "out/kernel", idx)}, num_heads, axis=0,
                   block=idx)
    put(t + "attn.proj.weight", mp + "out/kernel",  # [H, D, C] -> [C, H * D]
        lambda v: v.transpose(2, 0, 1).reshape(v.shape[2], -1), idx=idx)
    put(t + "attn.proj.bias", mp + "out/bias", idx=idx)
    put(t + "norm2.weight", bp + f"LayerNorm_{ln2}/scale", idx=idx)
    put(t + "norm2.bias", bp + f"LayerNorm_{ln2}/bias", idx=idx)
    for r in range(2):
      put(t + f"mlp.fc{r + 1}.weight", bp + f"MlpBlock_{mlp_sub}/Dense_{r}/kernel",
          lambda v: v.T, idx=idx)
      put(t + f"mlp.fc{r + 1}.bias", bp + f"MlpBlock_{mlp_sub}/Dense_{r}/bias", idx=idx)
  for k in sorted(set(w) - used):
    if k in out:      # (a timm-named key beside its big_vision source: one of them was dropped)
      raise ValueError(f"holds {k!r} under its timm name beside the big_vision key it is "
                       "converted from: which one is meant cannot be told")
    out[k] = np.asarray(w[k])
  return out


# ----------------------------------------------------------------------------- conversion


def _original_dinov2(sd: StateDict) -> bool:
  """Whether `sd` is in the original DINOv2 layout (`register_tokens`, the cls position inside
  `pos_embed`), which `normalize_state_dict` folds into timm's."""
  return "register_tokens" in sd and "reg_token" not in sd and "pos_embed" in sd


def normalize_state_dict(sd: StateDict) -> StateDict:
  """Renames legacy layouts to timm's, like timm's `checkpoint_filter_fn`: original DINOv2
  (`register_tokens`, folded cls pos-embed, `mlp.w12/w3`) and DeiT-3 (`blocks.i.gamma_1/2`).
  `mask_token` is left in place (it is unused; ignore it explicitly)."""
  sd = dict(sd)
  if _original_dinov2(sd):
    pe, cls = np.shape(sd["pos_embed"]), np.shape(sd.get("cls_token", np.zeros((1, 1, 1))))
    if len(pe) != 3 or pe[0] != 1 or pe[1] < 1 or cls[:2] != (1, 1) or len(cls) != 3 or \
        ("cls_token" in sd and cls[2] != pe[2]):
      raise ValueError(f"original DINOv2 layout (register_tokens): pos_embed {pe} must be "
                       f"[1, L, C] and cls_token {cls if 'cls_token' in sd else None} [1, 1, C] "
                       "to fold the cls position into cls_token")
    sd["reg_token"] = sd.pop("register_tokens")
    if "cls_token" in sd:
      sd["cls_token"] = sd["cls_token"] + sd["pos_embed"][:, :1]
    sd["pos_embed"] = sd["pos_embed"][:, 1:]
  out, source = {}, {}
  for key, v in sd.items():
    k = _renamed(key)
    if k in out:
      raise ValueError(f"checkpoint holds both {source[k]!r} and {key!r}, two names of timm's "
                       f"{k!r} (legacy and current); keep one of them")
    out[k], source[k] = v, key
  return out


def _renamed(key: str) -> str:
  """timm's name of a legacy key (DINOv2's `mlp.w12/w3`, DeiT-3's `gamma_1/2`), else `key`."""
  k = re.sub(r"^(blocks\.\d+\.mlp\.)w12\.", r"\1fc1.", key)
  k = re.sub(r"^(blocks\.\d+\.mlp\.)w3\.", r"\1fc2.", k)
  return re.sub(r"^(blocks\.\d+\.)gamma_([12])$", r"\1ls\2.gamma", k)


def _file_names(state_dict: StateDict) -> Dict[str, str]:
  """{timm name: the key `state_dict` holds it under} for the keys `normalize_state_dict`
  renames (an ignore pattern may name either)."""
  names = {timm: k for k in state_dict if (timm := _renamed(k)) != k}
  if _original_dinov2(state_dict):
    names["reg_token"] = "register_tokens"
  return names


def _timm_name(path) -> str:
  parts = []
  for p in path:
    parts.append(str(p.idx) if hasattr(p, "idx") else str(p.key))
  if parts[0] == "patch_embed":
    parts.insert(1, "proj")
  if parts[-1] in ("kernel", "scale"):
    parts[-1] = "weight"
  return ".".join(parts)


def _to_ours(name: str, v: np.ndarray) -> np.ndarray:
  if name == "patch_embed.proj.weight":
    return v.transpose(2, 3, 1, 0)  # [C, Cin, P, P] -> [P, P, Cin, C]
  if name.endswith(".weight") and v.ndim == 2:
    return v.T  # Linear [out, in] -> kernel [in, out]
  return v


def _timm_shape(name: str, ours: Tuple[int, ...]) -> Tuple[int, ...]:
  if name == "patch_embed.proj.weight":
    p, q, cin, c = ours
    return (c, cin, p, q)
  if name.endswith(".weight") and len(ours) == 2:
    return ours[::-1]
  return ours


def expected_keys(cfg: ViTConfig) -> Dict[str, Tuple[int, ...]]:
  """{timm state-dict name: timm shape} that `cfg` needs."""
  leaves = jax.tree.flatten_with_path(param_shapes(cfg), is_leaf=lambda x: isinstance(x, tuple))[0]
  return {_timm_name(p): _timm_shape(_timm_name(p), s) for p, s in leaves}


def _maybe_resample_pos_embed(cfg: ViTConfig, sd: StateDict, resample: Tuple[str, bool]
                              ) -> StateDict:
  pe = sd.get("pos_embed")
  if pe is None or pe.ndim != 3 or pe.shape[1] == cfg.pos_embed_len:
    return sd
  if pe.shape[2] != cfg.embed_dim:   # reported as a mismatch with the file's own shape (the
    return sd                        # resampled one named a shape the file did not hold)
  npre = 0 if cfg.no_embed_class else cfg.num_prefix_tokens
  n = pe.shape[1] - npre
  side = math.isqrt(max(n, 0))
  if n <= 0 or side * side != n:
    return sd  # not a square grid: reported as a shape mismatch
  interpolation, antialias = resample
  sd = dict(sd)
  with np.errstate(over="ignore"):          # (said below, not as numpy's bare overflow warning)
    sd["pos_embed"] = resample_abs_pos_embed(
        pe.astype(np.float32), (cfg.grid_size, cfg.grid_size), (side, side),
        num_prefix_tokens=npre, interpolation=interpolation, antialias=antialias)
  if not np.all(np.isfinite(sd["pos_embed"])):   # (a cubic overshoots values near 3.4e38)
    raise ValueError(f"pos_embed resampled from a {side}x{side} to a {cfg.grid_size}x"
                     f"{cfg.grid_size} grid ({interpolation}) leaves float32's range; refusing "
                     "to convert it")
  return sd


def convert_state_dict(cfg: ViTConfig, state_dict: StateDict, *, drop_head: bool = False,
                       ignore_keys: Sequence[str] = (),
                       resample: Tuple[str, bool] = TIMM_RESAMPLE) -> Params:
  """timm state dict {name: array} -> float32 parameter tree for `cfg` (jax arrays).

  drop_head: discard the checkpoint's `head.*`/`head_dist.*` (for `num_classes=0` configs).
  ignore_keys: fnmatch patterns of checkpoint keys to discard (e.g. DINOv2's 'mask_token').
  resample: (interpolation, antialias) for position embeddings whose patch grid differs from
    `cfg.grid_size` (timm: ('bicubic', True); big_vision npz: ('bilinear', False)).
  Raises `ConversionError` listing every missing key, unexpected key and shape mismatch, and
  ValueError when `drop_head` or an `ignore_keys` pattern matches no key (a wrong assumption
  about the checkpoint), `drop_head` with a config that has classes, or for non-float /
  non-finite weights.
  """
  check_config(cfg)
  # A pattern names a key as the file holds it or by timm's name (wrapper prefixes stripped from
  # both, as from the keys: 'module.head.weight' and DeiT-3's 'blocks.0.gamma_1' were refused).
  patterns = tuple(_unwrapped(p) for p in ignore_keys) + (HEAD_KEYS if drop_head else ())
  sd = normalize_state_dict(state_dict)
  file_names = _file_names(state_dict)

  def matches(k: str, pattern: str) -> bool:
    return fnmatch.fnmatchcase(k, pattern) or fnmatch.fnmatchcase(file_names.get(k, k), pattern)

  # A drop that drops nothing is a wrong assumption about the checkpoint (and was recorded in the
  # weights' provenance as if it had dropped something).
  unmatched = [p for p in ignore_keys if not any(matches(k, _unwrapped(p)) for k in sd)]
  if unmatched:
    raise ValueError(f"ignore_keys (--ignore_keys) {unmatched} match no checkpoint key (first "
                     f"keys: {sorted(sd)[:3]}; a file's lose the module./_orig_mod. prefixes of "
                     "wrapped models when read); drop only what the checkpoint holds")
  if drop_head and cfg.num_classes:      # (then reported as the head "missing")
    raise ValueError(f"drop_head (--drop_head) discards the checkpoint's head, so the config "
                     f"needs num_classes=0 (--num_classes=0); {cfg.name} has a "
                     f"{cfg.num_classes}-class head")
  if drop_head and not any(fnmatch.fnmatchcase(k, p) for k in sd for p in HEAD_KEYS):
    raise ValueError("drop_head (--drop_head): the checkpoint has no head.* / head_dist.* keys "
                     "to drop (a features-only checkpoint converts without it)")
  sd = {k: v for k, v in sd.items() if not any(matches(k, p) for p in patterns)}
  want = expected_keys(cfg)
  # Before resampling the position embedding, which computes in float32 (it hid an int8 one).
  not_float = sorted(f"{k} ({np.asarray(sd[k]).dtype})" for k in set(want) & set(sd)
                     if not is_float_dtype(np.asarray(sd[k]).dtype))
  if not_float:
    raise ValueError(f"checkpoint has non-float values in {_first(not_float, 5)}: "
                     "vitprune converts floating-point weights (float16, bfloat16, float32, "
                     "...; a quantised checkpoint must be dequantised first)"
                     + ("; .npz files cannot keep bfloat16 (np.savez stores it as 2 raw bytes, "
                        "|V2): save float32 or .safetensors"
                        if any("(|V2)" in k for k in not_float) else ""))
  present = sorted(set(want) & set(sd))        # (resampling casts the position embedding too)
  nonfinite = [k for k in present
               if not np.all(np.isfinite(np.asarray(sd[k]).astype(np.float64)))]
  if nonfinite:
    raise ValueError(f"checkpoint has NaN/inf values in {nonfinite}; refusing to convert it")
  with np.errstate(over="ignore"):            # float64 values float32 cannot hold became inf
    too_big = [k for k in present if not np.all(np.isfinite(np.asarray(sd[k], np.float32)))]
  if too_big:
    raise ValueError(f"checkpoint has values beyond float32's range (|x| > 3.4e38) in "
                     f"{too_big}; refusing to convert it")
  sd = _maybe_resample_pos_embed(cfg, sd, resample)
  missing = sorted(set(want) - set(sd))
  unexpected = sorted(set(sd) - set(want))
  mismatched = [(k, want[k], tuple(np.shape(sd[k]))) for k in sorted(set(want) & set(sd))
                if tuple(np.shape(sd[k])) != want[k]]
  if _original_dinov2(state_dict):   # the shape named is after the DINOv2 fold, not the file's
    mismatched = [(k, e, g if k != "pos_embed" else
                   f"{g}: the file's {tuple(np.shape(state_dict['pos_embed']))} with the cls "
                   "position folded out (original DINOv2 layout, assumed from its "
                   "register_tokens)") for k, e, g in mismatched]
  if missing or unexpected or mismatched:
    found = state_dict_size(sd)
    raise ConversionError(cfg.name, missing, unexpected, mismatched,
                          features_only=cfg.num_classes == 0,
                          sizes=None if found is None else (found, (cfg.depth, cfg.embed_dim)))
  leaves, treedef = jax.tree.flatten_with_path(param_shapes(cfg),
                                               is_leaf=lambda x: isinstance(x, tuple))
  values = []
  for path, _ in leaves:
    name = _timm_name(path)
    values.append(jnp.asarray(_to_ours(name, np.asarray(sd[name], np.float32))))
  return jax.tree.unflatten(treedef, values)


def count_params(params: Params) -> int:
  return int(sum(np.size(x) for x in jax.tree.leaves(params)))


def convert_file(cfg: ViTConfig, path: str, *, drop_head: bool = False,
                 ignore_keys: Sequence[str] = ()) -> Tuple[Params, Dict[str, Any]]:
  """(params, meta) from a checkpoint file; meta has the source name, format, sha256 and the
  dtypes of the tensors converted (`source_dtypes`: the params are float32 whatever they were,
  so a float16 or bfloat16 checkpoint's precision is said where its weights are kept)."""
  check_config(cfg)                          # (before reading cfg.num_heads)
  sd, fmt = load_checkpoint(path, num_heads=cfg.num_heads)
  resample = BIG_VISION_RESAMPLE if fmt == "big_vision" else TIMM_RESAMPLE
  try:
    timm_sd = normalize_state_dict(sd)
    params = convert_state_dict(cfg, sd, drop_head=drop_head, ignore_keys=ignore_keys,
                                resample=resample)
  except ValueError as e:           # what is wrong inside a file names the file (its type kept:
    e.args = (f"{path}: {e}",)      # a ConversionError's key lists are read by callers)
    raise
  src_pe = timm_sd.get("pos_embed")                  # (DINOv2's folds its cls position out)
  meta = {"source_file": os.path.basename(path), "source_sha256": file_sha256(path),
          "source_format": fmt, "timm_name": cfg.name, "img_size": cfg.img_size,
          "num_classes": cfg.num_classes, "drop_head": drop_head,
          "ignore_keys": list(ignore_keys), "num_params": count_params(params),
          "source_dtypes": sorted({np.asarray(timm_sd[k]).dtype.name   # ('>f4': float32)
                                   for k in expected_keys(cfg) if k in timm_sd})}
  if src_pe is not None and tuple(src_pe.shape) != tuple(params["pos_embed"].shape):
    meta["pos_embed_resampled"] = {"from": list(src_pe.shape),
                                   "to": list(params["pos_embed"].shape),
                                   "interpolation": resample[0], "antialias": resample[1]}
  return params, meta


def verify_forward(cfg: ViTConfig, params: Params) -> Dict[str, Any]:
  """Runs the model on two fixed standard-normal images (seeds 0 and 1) -> summary of the first
  one's outputs, and `input_independent`: whether both gave the same outputs (a model whose
  outputs ignore the image: a zeroed head, or weights that did not load as meant; a summary of
  finite numbers alone passed it), and for a classifier `classes_tied`: whether its logits are
  all one value (to 1e-6 relative: its top-1 is an arbitrary pick). Raises ValueError if the
  outputs are not finite."""
  x = np.stack([np.random.default_rng(seed).standard_normal(
      (cfg.img_size, cfg.img_size, cfg.in_chans)).astype(np.float32) for seed in (0, 1)])
  both = np.asarray(jitted_forward(params, x, cfg=cfg))
  if not np.all(np.isfinite(both)):     # (the weights are finite: some too large to compute)
    name, value = max(((_timm_name(k), float(np.max(np.abs(v))))     # (the checkpoint's name)
                       for k, v in jax.tree.flatten_with_path(params)[0]),
                      key=lambda item: item[1])
    raise ValueError(f"verify: the converted model produced non-finite outputs (its largest "
                     f"weight: {name}, |x| up to {value:.3g})")
  y = both[:1]
  summary = {"input": "standard normal, seed 0 (and seed 1 for input_independent)",
             "kind": "logits" if cfg.num_classes else "features", "shape": list(y.shape),
             "mean": float(y.mean()), "std": float(y.std()),
             "input_independent": bool(np.array_equal(both[0], both[1]))}
  if cfg.num_classes:
    summary["top1"] = int(y.argmax())
    # Every class at one value (a head of 1e30s: 'top-1 class 0' of a tie passed in silence).
    summary["classes_tied"] = bool(np.ptp(y) <= 1e-6 * np.abs(y).max()) if cfg.num_classes > 1 \
        else False
  return summary


def convert_checkpoint(cfg: ViTConfig, checkpoint: str, out: str, *, overwrite: bool = False,
                       drop_head: bool = False, ignore_keys: Sequence[str] = (),
                       verify: bool = False) -> Tuple[str, Params, Dict[str, Any]]:
  """Converts `checkpoint` for `cfg` and saves it atomically with `save_weights` under `out`.

  Returns (absolute output dir, params, meta). Nothing is written unless conversion succeeds
  (and, with `verify`, unless the converted model's outputs on a fixed input are finite: their
  summary is `meta['verified']`). The output directory is refused up front if it exists and
  `overwrite` is False, or if `overwrite` would replace something that is not a weights
  directory, or weights another run published there since this call began
  (`atomic.ReplacedMeanwhileError`). NaN/inf weights and impossible sizes (e.g. a non-positive
  img_size) are refused.
  """
  check_config(cfg)
  atomic.check_output_dir_target(os.path.abspath(out), overwrite, is_weights_dir)
  began = atomic.output_stamp(os.path.abspath(out))      # (a folder made since: not replaced)
  orbax_io.writable_path(os.path.abspath(out))      # before converting, not in save_weights
  params, meta = convert_file(cfg, checkpoint, drop_head=drop_head, ignore_keys=ignore_keys)
  meta["converted_at"] = datetime.datetime.now(datetime.timezone.utc).isoformat(
      timespec="seconds")
  if verify:
    try:
      meta["verified"] = verify_forward(cfg, params)
    except ValueError as e:
      raise ValueError(f"{checkpoint}: {e}") from None
  path = save_weights(out, cfg, params, meta=meta, overwrite=overwrite, replaces=began)
  return path, params, meta


def to_timm_state_dict(cfg: ViTConfig, params: Params) -> StateDict:
  """Inverse of `convert_state_dict`: our tree -> {timm name: float32 np.ndarray}."""
  check_params(cfg, params)
  leaves = jax.tree.flatten_with_path(params)[0]
  out = {}
  for path, v in leaves:
    name = _timm_name(path)
    v = np.asarray(v, np.float32)
    out[name] = np.ascontiguousarray(_to_ours(name, v) if name != "patch_embed.proj.weight"
                                     else v.transpose(3, 2, 0, 1))
  return out
