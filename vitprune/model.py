"""Pure-functional Vision Transformer over a Flax-style parameter pytree, numerically like timm.

    tokens = embed(images)                       # [B, N, C]: prefix tokens, then patches
    for each block l: tokens = block(tokens)     # reduced to schedule.counts[l + 1] mid-block
    out = head(pool(norm(tokens)))               # [B, num_classes] or [B, C] features

`forward_features` (embedding, blocks, final norm) and `forward_head` (pooling, fc_norm, head)
split it as timm does; `forward` = head of features.

Numerics follow timm's `VisionTransformer`: exact (erf) GELU, LayerNorm with `cfg.norm_eps`,
attention scale `head_dim ** -0.5`, LayerScale, token or average pooling (with fc_norm), DeiT
distillation heads averaged at inference, DINOv2 registers and packed SwiGLU.

Parameters (`init_params`, or `vitprune.convert` from timm) are a nested dict of arrays:
  patch_embed/{kernel [P, P, Cin, C], bias [C]}, cls_token [1, 1, C], dist_token [1, 1, C],
  reg_token [1, R, C], pos_embed [1, L, C], blocks: list of
  {norm1, attn/{qkv, proj}, ls1?, norm2, mlp/{fc1, fc2}, ls2?}, norm | fc_norm, head, head_dist.
Dense kernels are [in, out] (Flax convention); LayerNorms are {scale, bias}; LayerScale {gamma}.

Precision: float32 runs with matmul precision `precision` ('highest' by default, which matches
PyTorch's float32 matmuls; 'default' lets GPUs/TPUs use TF32/bf16 passes). bfloat16 casts
weights and activations to bfloat16 and keeps LayerNorm statistics and softmax in float32.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import reprlib
from collections.abc import Mapping
from typing import Any, Dict, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from vitprune.config import (COMPUTE_DTYPES, PRECISIONS, ViTConfig, check_config_type,
                             check_switch, is_float_dtype)
from vitprune.reduce.base import AttentionStats, TokenReducer
from vitprune.schedule import (Schedule, check_reducer_given, check_schedule,
                               check_static_types, full_schedule)

Params = Dict[str, Any]
DTYPES = {name: getattr(jnp, name) for name in COMPUTE_DTYPES}


# ----------------------------------------------------------------------------- layers


def dense(p: Params, x: jax.Array) -> jax.Array:
  """x [..., in] @ kernel [in, out] + bias [out]."""
  return x @ p["kernel"].astype(x.dtype) + p["bias"].astype(x.dtype)


def layer_norm(p: Params, x: jax.Array, eps: float) -> jax.Array:
  """LayerNorm over the last axis; statistics in float32."""
  xf = x.astype(jnp.float32)
  mean = xf.mean(-1, keepdims=True)
  var = jnp.square(xf - mean).mean(-1, keepdims=True)
  y = (xf - mean) * jax.lax.rsqrt(var + eps)
  return (y * p["scale"] + p["bias"]).astype(x.dtype)


def layer_scale(p: Optional[Params], x: jax.Array) -> jax.Array:
  return x if p is None else x * p["gamma"].astype(x.dtype)


def mlp(p: Params, x: jax.Array, mlp_type: str) -> jax.Array:
  """[B, N, C] -> [B, N, C]: fc1 -> GELU (exact erf) -> fc2, or timm's packed SwiGLU."""
  h = dense(p["fc1"], x)
  if mlp_type == "swiglu":  # timm SwiGLUPacked: silu(first half) * second half
    a, b = jnp.split(h, 2, axis=-1)
    h = jax.nn.silu(a) * b
  else:
    h = jax.nn.gelu(h, approximate=False)
  return dense(p["fc2"], h)


