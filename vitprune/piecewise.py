"""A schedule's forward as separately compiled pieces, cached across schedules.

`model.forward` compiles one whole graph per static schedule: evaluating K schedules of a
D-block model costs K whole-graph compiles (the sensitivity table: D x counts graphs). Every
block has the same architecture and only its weights differ, so a block is one function of
(block weights, tokens [B, n_in, C]) for each (n_in, n_out): `PiecewiseForward` compiles the
embedding (per entry count), one block per (n_in, n_out) (per layer too when the reducer's output
depends on it, `TokenReducer.layer_dependent`) and the head (per final count), once each, and
runs any schedule by chaining them. The sensitivity table then needs about 2 x counts block
compiles instead of D x counts graphs, and a new multi-layer schedule only the pieces it adds.

The pieces call the model's own functions (`embed`, `block`, `final_norm`, `forward_head`) with
the same dtype and matmul precision, so a schedule computes what `jitted_forward` computes; only
XLA's fusion across block boundaries differs (logits equal to float32 rounding; tested). For
measuring accuracy only: latency is always measured on the whole compiled graph.
"""
from __future__ import annotations

import functools
from typing import Any, Dict, Hashable, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp

from vitprune import model
from vitprune.config import ViTConfig
from vitprune.model import Params
from vitprune.profile import timing
from vitprune.reduce.base import TokenReducer
from vitprune.schedule import Schedule, check_schedule


def _embed_piece(params: Params, images: jax.Array, *, cfg: ViTConfig, num_keep: int,
                 reducer: Optional[TokenReducer], dt, matmul: str) -> jax.Array:
  """images [B, S, S, C] -> tokens [B, num_keep, D] (tokens dropped after the embedding)."""
  with jax.default_matmul_precision(matmul):
    x = model.embed(params, images.astype(dt), cfg)
    if num_keep < x.shape[1]:
      x = reducer.reduce_embedding(x, num_keep=num_keep, num_prefix=cfg.num_prefix_tokens)
    return x


def _block_piece(block_params: Params, x: jax.Array, size: Optional[jax.Array], *,
                 cfg: ViTConfig, num_keep: int, reducer: Optional[TokenReducer], layer: int,
                 matmul: str) -> Tuple[jax.Array, Optional[jax.Array]]:
  """x [B, n_in, D], size [B, n_in] or None -> ([B, num_keep, D], sizes or None)."""
  with jax.default_matmul_precision(matmul):
    return model.block(block_params, x, size, cfg=cfg, num_keep=num_keep, reducer=reducer,
                       layer=layer)


def _head_piece(params: Params, x: jax.Array, *, cfg: ViTConfig, matmul: str) -> jax.Array:
  """Final tokens [B, n, D] -> float32 logits [B, K] (final norm, pooling, classifier)."""
  with jax.default_matmul_precision(matmul):
    return model.forward_head(params, model.final_norm(params, x, cfg), cfg=cfg)


