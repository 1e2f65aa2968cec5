"""vitprune.piecewise: a schedule run as cached compiled pieces computes the whole graph's logits,
and each distinct piece is compiled once across schedules."""
import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import visible_params
from vitprune import estimate
from vitprune.model import init_params, jitted_forward
from vitprune.piecewise import PiecewiseForward, WholeGraphs
from vitprune.reduce import KeepFirst
from vitprune.reduce.methods import list_methods, make_reducer
from vitprune.registry import get_config
from vitprune.schedule import Schedule, layer_counts

CFG = get_config("test_tiny_vit")          # 17 tokens, prefix 1, depth 2
REG = get_config("test_tiny_dinov2_reg")   # 19 tokens, prefix 3 (cls + 2 registers), depth 2
REDUCERS = [make_reducer(m) for m in list_methods()] + [KeepFirst()]


def _images(cfg, b=3, seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(
      size=(b, cfg.img_size, cfg.img_size, cfg.in_chans)), jnp.float32)


def _schedules(cfg, red):
  """Full, one reduction per block, two reductions, and an embedding drop where supported."""
  n, p = cfg.num_tokens, cfg.num_prefix_tokens
  out = [(n,) * (cfg.depth + 1)]
  for layer in range(cfg.depth):
    out.append(layer_counts(n, n - red.max_remove(n, p), cfg.depth, layer))
  first = n - red.max_remove(n, p) // 2
  out.append((n, first, first - red.max_remove(first, p)))
  if red.supports_embedding:
    out.append((p + 5, p + 5, p + 2))
    out.append((n - 1,) * (cfg.depth + 1))       # one token dropped after the embedding
  return [Schedule(c) for c in out]


@pytest.mark.parametrize("cfg", [CFG, REG], ids=lambda c: c.name)
@pytest.mark.parametrize("red", REDUCERS, ids=lambda r: r.name)
def test_logits_equal_the_whole_graph(red, cfg):
  params, x = visible_params(cfg, seed=2), _images(cfg)
  pf = PiecewiseForward(cfg, params, red)
  for s in _schedules(cfg, red):
    want = np.asarray(jitted_forward(params, x, cfg=cfg, schedule=s, reducer=red))
    got = np.asarray(pf(s, x))
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=str(s.counts))


def test_bfloat16_follows_the_model():
  """The pieces compute in bfloat16 like the whole bfloat16 graph: their logits are bfloat16
  values (the float32 graph's are not) within bfloat16 rounding of the whole graph's."""
  params, x, red = init_params(CFG, seed=2), _images(CFG), make_reducer("pomt")
  s = Schedule((17, 17, 9))
  pf = PiecewiseForward(CFG, params, red, dtype="bfloat16")
  got = np.asarray(pf(s, x))
  bf16 = np.asarray(jitted_forward(params, x, cfg=CFG, schedule=s, reducer=red,
                                   dtype="bfloat16"))
  f32 = np.asarray(jitted_forward(params, x, cfg=CFG, schedule=s, reducer=red))
  representable = lambda v: np.array_equal(v, np.asarray(jnp.asarray(v, jnp.bfloat16),
                                                          np.float32))
  assert representable(got) and representable(bf16) and not representable(f32)
  np.testing.assert_allclose(got, bf16, rtol=0, atol=2e-3)


def test_blocks_stored_in_another_dtype_get_their_own_pieces():
  """One bfloat16 block in float32 parameters (the whole graph runs them): block 1 reused block
  0's compiled piece and JAX refused its float32 arguments ('Argument types differ from the
  types for which this computation was compiled')."""
  import jax  # pylint: disable=g-import-not-at-top
  params, x, red = init_params(CFG, seed=2), _images(CFG), make_reducer("pomt")
  mixed = dict(params, blocks=[jax.tree.map(lambda a: a.astype(jnp.bfloat16),
                                            params["blocks"][0])] + list(params["blocks"][1:]))
  pf = PiecewiseForward(CFG, mixed, red)
  for s in (Schedule((17, 17, 17)), Schedule((17, 9, 9))):
    want = np.asarray(jitted_forward(mixed, x, cfg=CFG, schedule=s, reducer=red))
    np.testing.assert_allclose(np.asarray(pf(s, x)), want, rtol=1e-6, atol=1e-6)
  uniform = PiecewiseForward(CFG, params, red)       # one dtype: one block piece serves both
  uniform.compile([Schedule((17, 17, 17))], x)
  assert uniform.num_compiled == 3 and pf.num_compiled == 4 + 3   # (17,17,17) + (17,9,9)