def _qkv(p: Params, x: jax.Array, num_heads: int) -> Tuple[jax.Array, jax.Array, jax.Array]:
  """x [B, N, C] -> q, k, v each [B, N, H, D] (timm's fused qkv layout: [3, H, D])."""
  b, n, c = x.shape
  qkv = dense(p["qkv"], x).reshape(b, n, 3, num_heads, c // num_heads)
  return qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]


def _size_bias(size: Optional[jax.Array]) -> Optional[jax.Array]:
  """Proportional attention (ToMe): log token size added to every query's logits, [B, 1, 1, N]."""
  if size is None:
    return None
  return jnp.log(size.astype(jnp.float32))[:, None, None, :]


def attention(p: Params, x: jax.Array, size: Optional[jax.Array], num_heads: int
              ) -> jax.Array:
  """Fast path: [B, N, C] -> [B, N, C] via `jax.nn.dot_product_attention` (fused where the
  backend has a kernel); exposes nothing."""
  q, k, v = _qkv(p, x, num_heads)
  bias = _size_bias(size)
  if bias is not None:
    bias = bias.astype(q.dtype)
  o = jax.nn.dot_product_attention(q, k, v, bias=bias, scale=q.shape[-1] ** -0.5)
  return dense(p["proj"], o.reshape(x.shape))


def attention_with_stats(p: Params, x: jax.Array, size: Optional[jax.Array], num_heads: int
                         ) -> Tuple[jax.Array, AttentionStats]:
  """Explicit path: [B, N, C] -> ([B, N, C], AttentionStats with probs [B, H, N, N])."""
  q, k, v = _qkv(p, x, num_heads)
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) * q.shape[-1] ** -0.5
  bias = _size_bias(size)
  if bias is not None:
    logits = logits + bias
  probs = jax.nn.softmax(logits, axis=-1)
  o = jnp.einsum("bhqk,bkhd->bqhd", probs.astype(v.dtype), v)
  return dense(p["proj"], o.reshape(x.shape)), AttentionStats(probs, k, v)


def block(p: Params, x: jax.Array, size: Optional[jax.Array], *, cfg: ViTConfig,
          num_keep: int, reducer: Optional[TokenReducer], layer: int
          ) -> Tuple[jax.Array, Optional[jax.Array]]:
  """One pre-norm transformer block; [B, N, C] -> [B, num_keep, C].

  Tokens are reduced between the attention residual and the MLP when num_keep < N.
  """
  n = x.shape[1]
  reduce_here = num_keep < n
  h = layer_norm(p["norm1"], x, cfg.norm_eps)
  stats = None
  if reduce_here and reducer.needs_attention:
    a, stats = attention_with_stats(p["attn"], h, size, cfg.num_heads)
  else:
    a = attention(p["attn"], h, size, cfg.num_heads)
  x = x + layer_scale(p.get("ls1"), a)
  if reduce_here:
    b = x.shape[0]
    out = reducer.reduce(x, size, stats, num_keep=num_keep,
                         num_prefix=cfg.num_prefix_tokens, layer=layer)
    x, size = _check_reduced(reducer, out, b, num_keep, layer)
  h = layer_norm(p["norm2"], x, cfg.norm_eps)
  x = x + layer_scale(p.get("ls2"), mlp(p["mlp"], h, cfg.mlp_type))
  return x, size


def _check_reduced(reducer: TokenReducer, out: Any, b: int, num_keep: int, layer: int
                   ) -> Tuple[jax.Array, Optional[jax.Array]]:
  """`reducer.reduce`'s result as (tokens [B, num_keep, C], size [B, num_keep] or None);
  ValueError naming the reducer otherwise (a bare array was 'too many values to unpack', and a
  size left at the input count a broadcasting error in the next block's attention)."""
  who = type(reducer).__name__
  if not (isinstance(out, (tuple, list)) and len(out) == 2):
    got = (f"an array of shape {tuple(out.shape)}" if hasattr(out, "shape") else
           type(out).__name__)
    raise ValueError(f"{who}.reduce must return (tokens [B, K, C], size [B, K] or None), got "
                     f"{got} at layer {layer}")
  x, size = out
  if x.shape[1] != num_keep:
    raise ValueError(f"{who} returned {x.shape[1]} tokens at layer {layer}, the schedule asks "
                     f"for {num_keep}")
  if size is not None and tuple(getattr(size, "shape", ())) != (b, num_keep):
    raise ValueError(f"{who} returned token sizes of shape {tuple(getattr(size, 'shape', ()))} "
                     f"at layer {layer}, not [B, K] = [{b}, {num_keep}] (or None)")
  return x, size