class PiecewiseForward:
  """`logits = pf(schedule, images)` for any schedule of one reducer, from cached pieces.

  Args:
    cfg, params: the model (the params' placement is kept: pass them already on the device /
      replicated over a mesh).
    reducer: the token reducer of every schedule (None: only the full schedule).
    dtype, precision: as `model.forward`.
    token_sharding: (ndim -> sharding) for token / size arrays when the images are sharded over
      a data mesh (None: one device).
  """

  def __init__(self, cfg: ViTConfig, params: Params, reducer: Optional[TokenReducer], *,
               dtype: str = "float32", precision: str = "highest", token_sharding=None):
    if dtype not in model.DTYPES:
      raise ValueError(f"dtype must be one of {sorted(model.DTYPES)}, got {dtype!r}")
    if precision not in model.PRECISIONS:
      raise ValueError(f"precision must be one of {model.PRECISIONS}, got {precision!r}")
    self.cfg, self.params, self.reducer = cfg, params, reducer
    self._dt = model.DTYPES[dtype]
    self._precision = precision
    self._matmul = model.matmul_precision(self._dt, precision)
    self._token_sharding = token_sharding
    self._compiled: Dict[Hashable, Any] = {}

  def serves(self, params: Params, dtype: str, precision: str) -> bool:
    """Whether these pieces run `params` (the same tree object) at `dtype` and `precision`."""
    return (params is self.params and self._dt == model.DTYPES.get(dtype) and
            self._precision == precision)

  @property
  def num_compiled(self) -> int:
    """How many distinct pieces have been compiled so far."""
    return len(self._compiled)

  # -- which pieces a schedule needs ------------------------------------------------------------

  def _block_layer(self, layer: int, reduces: bool) -> int:
    """The layer a block piece is keyed and traced with: its own when the reducer's output
    depends on it, else 0 (the layer then only names the block in error messages)."""
    return layer if reduces and self.reducer is not None and self.reducer.layer_dependent else 0

  def _pieces(self, schedule: Schedule, batch: int):
    """[(key, fn, args for lowering)] of every piece `schedule` runs, in order."""
    cfg, counts = self.cfg, schedule.counts
    tokens = lambda n: self._struct((batch, n, cfg.embed_dim), self._dt)
    images = self._struct((batch, cfg.img_size, cfg.img_size, cfg.in_chans), jnp.float32)
    out = [(("embed", counts[0]),
            functools.partial(_embed_piece, cfg=cfg, num_keep=counts[0], reducer=self.reducer,
                              dt=self._dt, matmul=self._matmul), (self.params, images))]
    sized = False
    for layer, block_params in enumerate(self.params["blocks"]):
      n_in, n_out = counts[layer], counts[layer + 1]
      reduces = n_out < n_in
      key_layer = self._block_layer(layer, reduces)
      size = self._struct((batch, n_in), jnp.float32) if sized else None
      out.append((("block", n_in, n_out, sized, key_layer),
                  functools.partial(_block_piece, cfg=cfg, num_keep=n_out, reducer=self.reducer,
                                    layer=key_layer, matmul=self._matmul),
                  (block_params, tokens(n_in), size)))
      sized = sized or (reduces and self.reducer.tracks_size)
    out.append((("head", counts[-1]), functools.partial(_head_piece, cfg=cfg,
                                                        matmul=self._matmul),
                (self.params, tokens(counts[-1]))))
    return out

  def _struct(self, shape, dtype):
    sharding = self._token_sharding(len(shape)) if self._token_sharding else None
    return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)

  # -- compiling and running --------------------------------------------------------------------

  def compile(self, schedules: Sequence[Schedule], batch: int, threads: int = 1) -> int:
    """Compiles every piece `schedules` need at batch size `batch` that is not compiled yet,
    `threads` at a time -> how many were compiled."""
    jobs = {}
    for s in schedules:
      if self.reducer is None and (s.counts[0] < self.cfg.num_tokens or s.reduction_layers):
        raise ValueError(f"schedule {s.counts} reduces tokens but no reducer was given")
      check_schedule(self.cfg, s, self.reducer)
      for key, fn, args in self._pieces(s, batch):
        if (key, batch) not in self._compiled and (key, batch) not in jobs:
          jobs[(key, batch)] = (fn, args)
    for key, (compiled, _) in timing.compile_many(jobs, threads=threads).items():
      self._compiled[key] = compiled
    return len(jobs)

  def __call__(self, schedule: Schedule, images: jax.Array) -> jax.Array:
    """images [B, S, S, C] -> float32 logits [B, K] of `schedule` (compiles missing pieces)."""
    batch = images.shape[0]
    self.compile([schedule], batch)
    pieces = self._pieces(schedule, batch)
    x = self._compiled[(pieces[0][0], batch)](self.params, images)
    size = None
    for layer, (key, _, _) in enumerate(pieces[1:-1]):
      x, size = self._compiled[(key, batch)](self.params["blocks"][layer], x, size)
    return self._compiled[(pieces[-1][0], batch)](self.params, x)
