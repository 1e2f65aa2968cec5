"""Step detection on synthetic latency curves with known steps and noise."""
import dataclasses

import numpy as np
import pytest

from vitprune.profile import steps


def _staircase(tokens, edges, base=1.0, jump=0.2, slope=0.0):
  """L(n) = base + jump * #(edges e with n > e) + slope * n: a drop of `jump` from e + 1 to e."""
  t = np.asarray(tokens)
  return base + jump * sum((t > e).astype(float) for e in edges) + slope * t


def test_exact_staircase_steps_and_flats():
  tokens = list(range(40, 1, -1))
  med = _staircase(tokens, edges=(32, 16))
  rep = steps.detect_steps(tokens, med)
  assert [(s.n_from, s.n_to) for s in rep.steps] == [(33, 32), (17, 16)]
  assert [(f.n_hi, f.n_lo) for f in rep.flats] == [(40, 33), (32, 17), (16, 2)]
  s = rep.steps[0]
  assert s.saving_s == pytest.approx(0.2)
  assert s.saving_frac == pytest.approx(0.2 / 1.4)
  assert s.describe() == "33 -> 32 saves 14.3% (200 ms)"
  assert rep.curve_noise_s == 0.0 and rep.trend_s == 0.0


def test_noisy_staircase_found_exactly_with_iqrs():
  rng = np.random.default_rng(0)
  tokens = np.arange(197, 1, -1)
  truth = _staircase(tokens, edges=(128, 64), base=5e-3, jump=5e-4)
  med = truth + rng.normal(0, 2e-5, tokens.size)   # 0.4% point noise, 10% steps
  iqr = np.full(tokens.size, 1.349 * 2e-4)         # per-sample spread, 100 samples
  rep = steps.detect_steps(tokens, med, iqr, np.full(tokens.size, 100))
  assert [(s.n_from, s.n_to) for s in rep.steps] == [(129, 128), (65, 64)]
  assert 1e-5 < rep.curve_noise_s < 6e-5          # ~sqrt(2) * 2e-5, estimated robustly
  # Flat stretches never cross a step.
  for f in rep.flats:
    assert not any(f.n_lo <= e < f.n_hi for e in (128, 64))


def test_shuffled_input_order_gives_same_result():
  tokens = np.arange(30, 1, -1)
  med = _staircase(tokens, edges=(20,))
  perm = np.random.default_rng(1).permutation(tokens.size)
  a = steps.detect_steps(tokens, med)
  b = steps.detect_steps(tokens[perm], med[perm])
  assert a == b


def test_wide_iqr_hides_a_small_step():
  tokens = np.arange(20, 1, -1)
  med = _staircase(tokens, edges=(10,), jump=0.05)
  assert [(s.n_from, s.n_to) for s in steps.detect_steps(tokens, med).steps] == [(11, 10)]
  # IQR 1.0 with one sample: noise ~ 1.31 per pair, far above the 0.05 drop.
  rep = steps.detect_steps(tokens, med, np.ones(tokens.size), np.ones(tokens.size))
  assert rep.steps == ()
  # Within noise, but a 5% saving is never called flat (flat_rel=2%): the stretch splits there.
  assert [(f.n_hi, f.n_lo) for f in rep.flats] == [(20, 11), (10, 2)]
  loose = steps.detect_steps(tokens, med, np.ones(tokens.size), np.ones(tokens.size),
                             flat_rel=0.1)
  assert [(f.n_hi, f.n_lo) for f in loose.flats] == [(20, 2)]


def test_noisy_slope_is_not_called_flat():
  # A jagged CPU-like curve: 0.6% per token plus point-to-point jitter of the same size. Each
  # drop is within the (large) curve noise, but stretches saving > 2% are not "flat".
  tokens = np.arange(65, 1, -1)
  rng = np.random.default_rng(3)
  med = 1.0 + 0.006 * tokens + rng.normal(0, 0.006, tokens.size)
  rep = steps.detect_steps(tokens, med)
  for f in rep.flats:
    assert (f.latency_hi - f.latency_lo) <= 0.02 * f.latency_hi
  with pytest.raises(ValueError, match="flat_rel must be >= 0"):
    steps.detect_steps(tokens, med, flat_rel=-1)


def test_min_rel_floor():
  tokens = np.arange(20, 1, -1)
  med = _staircase(tokens, edges=(10,), jump=0.005)     # 0.5% of 1.0
  assert len(steps.detect_steps(tokens, med, min_rel=0.0).steps) == 1
  assert steps.detect_steps(tokens, med, min_rel=0.01).steps == ()


def test_linear_curve_has_no_steps_and_no_long_flat():
  tokens = np.arange(50, 1, -1)
  rng = np.random.default_rng(2)
  med = 1.0 + 0.01 * tokens + rng.normal(0, 1e-4, tokens.size)
  rep = steps.detect_steps(tokens, med)
  assert rep.steps == ()
  assert rep.trend_s == pytest.approx(0.01, rel=0.05)
  assert rep.flats == ()   # every drop (0.01) is far above the noise (~1.4e-4)


def test_slow_slope_of_insignificant_drops_is_not_one_flat_stretch():
  tokens = np.arange(41, 1, -1)
  med = 1.0 + 1e-3 * tokens
  iqr = np.full(tokens.size, 1.349 * 1e-3)   # se per point 1.25e-3 > per-pair drop 1e-3
  rep = steps.detect_steps(tokens, med, iqr, np.ones(tokens.size))
  assert rep.steps == ()
  assert len(rep.flats) > 1
  for f in rep.flats:   # each stretch changes by at most k * span noise
    assert f.latency_hi - f.latency_lo <= 4.0 * np.hypot(1.2533e-3, 1.2533e-3) + 1e-12


def test_coarse_grid_step_reported_as_interval():
  tokens = [65, 49, 33, 17, 2]
  med = _staircase(tokens, edges=(40,))
  rep = steps.detect_steps(tokens, med)
  assert [(s.n_from, s.n_to) for s in rep.steps] == [(49, 33)]


def test_refine_grid_fills_only_non_flat_intervals():
  coarse = [40, 30, 20, 10, 2]
  med = _staircase(coarse, edges=(25,))
  rep = steps.detect_steps(coarse, med)
  assert steps.refine_grid(coarse, rep, lo=2, hi=40) == list(range(29, 20, -1))
  full = list(range(40, 1, -1))
  rep_full = steps.detect_steps(full, _staircase(full, edges=(25,)))
  assert [(s.n_from, s.n_to) for s in rep_full.steps] == [(26, 25)]


def test_refine_order_puts_step_intervals_first_in_bisection_order():
  coarse = [40, 34, 28, 22, 16, 10, 4]
  med = [1.2, 1.2, 1.2, 1.0, 1.0, 0.97, 0.94]      # a step in 28 -> 22, a slope below 16
  rep = steps.detect_steps(coarse, med)
  assert [(s.n_from, s.n_to) for s in rep.steps] == [(28, 22)]
  order = steps.refine_order(coarse, rep, lo=2, hi=40)
  assert sorted(order, reverse=True) == steps.refine_grid(coarse, rep, lo=2, hi=40)
  assert order == [25, 26, 23, 27, 24,              # the step's interval: midpoint, quarters..
                   13, 7, 14, 11, 8, 5, 15, 12, 9, 6]   # then the slope's, level by level


def test_bisection_levels_cover_each_count_once():
  assert steps.bisection_levels(10, 20) == [(15, 0), (12, 1), (17, 1), (11, 2), (13, 2),
                                            (16, 2), (18, 2), (14, 3), (19, 3)]
  for lo in range(0, 6):
    for hi in range(lo, lo + 40):
      assert sorted(n for n, _ in steps.bisection_levels(lo, hi)) == list(range(lo + 1, hi))