# ----------------------------------------------------------------------------- model


def embed(params: Params, images: jax.Array, cfg: ViTConfig) -> jax.Array:
  """images [B, H, W, Cin] -> tokens [B, prefix + patches, C] with position embeddings."""
  b, hh, ww, cin = images.shape
  ps, g = cfg.patch_size, cfg.grid_size
  patches = images.reshape(b, g, ps, g, ps, cin).transpose(0, 1, 3, 2, 4, 5)
  patches = patches.reshape(b, g * g, ps * ps * cin)
  pe = params["patch_embed"]
  kernel = pe["kernel"].reshape(ps * ps * cin, cfg.embed_dim)
  x = dense({"kernel": kernel, "bias": pe["bias"]}, patches)
  pos = params["pos_embed"].astype(x.dtype)

  def expand(t):
    return jnp.broadcast_to(t.astype(x.dtype), (b,) + t.shape[1:])

  cls_like = [expand(params[k]) for k in ("cls_token", "dist_token") if k in params]
  regs = [expand(params["reg_token"])] if "reg_token" in params else []
  if cfg.no_embed_class:  # DeiT-3 / DINOv2-reg: pos_embed covers patches only
    return jnp.concatenate(cls_like + regs + [x + pos], axis=1)
  return jnp.concatenate(cls_like + regs + [x], axis=1) + pos


def check_options(dtype: str, precision: str) -> None:
  """ValueError unless `dtype` and `precision` are ones the forward supports."""
  if not isinstance(dtype, str) or dtype not in DTYPES:    # (a list: TypeError from the dict)
    raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
  if not isinstance(precision, str) or precision not in PRECISIONS:
    raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")


HEAD_KEYS = ("norm", "fc_norm", "head", "head_dist")     # what `forward_head` reads


def leaf_name(path: Tuple[Any, ...]) -> str:
  """A parameter's tree path as messages name it: 'blocks.1.mlp.fc1.kernel' (jax's keystr text
  "['blocks'][1]..." was quoted twice in a listed message: ["['blocks'][1]..."])."""
  return jax.tree_util.keystr(path, simple=True, separator=".")