def test_sensitivity_table_compiles_each_piece_once_whatever_the_depth():
  """D x K single-reduction schedules of a layer-independent reducer: embed(N), block(N, N),
  K blocks N -> n, K blocks n -> n and K heads: 3K + 2 pieces, not D x K graphs."""
  cfg = get_config("test_tiny_vit")
  params, x, red = init_params(cfg, seed=1), _images(cfg, b=2), make_reducer("pomt")
  counts = [13, 9, 5]
  table = [Schedule(layer_counts(17, n, cfg.depth, layer))
           for layer in range(cfg.depth) for n in counts]
  pf = PiecewiseForward(cfg, params, red)
  assert pf.compile(table, x, threads=2) == 3 * len(counts) + 2
  assert pf.num_compiled == 3 * len(counts) + 2
  first = [np.asarray(pf(s, x)) for s in table]
  assert pf.compile(table, x) == 0 and pf.num_compiled == 3 * len(counts) + 2
  again = [np.asarray(pf(s, x)) for s in reversed(table)]
  for a, b in zip(first, reversed(again)):
    np.testing.assert_array_equal(a, b)
  # A new multi-layer schedule compiles only the pieces it adds (block 13 -> 9).
  assert pf.compile([Schedule((17, 13, 9))], x) == 1
  # Another batch size, or another image dtype, is another set of pieces.
  assert pf.compile([Schedule((17, 13, 9))], _images(cfg, b=3)) == 4
  x16 = jnp.asarray(x, jnp.float16)
  assert pf.compile([Schedule((17, 13, 9))], x16) == 4
  np.testing.assert_allclose(
      np.asarray(pf(Schedule((17, 13, 9)), x16)),
      np.asarray(jitted_forward(params, x16, cfg=cfg, schedule=Schedule((17, 13, 9)),
                                reducer=red)), rtol=1e-6, atol=1e-6)