def test_describe_lines():
  rep = steps.detect_steps([5, 4, 3, 2], [2.0, 1.0, 1.0, 1.0])
  assert rep.describe() == ["5 -> 4 saves 50.0% (1000 ms)",
                            "4 .. 2 flat: pruning 2 tokens saves 0.0% (0 ms)"]
  assert steps.detect_steps([9, 5, 3, 2], [1.0] * 4).describe()[0] == "no steps above noise"
  assert steps.Flat(9, 5, 2.0, 1.5).describe() == (
      "9 .. 5 flat: pruning 4 tokens saves 25.0% (500 ms)")
  assert steps.Flat(9, 5, 2.0, 2.006).describe() == (     # (was 'saves -0.3% (-6 ms)')
      "9 .. 5 flat: pruning 4 tokens saves nothing: 5 tokens timed 0.3% (6 ms) slower than 9")
  assert steps.Flat(20, 19, 2.0, 2.006).describe() == (     # (was 'pruning 1 tokens')
      "20 .. 19 flat: pruning 1 token saves nothing: 19 tokens timed 0.3% (6 ms) slower than 20")
  assert steps.detect_steps([3, 2], [1.0, 1.0]).describe()[0] == (
      "no steps called: 2 token counts are too few to tell a step from the trend (at least 4)")


def test_three_counts_are_too_few_to_call_a_step():
  """`--tokens=65,33,9`: two drops, so the trend was their mean and the curve noise 0; a convex
  curve's steeper pair was a step, '65 -> 33' in one run and '33 -> 9' in the next."""
  tokens = [65, 33, 9]
  for med in ([1.6e-3, 0.96e-3, 0.57e-3], [1.6e-3, 0.90e-3, 0.57e-3]):
    rep = steps.detect_steps(tokens, med, [1e-6] * 3, [200] * 3)
    assert rep.steps == () and rep.num_points == 3, med
    assert rep.describe()[0].startswith("no steps called: 3 token counts are too few")
  tokens = [65, 33, 17, 9]          # a fourth count: a trend not fitted to the pair judged
  med = [1e-5 * n + (3e-4 if n == 65 else 0.0) for n in tokens]
  rep = steps.detect_steps(tokens, med, [1e-6] * 4, [200] * 4)
  assert [(s.n_from, s.n_to) for s in rep.steps] == [(65, 33)]


@pytest.mark.parametrize("kwargs, match", [
    (dict(tokens=[3], medians=[1.0]), "at least 2"),
    (dict(tokens=[3, 3], medians=[1.0, 1.0]), "unique"),
    (dict(tokens=[3, 2], medians=[1.0]), "medians has shape"),
    (dict(tokens=[3, 2], medians=[1.0, 0.0]), "must be > 0"),
    (dict(tokens=[3, 2], medians=[1.0, np.nan]), "finite"),
    (dict(tokens=[3, 2], medians=[1.0, 1.0], iqrs=[-1.0, 0.0]), "iqrs must be finite"),
    (dict(tokens=[3, 2], medians=[1.0, 1.0], counts=[0, 1]), "sample counts"),
    (dict(tokens=[3, 2], medians=[1.0, 1.0], k=0), "k must be"),
    (dict(tokens=[3, 2], medians=[1.0, 1.0], min_rel=-1), "min_rel"),
    (dict(tokens=[3, 2], medians=[1.0, 1.0], measured_at=["a"]),
     "measured_at has 1 entries for 2 token counts"),
    (dict(tokens=[3, 2], medians=[1.0, 1.0], measured_at=["a", "a", "a"]),
     "^measured_at has 3 entries for 2 token counts$"),       # (one too many was taken)
])
def test_errors(kwargs, match):
  with pytest.raises(ValueError, match=match):
    steps.detect_steps(**kwargs)


def test_the_noise_of_a_drop_is_that_of_two_medians():
  """A median of R samples of a normal spread has standard error 1.2533 sigma / sqrt(R), sigma =
  IQR / 1.349; a drop between two counts carries both medians' errors in quadrature (a mutation
  audit: / R, or the lower count's error left out, passed every test and called steps inside the
  noise)."""
  iqr = np.array([0.4, 0.3, 0.0])
  se = steps.median_se(iqr, np.array([4, 9, 1]))
  np.testing.assert_allclose(se, [1.2533 * 0.4 / 1.349 / 2, 1.2533 * 0.3 / 1.349 / 3, 0.0])
  np.testing.assert_allclose(steps.median_se(iqr, None), 1.2533 * iqr / 1.349)
  noise = steps.pair_noise(iqr, np.array([4, 9, 1]))
  np.testing.assert_allclose(noise, [np.hypot(se[0], se[1]), se[1]])


def test_curve_noise_is_the_robust_spread_of_the_drops_in_either_order():
  rng = np.random.default_rng(3)
  med = 1.0 + np.cumsum(rng.uniform(0.0, 0.1, 12))[::-1]          # descending by tokens
  drops = med[:-1] - med[1:]
  want = 1.4826 * np.median(np.abs(drops - np.median(drops)))
  assert steps.curve_noise(med) == pytest.approx(want)
  assert steps.curve_noise(med[::-1]) == pytest.approx(want)      # ascending order: same
  assert steps.curve_noise(med[:3]) == 0.0                         # two drops: no estimate
  tokens = np.arange(40, 40 - med.size, -1)
  assert steps.detect_steps(tokens, med).curve_noise_s == pytest.approx(want)


def test_a_linear_curve_on_an_uneven_grid_or_of_two_points_has_no_steps():
  """The trend was the median drop per grid interval (0 below 3 drops): `--tokens=65,33` called
  a linear curve's one interval a step ('65 -> 33 saves 49%'), and on 65,64,63,62,20 the long
  last interval was a step ('62 -> 20 saves 68%')."""
  for tokens in ([65, 33], [65, 64, 63, 62, 20], [65, 49, 47, 20, 9, 2]):
    med = [1e-5 * n for n in tokens]
    rep = steps.detect_steps(tokens, med, [1e-7] * len(tokens), [100] * len(tokens))
    assert rep.steps == () and rep.trend_s == pytest.approx(1e-5), tokens
    assert rep.curve_noise_s == pytest.approx(0.0, abs=1e-18)
  tokens = [65, 64, 63, 62, 20]        # a real step in the long interval is still one
  med = [1e-5 * n + (1e-4 if n >= 62 else 0.0) for n in tokens]
  rep = steps.detect_steps(tokens, med, [1e-7] * 5, [100] * 5)
  assert [(s.n_from, s.n_to) for s in rep.steps] == [(62, 20)]


def test_curve_noise_about_the_per_token_trend():
  tokens = np.array([65, 50, 35, 34, 33, 20])
  med = 1e-5 * tokens + np.array([0, 1, 0, -1, 0, 1]) * 1e-7
  assert steps.curve_noise(med) > 1e-5                       # uneven gaps read as noise
  assert steps.curve_noise(med, tokens) < 5e-7
  assert steps.curve_noise(med[::-1], tokens[::-1]) == pytest.approx(
      steps.curve_noise(med, tokens))
  even = np.arange(20, 1, -1)
  noisy = 1e-5 * even + np.random.default_rng(0).normal(0, 1e-7, even.size)
  assert steps.curve_noise(noisy, even) == pytest.approx(steps.curve_noise(noisy))


