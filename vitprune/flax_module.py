"""Flax interop: the ViT as a `flax.linen` Module over the very same parameter pytree.

    module = VisionTransformer(cfg, schedule=parse_schedule(cfg, "keep@3:120"),
                               reducer=make_reducer("pomt"))
    variables = module.init(jax.random.key(0), images)     # {'params': <vitprune tree>}
    logits = module.apply({"params": converted_params}, images)

`variables["params"]` has exactly the structure of `vitprune.model.param_shapes(cfg)`, so weights
converted from timm (`vitprune.convert`) or loaded with `vitprune.checkpoint.load_weights` plug
straight into `apply`, and the module drops into Flax/optax training code (e.g. fine-tuning a
pruned schedule). The computation is `vitprune.model.forward`; the module only owns parameters.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from vitprune.config import ViTConfig, check_switch
from vitprune.model import (check_params, forward, forward_features, init_rule,
                            param_shapes)
from vitprune.schedule import Schedule


def _is_shape(x) -> bool:
  return isinstance(x, tuple) and all(isinstance(d, int) for d in x)


def init_subtree(rng: jax.Array, shapes: Any, prefix: str = "") -> Any:
  """Random float32 leaves for the subtree `prefix` of `param_shapes`, following
  `vitprune.model.init_rule` (the rules of `init_params`), drawn with `jax.random`."""
  leaves, treedef = jax.tree.flatten_with_path(shapes, is_leaf=_is_shape)
  keys = jax.random.split(rng, max(len(leaves), 1))
  out = []
  for key, (path, shape) in zip(keys, leaves):
    named = [str(p.key) for p in path if hasattr(p, "key")]
    name = named[-1] if named else prefix
    parent = named[-2] if len(named) > 1 else (prefix if named else "")
    kind, a = init_rule(name, parent, shape)
    if kind == "const":
      v = jnp.full(shape, a)
    elif kind == "fan_in_uniform":
      v = jax.random.uniform(key, shape, minval=-1.0, maxval=1.0) / math.sqrt(a)
    else:              # clipped, as init_params (a truncated normal was another law)
      v = jnp.clip(a * jax.random.normal(key, shape), -2 * a, 2 * a)
    out.append(v.astype(jnp.float32))
  return jax.tree.unflatten(treedef, out)


class VisionTransformer(nn.Module):
  """`vitprune.model.forward` as a Flax module: images [B, H, W, C] -> logits [B, K].

  Attributes mirror `forward`'s static arguments (all hashable, so `jax.jit(module.apply)`
  compiles one graph per configuration).
  """
  cfg: ViTConfig
  schedule: Optional[Schedule] = None
  reducer: Any = None
  dtype: str = "float32"
  precision: str = "highest"

  @nn.compact
  def __call__(self, images: jax.Array, features: bool = False) -> jax.Array:
    if not self.is_mutable_collection("params"):  # the whole tree, as `forward` checks it
      check_params(self.cfg, self.variables.get("params", {}))   # (entries unread: dropped)
    # (not when params may be made: init, or apply(mutable=['params']) making a new head)
    params = {name: self.param(name, init_subtree, shapes, name)
              for name, shapes in param_shapes(self.cfg).items()}
    static = dict(cfg=self.cfg, schedule=self.schedule, reducer=self.reducer, dtype=self.dtype,
                  precision=self.precision)
    check_switch("features", features)        # ('no' is truthy: it returned features)
    if features:   # tokens after the final norm [B, n, C], float32 (timm's forward_features)
      return forward_features(params, images, **static).astype(jnp.float32)
    return forward(params, images, **static)