def check_params(cfg: ViTConfig, params: Params, keys: Optional[Sequence[str]] = None) -> None:
  """Raises ValueError listing every missing/unexpected leaf, shape mismatch and non-float leaf
  of `params` vs `cfg` (shapes only: cheap, and works on tracers); with `keys`, of those
  top-level entries only (e.g. `HEAD_KEYS`: the head alone; a name that is neither a
  top-level entry of `cfg` nor of `HEAD_KEYS` is refused)."""
  expected = param_shapes(cfg)
  if keys is not None:
    known = set(expected) | set(HEAD_KEYS)      # (the head's: absent from some configs)
    if isinstance(keys, str) or not all(isinstance(k, str) and k in known for k in keys):
      raise ValueError(f"keys must name top-level entries of {cfg.name}'s parameters "
                       f"({sorted(known)}), got {keys!r}")     # (('heads',): nothing checked)
    expected = {k: v for k, v in expected.items() if k in keys}
    if not isinstance(params, Mapping):    # (a flax FrozenDict too: forward_features took it)
      raise ValueError(f"parameters of {cfg.name} must be a dict tree, got "
                       f"{type(params).__name__}")
    params = {k: v for k, v in params.items() if k in keys}
  if isinstance(params, Mapping) and "blocks" in params and not isinstance(params["blocks"],
                                                                        (list, tuple)):
    raise ValueError(f"parameters do not match {cfg.name}: 'blocks' must be a list of "
                     f"{cfg.depth} block trees, got "
                     f"{type(params.get('blocks')).__name__}")   # (not 2 x 12 path lists)
  flat = [k for k in params if isinstance(k, str) and "." in k] if isinstance(
      params, Mapping) else []
  if flat:          # (its dotted keys read as the nested tree's names in the lists below)
    raise ValueError(f"parameters of {cfg.name} hold flattened names ({flat[0]!r}, ...): give "
                     "the nested tree (flax.traverse_util.unflatten_dict(params, sep='.'))")
  # Compared by exact path, named dotted (leaf_name).
  want = {jax.tree_util.keystr(k): (leaf_name(k), tuple(v))
          for k, v in jax.tree.flatten_with_path(expected, is_leaf=_is_shape)[0]}
  leaves = {jax.tree_util.keystr(k): (leaf_name(k), v)
            for k, v in jax.tree.flatten_with_path(params)[0]}
  got = {k: tuple(np.shape(v)) for k, (_, v) in leaves.items()}
  missing = sorted(want[k][0] for k in set(want) - set(got))
  unexpected = sorted(leaves[k][0] for k in set(got) - set(want))
  mismatched = sorted(f"{want[k][0]}: expected {want[k][1]}, got {got[k]}"
                      for k in set(want) & set(got) if want[k][1] != got[k])
  not_float = sorted(f"{name}: {jnp.result_type(v)}" for name, v in leaves.values()
                     if not is_float_dtype(jnp.result_type(v)))
  if missing or unexpected or mismatched or not_float:
    raise ValueError(f"parameters do not match {cfg.name}:\n  missing: {missing}\n"
                     f"  unexpected: {unexpected}\n  shape mismatches: {mismatched}"
                     + (f"\n  not floating point: {not_float}" if not_float else ""))


def check_inputs(cfg: ViTConfig, images: jax.Array, dtype: str, precision: str) -> None:
  """ValueError unless `images` is a floating-point [B, S, S, C] array for `cfg` (preprocessed:
  raw uint8 pixels would run, scaled wrong) and the options are supported."""
  check_config_type(cfg)
  if not (hasattr(images, "shape") and hasattr(images, "dtype")):
    raise ValueError(f"images must be an array [B, S, S, C], got {type(images).__name__}")
  if not is_float_dtype(images.dtype):
    raise ValueError(f"images must be floating point, preprocessed as the model expects "
                     f"(vitprune.data.preprocess_image, timm's eval transform), got "
                     f"{images.dtype} pixels")
  want = (cfg.img_size, cfg.img_size, cfg.in_chans)
  if images.ndim != 4 or tuple(images.shape[1:]) != want:
    raise ValueError(f"{cfg.name} expects images [B, {want[0]}, {want[1]}, {want[2]}] (NHWC), "
                     f"got shape {tuple(images.shape)}")
  check_options(dtype, precision)