def test_a_count_out_of_line_with_both_neighbours_is_a_lone_count_not_a_step():
  """A burst of load during one count's measurement (all its samples slow, a tight IQR) was
  reported as a step into the next count, though the next LARGER count was as fast; a README
  walk-through on a shared machine saw `57 -> 56 saves 30.2%` where 56 alone measured fast. A
  count out of line with both neighbours is a lone count (slow or fast), not a step."""
  rng = np.random.default_rng(1)
  tokens = np.arange(60, 20, -1)
  truth = _staircase(tokens, edges=(40,), base=5e-3, jump=5e-4, slope=1e-5)
  iqr, counts = np.full(tokens.size, 1.349 * 2e-5), np.full(tokens.size, 100)
  med = truth + rng.normal(0, 2e-6, tokens.size)

  def report(edit):
    m = med.copy()
    for n, dv in edit.items():
      m[tokens == n] += dv
    return steps.detect_steps(tokens, m, iqr, counts)

  rep = report({50: 6e-4})                            # one count measured slow
  assert [(s.n_from, s.n_to) for s in rep.steps] == [(41, 40)]     # was also (50, 49)
  (lone,) = rep.lone
  assert (lone.n, lone.n_above, lone.n_below, lone.slow) == (50, 51, 49, True)
  assert lone.latency_s == med[tokens == 50][0] + 6e-4
  assert lone.describe().startswith("50 lone slow count: +9.8% vs 51, +10.2% vs 49, which "
                                    "differ by the trend only: not a step (a burst of load")
  assert rep.describe()[1] == lone.describe()
  rep = report({48: -6e-4})                           # one count measured fast
  assert [(s.n_from, s.n_to) for s in rep.steps] == [(41, 40)]     # was also (49, 48)
  (lone,) = rep.lone
  assert (lone.n, lone.n_above, lone.n_below, lone.slow) == (48, 49, 47, False)
  assert lone.describe().startswith("48 lone fast count: -10.")
  # Real steps stay steps: at the largest count (nothing above to compare with), beside a count
  # faster than the trend above it (its flat pair is no rise), under a count that is noisy,
  # and a real step right below a lone fast count (the count two above agrees with it).
  assert [(s.n_from, s.n_to) for s in report({60: 6e-4}).steps] == [(60, 59), (41, 40)]
  assert [(s.n_from, s.n_to) for s in report({42: -1e-5}).steps] == [(41, 40)]
  wide = iqr.copy()
  wide[tokens == 42] = 5e-3
  rep = steps.detect_steps(tokens, med, wide, np.where(tokens == 42, 3, counts))
  assert [(s.n_from, s.n_to) for s in rep.steps] == [(41, 40)] and rep.lone == ()
  rep = report({42: -5e-4})          # 42 as fast as 40: which of 42 or 41 is out of line?
  assert [(s.n_from, s.n_to) for s in rep.steps] == [(43, 42), (41, 40)] and rep.lone == ()


def _pairs(rep):
  return [(s.n_from, s.n_to) for s in rep.steps], [(c.n, c.slow) for c in rep.lone]


def test_a_step_count_out_of_line_adds_nothing_to_the_saving():
  """A probe: 65 2.72 ms, 60 2.93 ms (slower than 65), 50 1.88 ms printed '60 -> 50 saves
  35.9% (1.054 ms)'; from 65, the level above the step, it saves 0.84 ms. The saving is measured
  between the levels the step was confirmed with, and says so."""
  t = np.arange(22, 10, -1)
  clean = steps.detect_steps(t, np.array([20.0] * 4 + [10.0] * 8)).steps
  assert [(s.n_from, s.n_to, s.level_from, s.level_to, s.saving_s) for s in clean] == [
      (19, 18, 19, 18, 10.0)]
  assert clean[0].describe() == "19 -> 18 saves 50.0% (1e+04 ms)"
  m = np.array([20.0] * 4 + [10.0] * 8)
  m[3] = 25.0                                    # 19 slow, the step's own upper count
  (s,) = steps.detect_steps(t, m).steps
  assert (s.n_from, s.n_to, s.level_from, s.level_to) == (19, 18, 20, 18)
  assert (s.latency_from, s.latency_to, s.saving_s, s.saving_frac) == (20.0, 10.0, 10.0, 0.5)
  assert s.describe() == ("19 -> 18 saves 50.0% (1e+04 ms, measured from 20 to 18: 19 ran "
                          "slower than 20)")
  m = np.array([20.0] * 4 + [10.0] * 8)
  m[4] = 5.0                                     # 18 fast, the step's own lower count
  (s,) = steps.detect_steps(t, m).steps
  assert (s.n_from, s.n_to, s.level_from, s.level_to, s.saving_s) == (19, 18, 19, 17, 10.0)
  assert s.describe().endswith("(1e+04 ms, measured from 19 to 17: 18 ran faster than 17)")
  m[3] = 25.0                                    # both
  (s,) = steps.detect_steps(t, m).steps
  assert (s.level_from, s.level_to, s.saving_s) == (20, 17, 10.0)
  assert s.describe().endswith(": 19 ran slower than 20 and 18 ran faster than 17)")


def test_two_neighbouring_counts_out_of_line_together_are_lone_counts_not_a_step():
  """A walkthrough under load: 60 0.946 ms, 59 1.389, 58 1.408, 57 0.935 printed '58 -> 57
  saves 33.6%' (only one count out of line was looked for; 57 is no faster than 60).
  benchmarks.step_detection --pair_share=0.04: false steps at stride 1 from 943 to 404."""
  t = np.arange(64, 50, -1)
  m = np.array([0.95, 0.95, 0.948, 0.947, 0.946, 1.389, 1.408, 0.935, 0.934, 0.93, 0.93, 0.925,
                0.924, 0.92])
  rep = steps.detect_steps(t, m, [0.02] * t.size, [30] * t.size)
  assert _pairs(rep) == ([], [(59, True), (58, True)])
  assert [(c.n_above, c.n_below) for c in rep.lone] == [(60, 57), (60, 57)]
  assert rep.describe()[1].startswith("59 lone slow count: +46.8% vs 60, +48.6% vs 57")
  fast = np.array([1.0] * 6 + [0.8, 0.81] + [0.998] * 6)   # 58 and 57 fast together
  rep = steps.detect_steps(t, fast, [0.004] * t.size, [20] * t.size)
  assert _pairs(rep) == ([], [(58, False), (57, False)])
  assert [(c.n_above, c.n_below) for c in rep.lone] == [(59, 56), (59, 56)]
  # Across a real step the pair is a step, its saving from the level above the two.
  m = np.array([1.2] * 5 + [1.5, 1.5] + [1.0] * 7)          # 59, 58 slow above 58 -> 57
  rep = steps.detect_steps(t, m, [0.004] * t.size, [20] * t.size)
  (s,) = rep.steps
  assert (s.n_from, s.n_to, s.level_from, s.level_to) == (58, 57, 60, 57)
  assert s.saving_s == pytest.approx(0.2)
  # Two counts of a real level faster than a burst below them are no fast pair: the step above
  # them stays (the benchmark at stride 4 lost such steps to a burst two counts down).
  m = np.array([1.2] * 5 + [1.0] * 2 + [1.25] + [1.0] * 6)   # 60 -> 59 a step; 57 a burst
  rep = steps.detect_steps(t, m, [0.004] * t.size, [20] * t.size)
  assert _pairs(rep) == ([(60, 59)], [(57, True)])


