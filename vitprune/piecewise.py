"""A schedule's forward as separately compiled pieces, cached across schedules.

`model.forward` compiles one whole graph per static schedule: evaluating K schedules of a
D-block model costs K whole-graph compiles (the sensitivity table: D x counts graphs). Every
block has the same architecture and only its weights differ, so a block is one function of
(block weights, tokens [B, n_in, C]) for each (n_in, n_out): `PiecewiseForward` compiles the
embedding (per entry count), one block per (n_in, n_out) (per layer too when the reducer's output
depends on it, `TokenReducer.layer_dependent`) and the head (per final count), once each, and
runs any schedule by chaining them. The sensitivity table then needs about 3 x counts small
compiles instead of D x counts graphs, and a new multi-layer schedule only the pieces it adds.
`run_many` runs many schedules in the order of their counts, computing the embedding and every
block they share before their counts differ once (the table's single reductions: about half
the blocks).

The pieces (`embed_fn`, `block_fn`, `head_fn`, also the profiler's isolated components) call
the model's own functions with the same dtype and matmul precision, so a schedule computes what
`jitted_forward` computes; only XLA's fusion across block boundaries differs (logits equal up to
float rounding; bit-identical on the CPU in the tests, but a near-tie could flip an argmax). For
measuring accuracy only: latency, and the pipeline's final verification, use the whole compiled
graph (`WholeGraphs`: the same interface, one piece per schedule).
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Hashable, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp

from vitprune import model
from vitprune.config import ViTConfig
from vitprune.model import Params
from vitprune.profile import timing
from vitprune.reduce.base import TokenReducer
from vitprune.schedule import Schedule, check_reducer_given, check_schedule, full_schedule

def head_params(params: Params) -> Params:
  """The part of the parameter tree `head_fn` reads (final norm and classifier heads)."""
  return {k: params[k] for k in model.HEAD_KEYS if k in params}


def embed_fn(cfg: ViTConfig, *, dtype: str = "float32", precision: str = "highest",
             num_keep: Optional[int] = None, reducer: Optional[TokenReducer] = None
             ) -> Callable[[Params, jax.Array], jax.Array]:
  """(params, images [B, S, S, C]) -> tokens [B, n, D] in `dtype`; with `num_keep` below the
  token count, `reducer.reduce_embedding` drops tokens right after the embedding."""
  dt = model.DTYPES[dtype]
  matmul = model.matmul_precision(dt, precision)

  def fn(params, images):
    with jax.default_matmul_precision(matmul):
      x = model.embed(params, images.astype(dt), cfg)
      if num_keep is not None and num_keep < x.shape[1]:
        x = reducer.reduce_embedding(x, num_keep=num_keep, num_prefix=cfg.num_prefix_tokens)
      return x
  return fn


def block_fn(cfg: ViTConfig, *, dtype: str = "float32", precision: str = "highest",
             num_keep: Optional[int] = None, reducer: Optional[TokenReducer] = None,
             layer: int = 0) -> Callable[..., Tuple[jax.Array, Optional[jax.Array]]]:
  """(block params, x [B, n_in, D], size [B, n_in] or None) -> ([B, num_keep, D], sizes or
  None): one block (`model.block`), reducing to `num_keep` (None: keeps all n_in tokens)."""
  matmul = model.matmul_precision(model.DTYPES[dtype], precision)

  def fn(block_params, x, size=None):
    with jax.default_matmul_precision(matmul):
      return model.block(block_params, x, size, cfg=cfg,
                         num_keep=x.shape[1] if num_keep is None else num_keep,
                         reducer=reducer, layer=layer)
  return fn


def head_fn(cfg: ViTConfig, *, dtype: str = "float32", precision: str = "highest"
            ) -> Callable[[Params, jax.Array], jax.Array]:
  """(`head_params(params)`, final tokens [B, n, D]) -> float32 logits [B, K]: final norm,
  pooling and classifier (`model.final_norm` + `model.forward_head`)."""
  matmul = model.matmul_precision(model.DTYPES[dtype], precision)

  def fn(hp, x):
    with jax.default_matmul_precision(matmul):
      return model.forward_head(hp, model.final_norm(hp, x, cfg), cfg=cfg)
  return fn


def _images_struct(images: Any) -> Tuple[jax.ShapeDtypeStruct, Tuple[int, str]]:
  """(the images' shape, dtype and sharding to lower with; (batch, dtype) for the cache keys)."""
  return (jax.ShapeDtypeStruct(images.shape, images.dtype,
                               sharding=getattr(images, "sharding", None)),
          (images.shape[0], str(images.dtype)))


def _layer_dependent(reducer: Optional[TokenReducer]) -> bool:
  # A reducer that does not declare it is assumed to depend on the layer (safe: no sharing).
  return reducer is not None and bool(getattr(reducer, "layer_dependent", True))


class PiecewiseForward:
  """`logits = pf(schedule, images)` for any schedule of one reducer, from cached pieces.

  Args:
    cfg, params: the model; `params` as the caller holds them.
    reducer: the token reducer of every schedule (None: only schedules that reduce nothing).
    dtype, precision: as `model.forward`.
    placed: `params` placed for the computation (e.g. replicated over a data mesh; default
      `params`). `token_sharding`: ndim -> the sharding of batch-major arrays (tokens, sizes)
      when the images are sharded over a data mesh (None: one device).
  """

  def __init__(self, cfg: ViTConfig, params: Params, reducer: Optional[TokenReducer], *,
               dtype: str = "float32", precision: str = "highest", placed: Params = None,
               token_sharding: Optional[Callable[[int], Any]] = None):
    model.check_options(dtype, precision)
    model.check_params(cfg, params)      # another model's tree would run piece by piece
    self.cfg, self.params, self.reducer = cfg, params, reducer
    self._dtype, self._precision = dtype, precision
    self._placed = params if placed is None else placed
    self._token_sharding = token_sharding
    self._compiled: Dict[Hashable, Any] = {}
    # One compiled block serves every block whose parameters have its leaves' dtypes: blocks
    # of other dtypes (one bfloat16 block in float32 parameters) get their own pieces.
    signatures = [tuple(str(jnp.result_type(leaf)) for leaf in jax.tree.leaves(b))
                  for b in params["blocks"]]
    self._block_dtypes = [signatures.index(sig) for sig in signatures]   # (first such block)

  def serves(self, cfg: ViTConfig, params: Params, dtype: str, precision: str) -> bool:
    """Whether these pieces run model `cfg` with `params` (the same tree object the caller
    passed) at `dtype` and `precision` (another config, e.g. its norm_eps, is another graph)."""
    return (params is self.params and cfg == self.cfg
            and (dtype, precision) == (self._dtype, self._precision))

  @property
  def num_compiled(self) -> int:
    """How many distinct pieces have been compiled so far."""
    return len(self._compiled)

  # -- which pieces a schedule needs ------------------------------------------------------------

  def _pieces(self, schedule: Schedule, images: Any):
    """[(key, fn, args for lowering)] of every piece `schedule` runs on `images` (an array or
    a ShapeDtypeStruct [B, S, S, C]), in order. Keys include the images' batch and dtype."""
    cfg, counts, red = self.cfg, schedule.counts, self.reducer
    batch = images.shape[0]
    opts = dict(dtype=self._dtype, precision=self._precision)
    dt = model.DTYPES[self._dtype]
    images, where = _images_struct(images)
    out = [(("embed", counts[0]) + where,
            embed_fn(cfg, num_keep=counts[0], reducer=red, **opts), (self._placed, images))]
    sized = False
    for layer, block_params in enumerate(self._placed["blocks"]):
      n_in, n_out = counts[layer], counts[layer + 1]
      reduces = n_out < n_in
      # The layer only matters to a reducing block of a layer-dependent reducer; elsewhere it
      # is 0, so one compiled block serves every layer.
      key_layer = layer if reduces and _layer_dependent(red) else 0
      size = self._struct((batch, n_in), jnp.float32) if sized else None
      out.append((("block", n_in, n_out, sized, key_layer, self._block_dtypes[layer]) + where,
                  block_fn(cfg, num_keep=n_out, reducer=red if reduces else None,
                           layer=key_layer, **opts),
                  (block_params, self._struct((batch, n_in, cfg.embed_dim), dt), size)))
      sized = sized or (reduces and red.tracks_size)
    out.append((("head", counts[-1]) + where, head_fn(cfg, **opts),
                (head_params(self._placed), self._struct((batch, counts[-1], cfg.embed_dim), dt))))
    return out

  def _struct(self, shape, dtype):
    sharding = self._token_sharding(len(shape)) if self._token_sharding else None
    return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)

  # -- compiling and running --------------------------------------------------------------------

  def compile(self, schedules: Sequence[Schedule], images: Any, threads: int = 1) -> int:
    """Compiles every piece `schedules` need for `images` (an array or ShapeDtypeStruct
    [B, S, S, C]: its shape, dtype and sharding) that is not compiled yet, `threads` at a
    time -> how many were compiled. Raises ValueError for invalid schedules or images."""
    model.check_inputs(self.cfg, images, self._dtype, self._precision)
    jobs = {}
    for s in schedules:
      s = check_schedule(self.cfg, s, self.reducer)       # None: the unpruned schedule
      check_reducer_given(self.cfg, s, self.reducer)
      for key, fn, args in self._pieces(s, images):
        if key not in self._compiled and key not in jobs:
          jobs[key] = (fn, args)
    for key, (compiled, _) in timing.compile_many(jobs, threads=threads).items():
      self._compiled[key] = compiled
    return len(jobs)

  def __call__(self, schedule: Schedule, images: jax.Array) -> jax.Array:
    """images [B, S, S, C] -> float32 logits [B, K] of `schedule` (None: unpruned; compiles
    missing pieces)."""
    schedule = full_schedule(self.cfg) if schedule is None else schedule
    self.compile([schedule], images)                           # checks it
    (embed_key, _, _), *blocks, (head_key, _, _) = self._pieces(schedule, images)
    x, size = self._compiled[embed_key](self._placed, images), None
    for block_params, (key, _, _) in zip(self._placed["blocks"], blocks):
      x, size = self._compiled[key](block_params, x, size)
    return self._compiled[head_key](head_params(self._placed), x)

  def run_many(self, schedules: Sequence[Optional[Schedule]], images: jax.Array
               ) -> List[jax.Array]:
    """images [B, S, S, C] -> float32 logits [B, K] of each schedule (None: unpruned), in the
    order given, equal to calling this object on each (the same pieces on the same inputs).

    The schedules run in the order of their counts, so what consecutive ones share is computed
    once: the embedding, and every block before their counts first differ (the tokens after
    block l depend only on counts[:l + 2]). The sensitivity table's D x K single reductions
    run about (D + 1) / 2 blocks each instead of D. Held at once: the tokens [B, n, D] (and
    ToMe's sizes) after the embedding and after each block of the current schedule. Each
    schedule's logits are waited for before the next one starts."""
    schedules = [full_schedule(self.cfg) if s is None else s for s in schedules]
    self.compile(schedules, images)                            # checks them
    out: List[Optional[jax.Array]] = [None] * len(schedules)
    held_counts: Tuple[int, ...] = ()
    held: List[Tuple[jax.Array, Optional[jax.Array]]] = []   # [j]: after embed + j blocks
    for i in sorted(range(len(schedules)), key=lambda i: schedules[i].counts):
      counts = schedules[i].counts
      shared = 0                         # states 0..shared-1 hold for these counts too
      while (shared < len(held) and shared < len(held_counts)
             and counts[shared] == held_counts[shared]):
        shared += 1
      # state j (after j blocks) depends on counts[:j + 1]: equal prefixes of length j + 1
      del held[shared:]
      (embed_key, _, _), *blocks, (head_key, _, _) = self._pieces(schedules[i], images)
      if not held:
        held.append((self._compiled[embed_key](self._placed, images), None))
      for layer in range(len(held) - 1, len(blocks)):
        x, size = held[layer]
        held.append(self._compiled[blocks[layer][0]](self._placed["blocks"][layer], x, size))
      held_counts = counts
      out[i] = self._compiled[head_key](head_params(self._placed), held[-1][0])
      # One schedule at a time: with the images sharded over devices, the reducing blocks
      # all-gather across them, and many such pieces queued at once hung the CPU runtime's
      # cross-device rendezvous (XLA aborted the process after 40 s).
      out[i].block_until_ready()
    return out


class WholeGraphs(PiecewiseForward):
  """The same interface with one piece per schedule: its whole compiled graph (`model.forward`,
  what is timed and deployed; the pipeline's verification evaluates it)."""

  def _pieces(self, schedule: Schedule, images: Any):
    images, where = _images_struct(images)
    return [(("graph", schedule.counts) + where,
             functools.partial(model.forward, cfg=self.cfg, schedule=schedule,
                               reducer=self.reducer, dtype=self._dtype,
                               precision=self._precision),
             (self._placed, images))]

  def __call__(self, schedule: Schedule, images: jax.Array) -> jax.Array:
    """images [B, S, S, C] -> float32 logits [B, K] of `schedule` (None: unpruned; compiles it
    if missing)."""
    schedule = full_schedule(self.cfg) if schedule is None else schedule
    self.compile([schedule], images)                           # checks it
    (key, _, _), = self._pieces(schedule, images)
    return self._compiled[key](self._placed, images)

  def run_many(self, schedules: Sequence[Optional[Schedule]], images: jax.Array
               ) -> List[jax.Array]:
    """images [B, S, S, C] -> float32 logits [B, K] of each schedule's whole graph, in order
    (a whole graph shares nothing with another)."""
    return [self(s, images) for s in schedules]