def forward_features(params: Params, images: jax.Array, *, cfg: ViTConfig,
                     schedule: Optional[Schedule] = None,
                     reducer: Optional[TokenReducer] = None, dtype: str = "float32",
                     precision: str = "highest") -> jax.Array:
  """images [B, H, W, Cin] -> final tokens [B, n, C] in `dtype` (timm's `forward_features`).

  Embedding, the blocks under `schedule` (n = its last count) and the final norm (token pooling;
  average pooling normalises after pooling, in `forward_head`).
  """
  check_inputs(cfg, images, dtype, precision)
  check_params(cfg, params)
  if isinstance(schedule, Schedule):
    check_reducer_given(cfg, schedule, reducer)
  schedule = check_schedule(cfg, schedule, reducer)
  dt = DTYPES[dtype]
  with jax.default_matmul_precision(matmul_precision(dt, precision)):
    x = embed(params, images.astype(dt), cfg)
    if schedule.counts[0] < x.shape[1]:
      x = reducer.reduce_embedding(x, num_keep=schedule.counts[0],
                                   num_prefix=cfg.num_prefix_tokens)
      if x.shape[1] != schedule.counts[0]:     # (blocks that keep their count never noticed)
        raise ValueError(f"{type(reducer).__name__} returned {x.shape[1]} tokens after the "
                         f"embedding, the schedule asks for {schedule.counts[0]}")
    size = None
    for layer, bp in enumerate(params["blocks"]):
      x, size = block(bp, x, size, cfg=cfg, num_keep=schedule.tokens_out(layer),
                      reducer=reducer, layer=layer)
    return final_norm(params, x, cfg)


def final_norm(params: Params, x: jax.Array, cfg: ViTConfig) -> jax.Array:
  """[B, n, C] -> [B, n, C]: the last LayerNorm with token pooling (average pooling normalises
  after pooling instead: fc_norm in `forward_head`)."""
  return layer_norm(params["norm"], x, cfg.norm_eps) if cfg.global_pool == "token" else x


def forward_head(params: Params, x: jax.Array, *, cfg: ViTConfig,
                 pre_logits: bool = False) -> jax.Array:
  """Final tokens [B, n, C] -> float32 logits [B, num_classes] (timm's `forward_head`).

  Pooling (class token, or fc_norm of the patch mean) and the classifier; DeiT's distillation
  head is averaged in. `pre_logits=True`, or a model without classifier (num_classes == 0),
  returns the pooled features [B, C] instead (DeiT-distilled pre-logits: the mean of the class
  and distillation tokens, as timm). Computes in x's dtype under the caller's matmul precision.
  """
  check_config_type(cfg)
  check_switch("pre_logits", pre_logits)  # ('no' returned the features)
  check_params(cfg, params, HEAD_KEYS)    # (a head of 5 classes gave [B, 5] logits for 10)
  if not hasattr(x, "ndim") or not hasattr(x, "dtype"):    # (a list: "has no attribute 'ndim'")
    raise TypeError(f"forward_head takes final tokens as an array [B, n, {cfg.embed_dim}], "
                    f"got {type(x).__name__}")
  if x.ndim != 3 or x.shape[-1] != cfg.embed_dim or x.shape[1] <= cfg.num_prefix_tokens:
    raise ValueError(f"forward_head takes final tokens [B, n, {cfg.embed_dim}] (n > "
                     f"{cfg.num_prefix_tokens} prefix tokens) of {cfg.name}, got shape "
                     f"{tuple(x.shape)}")
  if not jnp.issubdtype(x.dtype, jnp.floating):     # (int tokens cast the head to int: zeros)
    raise ValueError(f"forward_head takes floating-point tokens, got {x.dtype}")
  if cfg.global_pool == "avg":
    pooled = layer_norm(params["fc_norm"], x[:, cfg.num_prefix_tokens:].mean(1), cfg.norm_eps)
  else:
    pooled = x[:, 0]
  if (pre_logits or cfg.num_classes == 0) and cfg.dist_token:   # (no head: timm's Identity
    pooled = (pooled + x[:, 1]) / 2                               # heads average the two)
  if pre_logits or cfg.num_classes == 0:
    return pooled.astype(jnp.float32)
  out = dense(params["head"], pooled)
  if cfg.dist_token:
    out = (out + dense(params["head_dist"], x[:, 1])) / 2
  return out.astype(jnp.float32)