def test_every_step_saves_time_and_no_step_holds_a_lone_count():
  """A review: a step confirmed by the wider neighbourhood took its levels from counts out of
  line the wrong way ('13 -> 12 saves -8.1%'); a two-count burst above a real step left a
  'step' between the two counts it named lone; at either end of the curve the two-count rule
  took a real level for a pair out of line (the step at the unpruned count was lost)."""
  from benchmarks.step_detection import simulate  # pylint: disable=g-import-not-at-top
  j = lambda k: 0.005 * (-1) ** k
  t = np.arange(20, 0, -1)
  m = [1.3 + j(k) for k in range(8)] + [0.85, 1.4] + [1.0 + j(k) for k in range(10)]
  assert steps.detect_steps(t, m).describe()[:2] == ["13 -> 12 saves 34.4% (445 ms)",
                                                      "11 -> 10 saves 28.2% (395 ms)"]
  m = [1.3 + j(k) for k in range(8)] + [1.9, 1.5, 1.3 + j(0)] + [1.0 + j(k) for k in range(9)]
  assert _pairs(steps.detect_steps(t, m)) == ([(10, 9)], [(12, True), (11, True)])
  t = np.arange(16, 0, -1)
  m = [1.3 + j(k) for k in range(13)] + [1.0, 1.0, 1.3]
  assert _pairs(steps.detect_steps(t, m))[0] == [(4, 3)]
  m = [1.0, 1.3, 1.3] + [1.0 + j(k) for k in range(13)]
  assert _pairs(steps.detect_steps(t, m))[0] == [(14, 13)]
  rng = np.random.default_rng(7)
  found = 0
  for stride in (1, 2, 4):
    for _ in range(150):
      tt, med, iqr, n, _, _ = simulate(rng, stride=stride, counts=40, max_tokens=200,
                                       noise=0.003, burst_share=0.08, fast_share=0.04,
                                       pair_share=0.04)
      rep = steps.detect_steps(tt, med, iqr, n)
      lone = {c.n for c in rep.lone}
      for s in rep.steps:
        assert s.saving_s > 0 and not {s.n_from, s.n_to} & lone, (s, rep.lone)
        assert s.level_from >= s.n_from > s.n_to >= s.level_to
      found += len(rep.steps)
  assert found > 1000          # (the property was checked on many steps)


def test_a_dip_whose_rebound_falls_short_of_the_slower_test_is_a_lone_count():
  """A probe under load: 63 1.311, 62 0.930, 61 1.132 and 59 1.182, 58 0.884, 57 1.125 ms were
  printed as the steps '63 -> 62 saves 29.1%' and '59 -> 58 saves 25.2%': each rebound fell just
  short of the 'slower' test, and nothing asked whether the new level held one count on."""
  t = np.arange(65, 44, -1)
  m = np.array([1.240, 1.170, 1.311, 0.930, 1.132, 1.139, 1.182, 0.884, 1.125, 1.123, 1.131,
                1.1, 1.024, 1.101, 1.072, 1.022, 1.055, 1.036, 1.022, 1.0, 1.01])
  rep = steps.detect_steps(t, m, [0.05] * t.size, [20] * t.size)
  assert _pairs(rep) == ([], [(62, False), (58, False)])
  assert [(c.n_above, c.n_below) for c in rep.lone] == [(63, 61), (59, 57)]
  m[8:] -= 0.3                                      # 58's level holds: a step after all
  assert _pairs(steps.detect_steps(t, m, [0.05] * t.size, [20] * t.size))[0] == [(59, 58)]


def test_marks_of_one_date_are_named_by_their_time_of_day_in_utc():
  """The main job's lines named each measurement by its whole ISO time, 29 characters each; a
  time of day alone must say it is UTC (read as local time elsewhere)."""
  day = ["2026-12-07T15:21:10.726+00:00", "2026-12-07T15:21:23.568+00:00"]
  assert steps.when_words(day) == (["15:21:10.726", "15:21:23.568"], " UTC")
  two_days = ["2026-12-05T10:00:00.000+00:00", day[0]]
  assert steps.when_words(two_days) == (
      ["2026-12-05 10:00:00.000", "2026-12-07 15:21:10.726"], " UTC")
  other = ["2026-12-07T15:00:00.000-05:00", day[0]]    # (not normalised: a library caller's)
  assert steps.when_words(other) == (other, "")
  assert steps.when_words(["A", "B"]) == (["A", "B"], "")
  s = steps.Step(17, 16, 2.0, 1.0, 0.1, 17, 16, tuple(day))
  assert s.describe() == "17 -> 16 saves 50.0% (1000 ms; timed apart: 15:21:10.726 and " \
                         "15:21:23.568 UTC)"
  lone = steps.Lone(20, 21, 19, 2.0, 1.0, 1.0, True,
                    (day[1], day[0], "2026-12-07T15:20:53.191+00:00"))
  assert lone.describe().endswith("badly; timed apart from both: 15:21:23.568 against "
                                  "15:21:10.726 and 15:20:53.191 UTC)")


def test_a_lone_count_timed_in_another_measurement_says_so():
  """A count resumed or re-measured alone (another measurement than both its neighbours) and
  out of line with them is most likely the machine's speed at that moment: its line says when
  each was timed. Timed with either neighbour, or with marks not recorded, it says nothing."""
  tokens = np.arange(30, 10, -1)
  med = 1e-3 + 1e-5 * tokens
  med[tokens == 20] += 3e-4                             # 20 measured slow
  marks = ["A"] * tokens.size

  def lone(marks):
    (c,) = steps.detect_steps(tokens, med, measured_at=marks).lone
    return c

  assert lone(marks).n == 20 and lone(marks).measured_apart == ()
  marks[list(tokens).index(20)] = "B"
  c = lone(marks)
  assert c.measured_apart == ("B", "A")
  assert c.describe().endswith("(a burst of load, or a shape the compiler handles badly; timed "
                               "apart from both: B against A)")
  rep = steps.detect_steps(tokens, med, measured_at=marks)
  assert rep.describe()[-1 - len(rep.flats)] == steps.APART_NOTE   # said once, after them
  marks[list(tokens).index(19)] = "C"                   # its neighbours of two others
  assert lone(marks).measured_apart == ("B", "A", "C")
  assert lone(marks).describe().endswith("timed apart from both: B against A and C)")
  marks[list(tokens).index(21)] = "B"                   # timed with one of them: nothing said
  assert lone(marks).measured_apart == ()
  marks[list(tokens).index(21)] = ""                    # a neighbour's mark not recorded
  assert lone(marks).measured_apart == ()


def test_a_lone_count_whose_own_mark_is_not_recorded_says_nothing_of_when():
  """Mutation audit: a lone count from before the mark ('' measured_at) beside two counts of one
  measurement is not 'timed apart from both:  against A' (nothing known of when it was timed)."""
  tokens = np.arange(30, 10, -1)
  med = 1e-3 + 1e-5 * tokens
  med[tokens == 20] += 3e-4
  marks = ["" if n == 20 else "A" for n in tokens]
  (c,) = steps.detect_steps(tokens, med, measured_at=marks).lone
  assert c.n == 20 and c.measured_apart == ()
  assert "timed apart" not in c.describe()


def test_the_main_jobs_summary_words_a_recorded_step_as_the_profiler_does():
  """pipeline._describe_step rebuilt the sentence from the record (it would have kept the saving
  of the pair's own counts apart from Step.describe)."""
  from vitprune import pipeline  # pylint: disable=g-import-not-at-top
  t = np.arange(22, 10, -1)
  m = np.array([20.0] * 4 + [10.0] * 8)
  m[3] = 25.0
  (s,) = steps.detect_steps(t, m).steps
  record = dict(component="model", batch_size=1, n_from=s.n_from, n_to=s.n_to,
                latency_from_s=s.latency_from, latency_to_s=s.latency_to, saving_s=s.saving_s,
                saving_frac=s.saving_frac, noise_s=s.noise_s, level_from=s.level_from,
                level_to=s.level_to, measured_apart=[])
  assert pipeline._describe_step(record) == s.describe()   # pylint: disable=protected-access
  assert "measured from 20 to 18" in s.describe()
  apart = dataclasses.replace(s, measured_apart=("T1", "T2"))
  record["measured_apart"] = ["T1", "T2"]
  assert pipeline._describe_step(record) == apart.describe()   # pylint: disable=protected-access
  assert apart.describe().endswith("19 ran slower than 20; timed apart: T1 and T2)")
  assert pipeline._summary_step(record) == apart.describe()  # pylint: disable=protected-access
  wide = steps.detect_steps(t[::2], m[::2]).steps    # every 2nd count: 20 -> 18, not localised
  assert [(w.n_from, w.n_to) for w in wide] == [(20, 18)]
  record.update(n_from=20, n_to=18, level_from=20, level_to=18, measured_apart=[])
  assert pipeline._summary_step(record).endswith(  # pylint: disable=protected-access
      " (no count between 20 and 18 was timed: the step lies somewhere in that gap)")


