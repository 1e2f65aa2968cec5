"""The per-block additive predictor on exact synthetic cases."""
import pytest

from vitprune.profile import predict
from vitprune.schedule import Schedule


def _table(**kw):
  block = {n: 0.1 + 0.01 * n for n in range(2, 18)}
  head = {n: 0.001 * n for n in range(2, 18)}
  return predict.BlockTable(embed_s=0.5, block_s=block, head_s=head, **kw)


def test_constant_schedule_is_embed_plus_depth_blocks_plus_head():
  t = _table()
  assert predict.predict(t, Schedule((17, 17, 17))) == pytest.approx(0.5 + 2 * 0.27 + 0.017)
  assert predict.predict_curve(t, 2, [17, 9]) == {
      17: pytest.approx(0.5 + 2 * 0.27 + 0.017), 9: pytest.approx(0.5 + 2 * 0.19 + 0.009)}


def test_reducing_schedule_sums_input_counts_and_overheads():
  s = Schedule((17, 12, 5))  # block 0 sees 17, block 1 sees 12, head sees 5
  assert predict.predict(_table(), s) == pytest.approx(0.5 + 0.27 + 0.22 + 0.005)
  t = _table(reduce_s={17: 0.03, 12: 0.02})
  assert predict.predict(t, s) == pytest.approx(0.5 + 0.27 + 0.03 + 0.22 + 0.02 + 0.005)
  # A schedule reducing only after block 1: one overhead.
  assert predict.predict(t, Schedule((17, 17, 9))) == pytest.approx(
      0.5 + 0.27 + 0.27 + 0.03 + 0.009)


def test_scalar_head():
  t = predict.BlockTable(embed_s=1.0, block_s={5: 2.0}, head_s=0.25)
  assert predict.predict(t, Schedule((5, 5, 5, 5))) == 1.0 + 3 * 2.0 + 0.25


def test_missing_count_errors_or_interpolates():
  t = predict.BlockTable(embed_s=0.0, block_s={10: 1.0, 20: 2.0}, head_s={10: 0.0, 20: 0.0})
  with pytest.raises(KeyError, match="no block latency measured at 15 tokens"):
    predict.predict(t, Schedule((15, 15, 10)))
  assert predict.predict(t, Schedule((15, 15, 10)), interpolate=True) == pytest.approx(3.0)
  with pytest.raises(KeyError, match="no block latency measured at 25"):
    predict.predict(t, Schedule((25, 20, 10)), interpolate=True)  # outside: never extrapolate
  with pytest.raises(KeyError, match=r"no block latency measured at 5 tokens \(measured: "
                     r"10..20, 2 counts\)"):
    predict.predict(t, Schedule((20, 5, 5)), interpolate=True)    # below the range: neither
  with pytest.raises(KeyError, match="no head latency measured at 12"):
    predict.predict(t, Schedule((20, 20, 12)))
  t2 = predict.BlockTable(embed_s=0.0, block_s={20: 1.0}, reduce_s={10: 0.1})
  with pytest.raises(KeyError, match="no reduction latency measured at 20"):
    predict.predict(t2, Schedule((20, 20, 10)))


def test_relative_error_and_table_validation():
  assert predict.relative_error(1.1, 1.0) == pytest.approx(0.1)
  assert predict.relative_error(0.9, 1.0) == pytest.approx(-0.1)
  with pytest.raises(ValueError, match="measured latency must be > 0"):
    predict.relative_error(1.0, 0.0)
  with pytest.raises(ValueError, match="at least one block"):
    predict.BlockTable(embed_s=0.0, block_s={})
  with pytest.raises(ValueError, match="block_s latencies"):
    predict.BlockTable(embed_s=0.0, block_s={3: -1.0})
  with pytest.raises(ValueError, match="head_s latencies"):
    predict.BlockTable(embed_s=0.0, block_s={3: 1.0}, head_s=float("nan"))
  for bad in (-0.1, float("nan"), float("inf")):
    with pytest.raises(ValueError, match="reduce_s latencies must be finite and >= 0"):
      predict.BlockTable(embed_s=0.0, block_s={3: 1.0}, reduce_s={3: bad})


def test_per_call_overhead_is_paid_once_by_the_whole_forward():
  # Every separately timed part = its work + one call overhead o; the whole forward = o + work.
  o = 0.05
  work_block = {n: 0.1 * n for n in (4, 8)}
  t = predict.BlockTable(embed_s=0.2 + o, block_s={n: w + o for n, w in work_block.items()},
                         head_s={4: 0.01 + o, 8: 0.02 + o}, overhead_s=o)
  s = Schedule((8, 8, 4, 4))  # depth 3: blocks see 8, 8, 4; head sees 4
  assert predict.predict(t, s) == pytest.approx(o + 0.2 + 0.8 + 0.8 + 0.4 + 0.01)
  with pytest.raises(ValueError, match="overhead_s must be finite and >= 0"):
    predict.BlockTable(embed_s=0.0, block_s={3: 1.0}, overhead_s=-1.0)


def test_predict_curve_passes_interpolate_on_to_every_count():
  t = predict.BlockTable(embed_s=0.5, block_s={10: 1.0, 20: 2.0}, head_s={10: 0.1, 20: 0.2})
  with pytest.raises(KeyError, match="no block latency measured at 15 tokens"):
    predict.predict_curve(t, 3, [20, 15])
  assert predict.predict_curve(t, 3, [20, 15], interpolate=True) == {
      20: pytest.approx(0.5 + 3 * 2.0 + 0.2), 15: pytest.approx(0.5 + 3 * 1.5 + 0.15)}


def test_interpolation_pairs_each_count_with_its_own_latency_in_any_table_order():
  # A table written largest count first (a JSON object, a hand-made dict): the values must be
  # taken in the order of the sorted counts, not the table's own order.
  t = predict.BlockTable(embed_s=0.0, block_s={30: 3.0, 10: 1.0, 20: 4.0}, head_s=0.0)
  # block at 15: halfway between 1.0 (10) and 4.0 (20); at 25: halfway between 4.0 and 3.0
  assert predict.predict(t, Schedule((15, 15)), interpolate=True) == pytest.approx(2.5)
  assert predict.predict(t, Schedule((25, 25)), interpolate=True) == pytest.approx(3.5)


def test_a_measured_latency_of_nan_is_refused():
  with pytest.raises(ValueError, match=r"measured latency must be > 0, got nan"):
    predict.relative_error(1.0, float("nan"))
  with pytest.raises(ValueError, match=r"measured latency must be > 0, got -0.5"):
    predict.relative_error(1.0, -0.5)