def forward(params: Params, images: jax.Array, *, cfg: ViTConfig,
            schedule: Optional[Schedule] = None, reducer: Optional[TokenReducer] = None,
            dtype: str = "float32", precision: str = "highest") -> jax.Array:
  """images [B, H, W, Cin] -> logits [B, num_classes] (features [B, C] if num_classes == 0):
  `forward_head(forward_features(...))`.

  All keyword arguments are static: use `jitted_forward` (or `jax.jit` with them in
  `static_argnames`) to compile one graph per (cfg, batch shape, schedule, reducer, dtype).
  """
  x = forward_features(params, images, cfg=cfg, schedule=schedule, reducer=reducer, dtype=dtype,
                       precision=precision)
  with jax.default_matmul_precision(matmul_precision(DTYPES[dtype], precision)):
    return forward_head(params, x, cfg=cfg)


def matmul_precision(dt, precision: str) -> str:
  """float32 graphs run at `precision`; bfloat16 ones at the backend default."""
  return precision if dt == jnp.float32 else "default"


_STATIC = ("cfg", "schedule", "reducer", "dtype", "precision")


@functools.lru_cache(maxsize=64)       # (per call, not per compile: rebuilt, it re-checked both)
def _graph_config(cfg: ViTConfig) -> ViTConfig:
  """`cfg` with one preprocessing for every config: the graph never reads it, and configs
  differing only there (weights converted under another pretrained_cfg) compiled it twice."""
  return dataclasses.replace(cfg, preprocessing=dataclasses.replace(
      cfg.preprocessing, mean=(0.0,), std=(1.0,), crop_pct=1.0, interpolation="bicubic"))


def _jit_static_keywords(fn):
  """`fn` under `jax.jit` with every keyword static, always called with every keyword spelled
  out: jax keys its cache on the keywords as given, so `dtype="float32"` and an omitted dtype
  would otherwise compile the same graph twice."""
  jitted = jax.jit(fn, static_argnames=_STATIC)
  defaults = {k: p.default for k, p in inspect.signature(fn).parameters.items()
              if k in _STATIC and p.default is not inspect.Parameter.empty}

  @functools.wraps(fn)
  def call(params, images, **static):
    unknown = sorted(set(static) - set(_STATIC))     # (a typo's string value became a dynamic
    if unknown:                                      # argument: "as an abstract array")
      raise TypeError(f"{fn.__name__}() got an unexpected keyword argument {unknown[0]!r}")
    check_static_types(static.get("schedule"), static.get("reducer"))   # before jax hashes them
    if "cfg" in static:
      static["cfg"] = _graph_config(check_config_type(static["cfg"]))
    static = {**defaults, **static}
    if "dtype" in static and "precision" in static:     # (jax's unhashable-static error named
      check_options(static["dtype"], static["precision"])   # neither, for precision=['highest'])
    cfg, schedule = static.get("cfg"), static.get("schedule")
    if schedule is not None and isinstance(cfg, ViTConfig) and \
        schedule.counts == full_schedule(cfg).counts:
      schedule = None                   # reduces nothing: the unpruned graph, compiled once
    if schedule is None:
      static.update(schedule=None, reducer=None)   # a reducer that never runs changes nothing
    if static.get("dtype") == "bfloat16" and "precision" in static:
      static["precision"] = "default"    # what bfloat16 runs at whatever is asked (one graph)
    return jitted(params, images, **static)

  call.__doc__ = f"`{fn.__name__}` under `jax.jit`, every keyword static (one graph per value)."
  call._cache_size = jitted._cache_size          # pylint: disable=protected-access
  return call


jitted_forward = _jit_static_keywords(forward)
jitted_forward_features = _jit_static_keywords(forward_features)


# ----------------------------------------------------------------------------- parameters