def test_a_step_between_two_measurements_says_its_levels_were_timed_apart():
  """Runs merged into one profile (or chunks, or the adaptive refinement) are timed in separate
  measurements: a step between them was reported as any other, though the machine's change of
  speed between the two may be all of it. The levels' own marks decide (an out-of-line count
  measures the level from its neighbour); one measurement, or marks not recorded, say nothing."""
  tokens = list(range(40, 1, -1))
  med = _staircase(tokens, edges=(32, 16))
  when = ["A" if n > 24 else "B" for n in tokens]          # 33 -> 32: one measurement (A)
  rep = steps.detect_steps(tokens, med, measured_at=when)
  assert [(s.n_from, s.n_to, s.measured_apart) for s in rep.steps] == [
      (33, 32, ()), (17, 16, ())]
  when = ["A" if n > 16 else "B" for n in tokens]          # 17 -> 16 straddles A and B
  rep = steps.detect_steps(tokens, med, measured_at=when)
  assert [s.measured_apart for s in rep.steps] == [(), ("A", "B")]
  assert rep.steps[1].describe() == "17 -> 16 saves 16.7% (200 ms; timed apart: A and B)"
  assert rep.steps[0].describe() == "33 -> 32 saves 14.3% (200 ms)"
  lines = rep.describe()                                   # the why and the remedy, once
  assert lines[:3] == [rep.steps[0].describe(), rep.steps[1].describe(), steps.APART_NOTE]
  assert steps.APART_NOTE not in steps.detect_steps(tokens, med).describe()
  unknown = ["" if n == 16 else "A" for n in tokens]       # a point from before the mark
  assert all(not s.measured_apart
             for s in steps.detect_steps(tokens, med, measured_at=unknown).steps)
  shuffled = list(reversed(tokens))                        # marks follow their counts
  rep = steps.detect_steps(shuffled, list(reversed(med)),
                           measured_at=["A" if n > 16 else "B" for n in shuffled])
  assert [s.measured_apart for s in rep.steps] == [(), ("A", "B")]
  t = np.arange(22, 10, -1)                                # the level above: from 20, not 19
  m = np.array([20.0] * 4 + [10.0] * 8)
  m[3] = 25.0
  marks = ["A"] * 3 + ["B"] * 9                            # 20 is A; 19 and 18 are B
  (s,) = steps.detect_steps(t, m, measured_at=marks).steps
  assert (s.n_from, s.level_from, s.measured_apart) == (19, 20, ("A", "B"))
  marks[2] = "B"                                           # 20, the level above, is B too
  assert steps.detect_steps(t, m, measured_at=marks).steps[0].measured_apart == ()


def test_a_curve_rising_as_tokens_fall_has_no_negative_trend():
  """The per-token trend is clipped at 0: on a curve that gets slower as tokens are removed,
  a negative trend made the one pair that does not change (21 -> 20, 1.45 ms both) a 'step'
  that saves nothing; it is flat."""
  t = np.arange(30, 10, -1)
  m = 1.0 + 0.05 * np.arange(20)
  m[10:] -= 0.05
  rep = steps.detect_steps(t, m, [0.004] * 20, [20] * 20)
  assert rep.trend_s == 0.0 and _pairs(rep) == ([], [])
  assert [(f.n_hi, f.n_lo) for f in rep.flats] == [(21, 20)]


def test_lone_counts_need_neighbours_that_agree_both_ways_and_steps_must_last():
  """Review: the neighbours of a lone count were only checked for a drop between them, so a
  count beside a rise was called lone 'by the trend only'; two counts out of line at once gave a
  step or two lone counts by their order; a slow count right below a real step stayed a step."""
  t = np.arange(30, 10, -1)
  m = np.array([10.0] * 8 + [20.0] * 12)
  m[7] = 30.0                                    # 23 slow, beside a rise from 10 to 20
  assert _pairs(steps.detect_steps(t, m)) == ([], [])
  m = np.array([20.0] * 8 + [30.0] * 12)
  m[8] = 5.0                                     # 22 fast, beside the same rise
  assert _pairs(steps.detect_steps(t, m)) == ([], [])
  for a, b in ((15.0, 5.0), (5.0, 15.0)):        # two counts out of line, either order
    m = np.full(t.size, 10.0)
    m[6], m[7] = a, b
    assert _pairs(steps.detect_steps(t, m)) == ([], [])
  t = np.arange(22, 10, -1)
  m = np.array([20.0] * 4 + [10.0] * 8)
  m[5] = 15.0                                    # 17 slow, right below a real step 19 -> 18
  assert _pairs(steps.detect_steps(t, m)) == ([(19, 18)], [(17, True)])
  m = np.array([20.0] * 4 + [10.0] * 8)
  m[2] = 25.0                                    # 20 slow above it: lone, the step stays
  assert _pairs(steps.detect_steps(t, m)) == ([(19, 18)], [(20, True)])
  m = np.array([20.0] * 4 + [10.0] * 8)
  m[3] = 25.0                                    # 19 slow, the step's own upper count
  assert _pairs(steps.detect_steps(t, m)) == ([(19, 18)], [])
  m = np.array([20.0] * 4 + [10.0] * 8)
  m[4] = 5.0                                     # 18 fast right below it: still a step
  assert _pairs(steps.detect_steps(t, m)) == ([(19, 18)], [])
  # Review: a neighbour itself out of line says nothing of the step beside it. A burst on the
  # count right below a real step (or a fast count right above it) hid the step.
  t, iqr, counts = np.arange(40, 20, -1), [0.004] * 20, [20] * 20
  m = np.array([1.1] * 8 + [1.0] * 12)
  m[9] = 1.2                                     # 31 slow, one below the step 33 -> 32
  assert _pairs(steps.detect_steps(t, m, iqr, counts)) == ([(33, 32)], [(31, True)])
  m = np.array([1.1] * 8 + [1.0] * 12)
  m[6] = 0.95                                    # 34 fast, one above it
  assert _pairs(steps.detect_steps(t, m, iqr, counts)) == ([(33, 32)], [(34, False)])
  # A zigzag across the level change (36 fast between slow 37 and 35, 35 slow between fast 36
  # and 34): each explains the other away, so neither is a lone count; the drops stay steps.
  t = np.arange(40, 30, -1)
  m = np.array([1.2] * 4 + [1.0, 1.2] + [1.0] * 4)
  assert _pairs(steps.detect_steps(t, m, [0.004] * 10, [20] * 10)) == (
      [(37, 36), (35, 34)], [])
  # A level of one count between two steps, beside a burst (a coarse grid): still steps.
  t = np.arange(200, 140, -4)
  m = np.array([3.74] * 4 + [3.22, 4.0] + [2.98] * 9)
  assert _pairs(steps.detect_steps(t, m, [0.004] * 15, [20] * 15)) == (
      [(188, 184), (180, 176)], [])