def test_a_reducer_that_does_not_declare_layer_dependence_gets_a_block_per_layer():
  @dataclasses.dataclass(frozen=True)
  class Undeclared:                       # a third-party reducer written before the flag
    name = "undeclared"
    needs_attention = False
    tracks_size = False
    supports_embedding = False

    def max_remove(self, n, p):
      return n - p - 1

    def reduce(self, x, size, stats, *, num_keep, num_prefix, layer):
      return x[:, :num_keep] * (1.0 + layer), size

  params, x = init_params(CFG, seed=1), _images(CFG, b=2)
  red = Undeclared()
  pf = PiecewiseForward(CFG, params, red)
  for s in (Schedule((17, 9, 9)), Schedule((17, 17, 9))):
    np.testing.assert_allclose(
        np.asarray(pf(s, x)), np.asarray(jitted_forward(params, x, cfg=CFG, schedule=s,
                                                        reducer=red)), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("nested,pieces", [(False, 6), (True, 5)])
def test_layer_dependent_reducers_get_a_block_per_layer(nested, pieces):
  """Per-layer random drop keeps a different fixed subset per layer: its reducing blocks are
  keyed by layer (the same counts at two layers are two pieces); its plain blocks are shared.
  Nested random drop keeps one subset per count whatever the layer: one piece serves both."""
  params, x = init_params(CFG, seed=1), _images(CFG, b=2)
  red = make_reducer("random", seed=3, nested=nested)
  assert red.layer_dependent == (not nested) and not make_reducer("pomt").layer_dependent
  pf = PiecewiseForward(CFG, params, red)
  a, b = Schedule((17, 9, 9)), Schedule((17, 17, 9))
  pf.compile([a, b], x)
  # embed, head(9), block 9 -> 9, block 17 -> 17, block 17 -> 9 (per layer: at 0 and at 1)
  assert pf.num_compiled == pieces
  for s in (a, b):
    np.testing.assert_array_equal(
        np.asarray(pf(s, x)), np.asarray(jitted_forward(params, x, cfg=CFG, schedule=s,
                                                        reducer=red)))


def test_keep_first_shares_its_reducing_block_across_layers():
  """KeepFirst's slice is the same at every layer (`layer_dependent` False): the reducing block
  17 -> 9 at layer 0 and at layer 1 is one piece (5, not the 6 of a per-layer reducer), and
  both schedules still give the whole graph's logits (a mutation audit: declared True, every
  reducing block compiled once per layer and no test noticed)."""
  params, x, red = init_params(CFG, seed=1), _images(CFG, b=2), KeepFirst()
  assert red.layer_dependent is False
  pf = PiecewiseForward(CFG, params, red)
  a, b = Schedule((17, 9, 9)), Schedule((17, 17, 9))
  pf.compile([a, b], x)
  assert pf.num_compiled == 5      # embed, head(9), blocks 9 -> 9, 17 -> 17 and 17 -> 9
  for s in (a, b):
    np.testing.assert_array_equal(
        np.asarray(pf(s, x)), np.asarray(jitted_forward(params, x, cfg=CFG, schedule=s,
                                                        reducer=red)))


def test_deeper_models_carry_sizes_on_and_share_plain_blocks_across_layers():
  """The tests above run 2 blocks, so no block came two after a reduction: ToMe's token sizes
  must reach every later block (a piece compiled without them failed on vit_digits), and a
  plain block of a layer-dependent reducer is one piece at any layer (mutation audit)."""
  deep = CFG.replace(depth=4)
  params, x = init_params(deep, seed=1), _images(deep, b=2)
  tome = make_reducer("tome")
  s = Schedule((17, 9, 9, 9, 9))
  np.testing.assert_allclose(
      np.asarray(PiecewiseForward(deep, params, tome)(s, x)),
      np.asarray(jitted_forward(params, x, cfg=deep, schedule=s, reducer=tome)),
      rtol=1e-6, atol=1e-6)
  per_layer = make_reducer("random", seed=3, nested=False)
  pf = PiecewiseForward(deep, params, per_layer)
  s = Schedule((17, 17, 17, 9, 9))
  pf.compile([s], x)
  assert pf.num_compiled == 5      # embed, block 17 -> 17 (layers 0 and 1), 17 -> 9, 9 -> 9, head
  np.testing.assert_array_equal(
      np.asarray(pf(s, x)),
      np.asarray(jitted_forward(params, x, cfg=deep, schedule=s, reducer=per_layer)))


def test_bad_input_is_refused():
  params = init_params(CFG, seed=1)
  with pytest.raises(ValueError, match="dtype must be one of"):
    PiecewiseForward(CFG, params, None, dtype="float16")
  with pytest.raises(ValueError, match="precision must be one of"):
    PiecewiseForward(CFG, params, None, precision="fast")
  with pytest.raises(ValueError, match="reduces tokens but no reducer was given"):
    PiecewiseForward(CFG, params, None).compile([Schedule((17, 9, 9))], _images(CFG))
  pf = PiecewiseForward(CFG, params, make_reducer("pomt"))
  with pytest.raises(ValueError, match="drops tokens after the embedding, which pomt cannot do"):
    pf(Schedule((9, 9, 9)), _images(CFG))
  with pytest.raises(ValueError, match="must never increase"):
    pf.compile([Schedule((17, 17, 18))], _images(CFG))
  with pytest.raises(ValueError, match=r"expects images \[B, 32, 32, 3\] \(NHWC\)"):
    pf(Schedule((17, 17, 9)), jnp.zeros((2, 16, 16, 3)))


def test_the_pieces_read_the_head_as_they_read_the_blocks():
  """The head was copied when the pieces were built, the blocks read at each call: a tree
  changed in place ran its new blocks with its old head (finite, wrong logits)."""
  params = init_params(CFG, seed=1)
  x = _images(CFG, b=2)
  pf = PiecewiseForward(CFG, params, make_reducer("pomt"))
  pf(None, x)
  params["head"] = {"kernel": params["head"]["kernel"] * 2, "bias": params["head"]["bias"]}
  params["blocks"][1] = init_params(CFG, seed=3)["blocks"][1]
  want = np.asarray(jitted_forward(params, x, cfg=CFG))
  np.testing.assert_allclose(np.asarray(pf(None, x)), want, rtol=1e-5, atol=1e-6)


def test_pieces_serve_only_their_own_dtype_and_precision():
  params = init_params(CFG, seed=1)
  pf = PiecewiseForward(CFG, params, make_reducer("pomt"))          # float32, 'highest'
  assert pf.serves(CFG, params, "float32", "highest")
  assert not pf.serves(CFG, params, "float32", "default")
  assert not pf.serves(CFG, params, "bfloat16", "highest")
  assert not pf.serves(CFG, init_params(CFG, seed=1), "float32", "highest")  # another tree
  assert not pf.serves(dataclasses.replace(CFG, norm_eps=1e-5), params, "float32", "highest")


def test_evaluate_reuses_the_callers_pieces_and_rebuilds_for_other_params():
  params, other = init_params(CFG, seed=1), init_params(CFG, seed=5)
  x = np.asarray(_images(CFG, b=4))
  y = np.arange(4, dtype=np.int32)
  batches = lambda: [(x, y, np.arange(4))]
  red = make_reducer("topk")
  pts = [estimate.EvalPoint(Schedule((17, 9, 9)), red, 9, 0)]
  pieces = {}
  first = estimate.evaluate(CFG, params, batches(), pts, labelled=True, pieces=pieces)
  built = {k: v.num_compiled for k, v in pieces.items()}
  assert set(built) == {(None, None), (red, None)}        # (reducer, mesh): one device here
  same = estimate.evaluate(CFG, params, batches(), pts, labelled=True, pieces=pieces)
  assert {k: v.num_compiled for k, v in pieces.items()} == built and same == first
  fresh = estimate.evaluate(CFG, other, batches(), pts, labelled=True)
  swapped = estimate.evaluate(CFG, other, batches(), pts, labelled=True, pieces=pieces)
  assert swapped == fresh and all(pf.params is other for pf in pieces.values())


def test_whole_graphs_option_runs_the_deployed_graph_with_the_same_result():
  params = init_params(CFG, seed=1)
  x = np.asarray(_images(CFG, b=4))
  y = np.arange(4, dtype=np.int32)
  red = make_reducer("tome")
  pts = estimate.sensitivity_points(CFG, [9, 13], [0, 1], red)
  cache = {}
  whole = estimate.evaluate(CFG, params, [(x, y, np.arange(4))], pts, labelled=True,
                            whole_graphs=True, pieces=cache)
  assert all(type(v) is WholeGraphs for v in cache.values())
  pieces = estimate.evaluate(CFG, params, [(x, y, np.arange(4))], pts, labelled=True,
                             pieces=cache)
  assert all(type(v) is PiecewiseForward for v in cache.values())   # replaced: other kind
  for a, b in zip(whole.points, pieces.points):
    assert (a.num_examples, a.correct, a.agree) == (b.num_examples, b.correct, b.agree)
    np.testing.assert_allclose(a.kl_sum, b.kl_sum, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("kind", [PiecewiseForward, WholeGraphs])
def test_pieces_refuse_another_models_params_and_take_none_as_unpruned(kind):
  """Another config's tree (here one distillation token more, which a random drop would treat as
  a patch) is refused at construction, as `forward` refuses it; schedule None is the unpruned
  graph, as in `forward`."""
  other = init_params(get_config("test_tiny_distilled"), 1)
  with pytest.raises(ValueError, match="parameters do not match test_tiny_vit"):
    kind(CFG, other, make_reducer("random"))
  params, x = init_params(CFG, 0), _images(CFG)
  pf = kind(CFG, params, make_reducer("random"))
  np.testing.assert_array_equal(np.asarray(pf(None, x)),
                                np.asarray(pf(Schedule((CFG.num_tokens,) * 3), x)))


@pytest.mark.parametrize("cfg", [CFG, REG], ids=lambda c: c.name)
@pytest.mark.parametrize("red", REDUCERS, ids=lambda r: r.name)
def test_run_many_equals_each_schedule_run_alone_in_the_order_given(red, cfg):
  """Schedules sharing a prefix run it once, in the order of their counts; the logits come back
  in the order given (duplicates and None included), bit for bit what each gives alone."""
  params, x = init_params(cfg, seed=3), _images(cfg, b=4)
  schedules = _schedules(cfg, red)
  given = [schedules[-1], None] + schedules[::-1] + [schedules[1]]
  alone = PiecewiseForward(cfg, params, red)
  want = [np.asarray(alone(s, x)) for s in given]
  got = PiecewiseForward(cfg, params, red).run_many(given, x)
  assert len(got) == len(given)
  for s, a, b in zip(given, got, want):
    np.testing.assert_array_equal(np.asarray(a), b, err_msg=str(s and s.counts))


def test_run_many_computes_a_shared_prefix_once():
  """Sorted: (17, 9, 9), (17, 17, 9), (17, 17, 17) x 2: one embedding, block 0 once per first
  count (2), block 1 once per distinct schedule (3), a head per schedule given (4)."""
  params, x, red = init_params(CFG, seed=1), _images(CFG), make_reducer("topk")
  pf = PiecewiseForward(CFG, params, red)
  given = [Schedule((17, 17, 17)), Schedule((17, 9, 9)), None, Schedule((17, 17, 9))]
  pf.compile(given, x)
  calls = {"embed": 0, "block": 0, "head": 0}

  def counted(key, fn):
    def run(*args):
      calls[key[0]] += 1
      return fn(*args)
    return run
  pf._compiled = {k: counted(k, v)                         # pylint: disable=protected-access
                  for k, v in pf._compiled.items()}        # pylint: disable=protected-access
  pf.run_many(given, x)
  assert calls == {"embed": 1, "block": 5, "head": 4}
  calls.update(embed=0, block=0, head=0)
  for s in given:
    pf(s, x)
  assert calls == {"embed": 4, "block": 8, "head": 4}          # alone: nothing shared