def param_shapes(cfg: ViTConfig) -> Params:
  """The parameter tree of `cfg` as nested dicts of shape tuples (lists for `blocks`)."""
  c, ps = check_config_type(cfg).embed_dim, cfg.patch_size

  def lin(i, o):
    return {"kernel": (i, o), "bias": (o,)}

  def ln():
    return {"scale": (c,), "bias": (c,)}

  hidden_out = cfg.mlp_hidden // 2 if cfg.mlp_type == "swiglu" else cfg.mlp_hidden
  blk = {"norm1": ln(), "attn": {"qkv": lin(c, 3 * c), "proj": lin(c, c)}, "norm2": ln(),
         "mlp": {"fc1": lin(c, cfg.mlp_hidden), "fc2": lin(hidden_out, c)}}
  if cfg.layerscale:
    blk["ls1"] = {"gamma": (c,)}
    blk["ls2"] = {"gamma": (c,)}
  tree = {"patch_embed": {"kernel": (ps, ps, cfg.in_chans, c), "bias": (c,)},
          "pos_embed": (1, cfg.pos_embed_len, c),
          "blocks": [blk] * cfg.depth}
  if cfg.class_token:
    tree["cls_token"] = (1, 1, c)
  if cfg.dist_token:
    tree["dist_token"] = (1, 1, c)
  if cfg.num_reg_tokens:
    tree["reg_token"] = (1, cfg.num_reg_tokens, c)
  tree["fc_norm" if cfg.use_fc_norm else "norm"] = ln()
  if cfg.num_classes:
    tree["head"] = lin(c, cfg.num_classes)
    if cfg.dist_token:
      tree["head_dist"] = lin(c, cfg.num_classes)
  return tree


def _is_shape(x) -> bool:
  return isinstance(x, tuple) and all(isinstance(d, int) for d in x)


def abstract_params(cfg: ViTConfig, dtype=jnp.float32) -> Params:
  """`jax.ShapeDtypeStruct` tree of `cfg`'s parameters (no memory is allocated)."""
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s, dtype), param_shapes(cfg),
                      is_leaf=_is_shape)


def init_rule(name: str, parent: str, shape: Tuple[int, ...]) -> Tuple[str, float]:
  """How random initialisation draws one leaf (`name` under `parent` in `param_shapes`), as
  timm-like rules: ('const', value) for biases (0), LayerNorm scales (1) and LayerScale gammas
  (1e-5); ('fan_in_uniform', fan_in) for the patch kernel: U(-1, 1) / sqrt(fan_in);
  ('normal', std) for every other kernel, token and position embedding: N(0, 0.02) clipped at
  2 std. `init_params` (numpy) and `vitprune.flax_module` (jax.random) both follow it."""
  if name == "bias":
    return "const", 0.0
  if name == "scale":
    return "const", 1.0
  if name == "gamma":
    return "const", 1e-5
  if name == "kernel" and parent == "patch_embed":
    return "fan_in_uniform", float(shape[0] * shape[1] * shape[2])
  return "normal", 0.02


def init_params(cfg: ViTConfig, seed: int = 0) -> Params:
  """Random float32 parameters of `cfg` following `init_rule`, drawn with numpy from `seed`."""
  if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
    raise TypeError(f"seed must be an int >= 0 (numpy draws the parameters; not a JAX PRNG "
                    f"key), got {reprlib.repr(seed)}")
  shapes = param_shapes(cfg)
  leaves, treedef = jax.tree.flatten_with_path(shapes, is_leaf=_is_shape)
  rng = np.random.default_rng(seed)
  out = []
  for path, shape in leaves:
    name = str(path[-1].key)
    parent = str(path[-2].key) if len(path) > 1 and hasattr(path[-2], "key") else ""
    kind, a = init_rule(name, parent, shape)
    if kind == "const":
      v = np.full(shape, a)
    elif kind == "fan_in_uniform":
      v = rng.uniform(-1, 1, shape) / math.sqrt(a)
    else:
      v = np.clip(rng.normal(0.0, a, shape), -2 * a, 2 * a)
    out.append(jnp.asarray(v, jnp.float32))
  return jax.tree.unflatten(treedef, out)