def test_the_default_k_is_four_and_both_step_tests_are_strict():
  """A mutation audit: k=3 by default, or `>=` in either step test, passed every test."""
  t = np.arange(12, 2, -1)
  se1 = 1.349 / 1.2533                           # an IQR giving a median's error of 1 (R = 1)
  m = np.array([100.0] * 5 + [100.0 - 3.5 * np.sqrt(2)] * 5)   # a drop of 3.5 pair noises
  assert steps.detect_steps(t, m, [se1] * 10, [1] * 10).steps == ()
  (s,) = steps.detect_steps(t, m, [se1] * 10, [1] * 10, k=3.0).steps
  assert (s.n_from, s.n_to) == (8, 7) and s.noise_s == pytest.approx(np.sqrt(2))
  m = np.array([1.5] * 5 + [1.0] * 5)            # an excess of exactly min_rel * L(n_hi) ...
  assert 0.5 / 1.5 * 1.5 == 0.5
  assert steps.detect_steps(t, m, min_rel=0.5 / 1.5).steps == ()
  assert len(steps.detect_steps(t, m, min_rel=0.3).steps) == 1
  (s,) = steps.detect_steps(t, m, [0.1] * 10, [4] * 10).steps   # ... or of exactly k * noise
  k = 0.5 / s.noise_s
  assert k * s.noise_s == 0.5 and s.noise_s == pytest.approx(np.sqrt(2) * 1.2533 * 0.1 / 1.349 / 2)
  assert steps.detect_steps(t, m, [0.1] * 10, [4] * 10, k=k).steps == ()


def test_curve_noise_on_an_uneven_grid_takes_the_median_per_token_trend():
  tokens = np.array([65, 50, 35, 34, 33, 20, 10])
  med = 1e-5 * tokens + np.array([0, 1, 0, -1, 0, 1, 0]) * 1e-7
  med[:3] += 1e-4                                  # a step in 50 -> 35 skews a mean trend
  drops, gaps = med[:-1] - med[1:], -np.diff(tokens).astype(float)
  rest = drops - np.median(drops / gaps) * gaps
  want = 1.4826 * np.median(np.abs(rest - np.median(rest)))
  assert steps.curve_noise(med, tokens) == pytest.approx(want, rel=1e-9)


def test_flat_pairs_and_spans_are_judged_against_the_upper_count_and_whole_span_noise():
  """A mutation audit: flat_rel taken of L(n_lo), or a span's noise taken from its last pair
  only, passed every test."""
  rep = steps.detect_steps([5, 4, 3, 2], [1.0, 0.9801, 0.9801, 0.9801], [1.0] * 4)
  assert [(f.n_hi, f.n_lo) for f in rep.flats] == [(5, 2)]   # 1.99% of 1.0 (2.03% of 0.9801)
  # 5 is noisy, 4 .. 2 tight: 5 -> 2 is within the noise of 5 and 2, not of 3 and 2.
  rep = steps.detect_steps([5, 4, 3, 2], [1.0, 0.995, 0.995, 0.995], [1.0, 1e-4, 1e-4, 1e-4])
  assert [(f.n_hi, f.n_lo) for f in rep.flats] == [(5, 2)]


def test_a_count_equal_to_its_neighbour_is_not_slower_than_it():
  """With no noise, `slower` is a strict difference: 27 (as slow as 28) is the level above the
  step, not a second count of a burst (a mutation audit: `>=` passed every test)."""
  t = np.arange(30, 16, -1)
  m = np.array([19.9, 19.9, 20.0, 20.0, 25.0] + [10.0] * 9)   # 26 slow above 26 -> 25
  (s,) = steps.detect_steps(t, m).steps
  assert (s.n_from, s.n_to, s.level_from, s.level_to, s.saving_s) == (26, 25, 27, 25, 10.0)


def test_a_step_count_out_of_line_at_either_end_of_the_curve_is_measured_from_the_end():
  """The largest (smallest) count is the level above (below) a step whose upper (lower) count is
  out of line with it (a mutation audit: leaving the end counts out passed every test)."""
  t = np.arange(30, 20, -1)
  for m in ([20.0, 25.0] + [10.0] * 8,              # 29 slow right below the largest count
            [20.0, 25.0] + [10.0] * 7 + [25.0]):    # the same, a burst at the smallest count
    (s,) = steps.detect_steps(t, m).steps
    assert (s.n_from, s.n_to, s.level_from, s.level_to, s.saving_s) == (29, 28, 30, 28, 10.0)
  (s,) = steps.detect_steps(t, [20.0] * 8 + [5.0, 10.0]).steps   # 22 fast above the smallest
  assert (s.n_from, s.n_to, s.level_from, s.level_to, s.saving_s) == (23, 22, 23, 21, 10.0)


def test_a_count_midway_between_the_levels_is_not_back_at_the_level_above():
  """`back_at` needs the next count strictly nearer the far level: one exactly midway (and
  noisy enough to agree with the level above) leaves the step standing."""
  t = np.arange(30, 16, -1)
  m = np.array([1.0] * 6 + [0.5, 0.75] + [0.5] * 6)
  iqr = np.full(14, 1e-3)
  iqr[7] = 0.2
  assert _pairs(steps.detect_steps(t, m, iqr, [1] * 14)) == ([(25, 24)], [])


def test_a_bump_whose_rebound_falls_short_of_the_slower_test_is_a_lone_slow_count():
  """The mirror of a dip: the count above is back at the level below, so the new level did not
  hold one count up; also right below the largest count and right above the smallest (a
  mutation audit: the level above not asked, or not at the second count, passed every test)."""
  t = np.arange(30, 16, -1)
  iqr, counts = [0.01] * 14, [20] * 14             # k * pair noise: 0.0118
  rep = steps.detect_steps(t, [1.02] * 5 + [1.009, 1.02] + [1.0] * 7, iqr, counts)
  assert _pairs(rep) == ([], [(24, True)])
  assert [(c.n_above, c.n_below) for c in rep.lone] == [(25, 23)]
  rep = steps.detect_steps(t, [1.009, 1.02] + [1.0] * 12, iqr, counts)
  assert _pairs(rep) == ([], [(29, True)])
  rep = steps.detect_steps(t, [1.02] * 12 + [1.0, 1.011], iqr, counts)
  assert _pairs(rep) == ([], [(18, False)])
  assert _pairs(steps.detect_steps(t, [1.02] * 6 + [1.0] * 8, iqr, counts)) == ([(25, 24)], [])


def test_a_wider_step_must_clear_min_rel_of_the_level_above():
  """26 is slow above 26 -> 25: from 27 the drop (0.995%) is below min_rel of 27's level (1.0)
  though above min_rel of 25's (0.99005): a lone slow count, not a step."""
  t = np.arange(30, 20, -1)
  rep = steps.detect_steps(t, [1.0] * 4 + [1.05] + [0.99005] * 5)
  assert _pairs(rep) == ([], [(26, True)])


def test_two_fast_counts_right_above_the_last_two_are_lone_counts():
  """The two-count rule needs the count below the two in line with the one below it, which may
  be the smallest count."""
  t = np.arange(64, 50, -1)
  m = np.array([1.0] * 10 + [0.8, 0.81] + [0.998] * 2)
  rep = steps.detect_steps(t, m, [0.004] * 14, [20] * 14)
  assert _pairs(rep) == ([], [(54, False), (53, False)])
  assert [(c.n_above, c.n_below) for c in rep.lone] == [(55, 52), (55, 52)]


def test_flat_stretches_of_a_slow_slope_follow_on_from_each_other():
  """Where a flat stretch stops growing, the next starts at its last count (a mutation audit:
  skipping the pair after each stretch passed every test)."""
  tokens = np.arange(41, 1, -1)
  med = 1.0 + 1e-3 * tokens
  rep = steps.detect_steps(tokens, med, np.full(tokens.size, 1.349e-3), np.ones(tokens.size))
  assert [(f.n_hi, f.n_lo) for f in rep.flats] == [(41, 34), (34, 27), (27, 20), (20, 13),
                                                   (13, 6), (6, 2)]


def test_refine_grid_keeps_both_ends_of_the_requested_range():
  coarse = [40, 30, 20, 10, 2]
  rep = steps.detect_steps(coarse, [1.2, 1.2, 1.0, 1.0, 1.0])
  assert steps.refine_grid(coarse, rep, lo=25, hi=27) == [27, 26, 25]
  assert steps.refine_order(coarse, rep, lo=25, hi=27) == [25, 27, 26]   # midpoint, quarter, ...


def test_a_step_whose_upper_level_has_no_mark_is_not_called_apart():
  """Mutation audit: a step is timed apart only where both levels' measurements are known and
  differ; an unknown mark on the level above (a point from before the mark) says nothing,
  whatever the level below says."""
  tokens = list(range(40, 1, -1))
  med = _staircase(tokens, edges=(32, 16))
  when = ["" if n == 17 else "A" if n > 16 else "B" for n in tokens]
  rep = steps.detect_steps(tokens, med, measured_at=when)
  assert [(s.n_from, s.n_to, s.measured_apart) for s in rep.steps] == [
      (33, 32, ()), (17, 16, ())]
  assert rep.steps[1].describe() == "17 -> 16 saves 16.7% (200 ms)"


def test_a_flat_stretch_over_two_measurements_says_its_counts_were_timed_apart():
  """A flat stretch ("pruning there buys nothing") whose counts two measurements timed was
  reported as any other, though a machine slower in the later one can hide a saving: it names
  the measurements (the marks of its counts, in token order); one measurement, or one known
  mark, says nothing. The note comes once, after the flats, where no step or lone count needs
  it first."""
  tokens = list(range(40, 1, -1))
  med = _staircase(tokens, edges=(32, 16))
  when = ["A" if n > 24 else "B" for n in tokens]          # 32 .. 17 straddles A and B
  rep = steps.detect_steps(tokens, med, measured_at=when)
  assert [(f.n_hi, f.n_lo, f.measured_apart) for f in rep.flats] == [
      (40, 33, ()), (32, 17, ("A", "B")), (16, 2, ())]
  assert rep.flats[1].describe() == (
      "32 .. 17 flat: pruning 15 tokens saves 0.0% (0 ms) (timed apart: A and B)")
  assert rep.flats[0].describe() == "40 .. 33 flat: pruning 7 tokens saves 0.0% (0 ms)"
  assert not any(s.measured_apart for s in rep.steps)
  lines = rep.describe()
  assert lines[-1] == steps.APART_NOTE and lines.count(steps.APART_NOTE) == 1
  assert lines[-4:-1] == [f.describe() for f in rep.flats]
  marks = [f"2026-12-07T20:0{'1' if n > 24 else '2'}:00.000+00:00" for n in tokens]
  assert steps.detect_steps(tokens, med, measured_at=marks).flats[1].describe().endswith(
      "(timed apart: 20:01:00.000 and 20:02:00.000 UTC)")
  unknown = ["" if n <= 24 else "A" for n in tokens]       # points from before the mark
  rep = steps.detect_steps(tokens, med, measured_at=unknown)
  assert not any(f.measured_apart for f in rep.flats)
  assert steps.APART_NOTE not in rep.describe()
  # With a step timed apart too, the note stays where it was (before the flats), said once.
  when = ["A" if n > 24 else "B" if n > 16 else "C" for n in tokens]   # 17 -> 16: B and C
  rep = steps.detect_steps(tokens, med, measured_at=when)
  assert rep.steps[1].measured_apart == ("B", "C") and rep.flats[1].measured_apart == ("A", "B")
  lines = rep.describe()
  assert lines.count(steps.APART_NOTE) == 1 and lines[-4] == steps.APART_NOTE


def test_a_flat_stretch_names_the_marks_of_its_end_counts_in_token_order():
  """A mutation audit: a flat's marks taken without its lowest count (n_lo) or its highest
  (n_hi), sorted instead of in token order, or the note given only for flats after the first."""
  tokens = list(range(40, 1, -1))
  med = _staircase(tokens, edges=(32, 16))
  when = ["B" if n > 33 else "A" for n in tokens]          # 33, 40 .. 33's lowest, alone in A
  rep = steps.detect_steps(tokens, med, measured_at=when)
  assert [(f.n_hi, f.n_lo, f.measured_apart) for f in rep.flats] == [
      (40, 33, ("B", "A")), (32, 17, ()), (16, 2, ())]
  assert not any(s.measured_apart for s in rep.steps)
  assert rep.describe()[-1] == steps.APART_NOTE
  when = ["C" if n == 32 else "A" for n in tokens]         # 32, 32 .. 17's highest, alone in C
  rep = steps.detect_steps(tokens, med, measured_at=when)
  assert [f.measured_apart for f in rep.flats] == [(), ("C", "A"), ()]


def _apart_staircase():
  """-> (tokens 40..2, medians, their report): steps 33 -> 32 and 17 -> 16 (one measurement
  above 16, another below: 17 -> 16 timed apart) and 8 a lone fast count timed in a third."""
  tokens = list(range(40, 1, -1))
  med = _staircase(tokens, edges=(32, 16))
  med[tokens.index(8)] -= 0.1
  when = ["A" if n > 16 else "B" for n in tokens]
  when[tokens.index(8)] = "C"
  return tokens, med, steps.detect_steps(tokens, med, measured_at=when)


def test_confirm_counts_takes_each_window_timed_apart_largest_saving_first_within_the_bound():
  """The counts a confirmation times again together: a step's levels and the count beyond each
  (what its tests read), a lone count's neighbours; steps by saving, then lone counts; a window
  that does not fit the bound whole is left out, a later smaller one still taken."""
  tokens, med, rep = _apart_staircase()
  assert [(s.n_from, s.n_to, bool(s.measured_apart)) for s in rep.steps] == [
      (33, 32, False), (17, 16, True)]
  assert [(c.n, c.slow, bool(c.measured_apart)) for c in rep.lone] == [(8, False, True)]
  assert steps.confirm_counts(tokens, rep) == [18, 17, 16, 15, 9, 8, 7]
  assert steps.confirm_counts(tokens, rep, limit=4) == [18, 17, 16, 15]
  assert steps.confirm_counts(tokens, rep, limit=3) == [9, 8, 7]    # the step's 4 do not fit
  med = _staircase(tokens, edges=(32, 16), jump=0.2) + 0.2 * (np.asarray(tokens) > 32)
  when = ["A" if n > 32 else "B" if n > 16 else "C" for n in tokens]   # both steps apart
  rep = steps.detect_steps(tokens, med, measured_at=when)
  assert [round(s.saving_s, 6) for s in rep.steps] == [0.4, 0.2]
  assert steps.confirm_counts(tokens, rep) == [34, 33, 32, 31, 18, 17, 16, 15]
  assert steps.confirm_counts(tokens, rep, limit=6) == [34, 33, 32, 31]   # the larger first
  assert steps.confirm_counts(tokens, steps.detect_steps(tokens, med)) == []   # one measurement


def test_a_confirmation_line_says_what_held_and_what_went():
  tokens, med, before = _apart_staircase()
  again = steps.confirm_counts(tokens, before)
  held = steps.detect_steps(tokens, med)                     # timed together: the same curve
  assert steps.confirmation_line(again, before, held) == (
      "timed 18, 17, 16, 15, 9, 8, 7 again together, in one measurement (steps and "
      "lone counts timed apart): 17 -> 16 holds (saves 16.7%); lone fast count 8 holds")
  gone = steps.detect_steps(tokens, _staircase(tokens, edges=(32,)))   # no step at 16, no dip
  assert steps.confirmation_line(again, before, gone).endswith(
      ": 17 -> 16 is no step; lone fast count 8 is gone")
  assert steps.confirmation_line([9, 8, 7], before, held).endswith(
      ": lone fast count 8 holds; 1 more timed apart, not timed again (at most 16 counts)")
  moved = steps.detect_steps(tokens, _staircase(tokens, edges=(32, 17)))   # 18 -> 17 instead
  assert steps.confirmation_line(again, before, moved).endswith(
      ": 17 -> 16 is no step; lone fast count 8 is gone; a step 18 -> 17 found (saves 16.7%)")
  slow_16 = steps.Lone(16, 17, 15, 1.3, 1.2, 1.0, slow=True)     # (a report written by hand)
  with_16 = dataclasses.replace(held, lone=(slow_16,))
  assert steps.confirmation_line(again, before, with_16).endswith(
      ": 17 -> 16 holds (saves 16.7%); lone fast count 8 is gone; a lone slow count 16 found")


def test_a_window_reaching_beyond_the_grid_is_not_half_timed_and_the_line_says_why():
  """A step timed apart whose window reaches counts outside the run's grid (held points of a
  wider grid, --resume): none of it is timed again (half a window stays timed apart, and made a
  lone count at its edge), and the line names that reason, not the bound; where no window
  fits at all (block mode, --chunk_points=2) the line still says so instead of nothing."""
  tokens = list(range(40, 1, -1))
  med = _staircase(tokens, edges=(32, 16))
  when = ["A" if n > 16 else "B" for n in tokens]       # 17 -> 16 timed apart
  rep = steps.detect_steps(tokens, med, measured_at=when)
  grid = [n for n in tokens if n >= 17]                 # this run's grid: 40 .. 17
  assert steps.confirm_counts(tokens, rep, allowed=grid) == []
  assert steps.confirm_counts(tokens, rep, allowed=tokens) == [18, 17, 16, 15]
  assert steps.confirmation_line([], rep, rep, tokens=tokens, allowed=grid) == (
      "timed nothing again together (steps and lone counts timed apart): 1 timed apart, not "
      "timed again (its counts reach beyond the token counts this run profiles)")
  assert steps.confirm_counts(tokens, rep, limit=2) == []
  assert steps.confirmation_line([], rep, rep, 2, tokens=tokens, allowed=tokens) == (
      "timed nothing again together (steps and lone counts timed apart): 1 timed apart, not "
      "timed again (at most 2 counts)")


def test_confirm_counts_windows_at_the_grid_top_out_of_line_levels_overlaps_and_the_grid():
  """A mutation audit of `confirm_counts`: a step at the grid's top has no count above its
  upper level (its window starts there, not empty); a window runs from the count beyond each
  level, not each count of the pair, where one was out of line; a lone count measured with its
  neighbours is not timed again; windows that share a count hold it once (once in the bound
  too); and a window outside the grid leaves the later ones that fit it to be timed."""
  tokens = list(range(40, 1, -1))
  rep = steps.detect_steps(tokens, _staircase(tokens, edges=(39,)),
                           measured_at=["A" if n > 39 else "B" for n in tokens])
  assert [(s.n_from, s.n_to, bool(s.measured_apart)) for s in rep.steps] == [(40, 39, True)]
  assert steps.confirm_counts(tokens, rep) == [40, 39, 38]
  med = _staircase(tokens, edges=(16,))
  med[tokens.index(17)] += 0.05                         # 17 slow, 16 fast: the levels 18, 15
  med[tokens.index(16)] -= 0.05
  when = ["A" if n > 16 else "B" for n in tokens]
  rep = steps.detect_steps(tokens, med, measured_at=when)
  assert [(s.n_from, s.n_to, s.level_from, s.level_to) for s in rep.steps] == [(17, 16, 18, 15)]
  assert steps.confirm_counts(tokens, rep) == [19, 18, 17, 16, 15, 14]
  assert steps.confirmation_line([17, 16], rep, rep).endswith(    # (its levels not timed)
      ": 1 timed apart, not timed again (at most 16 counts)")
  med = _staircase(tokens, edges=(16,))
  med[tokens.index(8)] -= 0.1                           # a lone count, timed with the rest
  rep = steps.detect_steps(tokens, med)
  assert [(c.n, c.measured_apart) for c in rep.lone] == [(8, ())]
  assert steps.confirm_counts(tokens, rep) == []
  med = _staircase(tokens, edges=(16,))
  med[tokens.index(14)] -= 0.1                          # lone 14's window 15 .. 13 meets the
  when = ["A" if n > 16 else "B" for n in tokens]       # step's 18 .. 15
  when[tokens.index(14)] = "C"
  rep = steps.detect_steps(tokens, med, measured_at=when)
  assert [(c.n, bool(c.measured_apart)) for c in rep.lone] == [(14, True)]
  assert steps.confirm_counts(tokens, rep) == [18, 17, 16, 15, 14, 13]
  assert steps.confirm_counts(tokens, rep, limit=6) == [18, 17, 16, 15, 14, 13]
  med = _staircase(tokens, edges=(32, 16), jump=0.2) + 0.2 * (np.asarray(tokens) > 32)
  when = ["A" if n > 32 else "B" if n > 16 else "C" for n in tokens]   # both steps apart
  rep = steps.detect_steps(tokens, med, measured_at=when)
  grid = [n for n in tokens if n != 34]                 # the larger step's window reaches 34
  assert steps.confirm_counts(tokens, rep, allowed=grid) == [18, 17, 16, 15]
  assert steps.confirmation_line([], rep, rep, 3, tokens=tokens, allowed=grid) == (
      "timed nothing again together (steps and lone counts timed apart): 1 timed apart, not "
      "timed again (at most 3 counts); 1 more timed apart, not timed again (its counts reach "
      "beyond the token counts this run profiles)")


def test_a_confirmation_line_names_only_what_the_counts_timed_again_hold():
  """A mutation audit of `confirmation_line`: a step or lone count found after the
  confirmation is named only among the counts timed again (elsewhere nothing was measured
  anew), a lone count that turned from fast to slow is gone and found again, of its kind;
  with the curve's counts but no grid, a window left out is the bound's; a step or lone count
  timed together (among the counts or not) is neither told, nor counted, nor found."""
  tokens, med, before = _apart_staircase()
  again = steps.confirm_counts(tokens, before)
  assert again == [18, 17, 16, 15, 9, 8, 7]
  elsewhere = steps.detect_steps(tokens, _staircase(tokens, edges=(32, 24, 16)) - 0.1 * (
      np.asarray(tokens) == 8) + 0.1 * (np.asarray(tokens) == 28))   # 25 -> 24, lone slow 28
  assert [(s.n_from, s.n_to) for s in elsewhere.steps] == [(33, 32), (25, 24), (17, 16)]
  assert [(c.n, c.slow) for c in elsewhere.lone] == [(28, True), (8, False)]
  assert steps.confirmation_line(again, before, elsewhere).endswith(
      ": 17 -> 16 holds (saves 16.7%); lone fast count 8 holds")
  slow_8 = steps.Lone(8, 9, 7, 1.3, 1.2, 1.0, slow=True)          # (a report written by hand)
  turned = dataclasses.replace(steps.detect_steps(tokens, med), lone=(slow_8,))
  assert steps.confirmation_line(again, before, turned).endswith(
      ": 17 -> 16 holds (saves 16.7%); lone fast count 8 is gone; a lone slow count 8 found")
  assert steps.confirmation_line([9, 8, 7], before, before, tokens=tokens).endswith(
      ": lone fast count 8 holds; 1 more timed apart, not timed again (at most 16 counts)")
  # Steps and lone counts timed together (in the window or not) are neither told nor found.
  when = ["A" if n > 16 else "B" for n in tokens]       # 17 -> 16 apart, 18 -> 17 not
  for med in (_staircase(tokens, edges=(17, 16)),                       # a step in the window
              _staircase(tokens, edges=(16,)) - 0.1 * (np.asarray(tokens) == 15),   # lone 15
              _staircase(tokens, edges=(16,)) - 0.1 * (np.asarray(tokens) == 8)):   # lone 8
    rep = steps.detect_steps(tokens, med, measured_at=when)
    assert len(rep.steps + rep.lone) == 2 and steps.confirm_counts(tokens, rep) == [
        18, 17, 16, 15]
    assert steps.confirmation_line([18, 17, 16, 15], rep, rep).endswith(
        "(steps and lone counts timed apart): 17 -> 16 holds (saves 16.7%)")
