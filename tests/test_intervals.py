"""95 % intervals of measured accuracies (`vitprune.intervals`): Wilson, the paired change of a
pruned graph against the unpruned one (Newcombe's method 10), against published values."""
import numpy as np
import pytest

from vitprune import intervals


def test_wilson_interval_hand_computed():
  # 50 / 100: centre (0.5 + z^2/200) / (1 + z^2/100) = 0.5; half = z sqrt(0.0025 + z^2/40000)
  # / (1 + z^2/100) = 0.0961696...
  z = 1.959963984540054
  half = z * np.sqrt(0.0025 + z * z / 40000) / (1 + z * z / 100)
  lo, hi = intervals.wilson_interval(0.5, 100)
  assert (lo, hi) == pytest.approx((0.5 - half, 0.5 + half), abs=1e-12)
  assert (lo, hi) == pytest.approx((0.40383, 0.59617), abs=1e-5)
  lo, hi = intervals.wilson_interval(1.0, 10)      # 10 / 10: lower bound n / (n + z^2)
  assert lo == pytest.approx(10 / (10 + z * z), abs=1e-12) and hi == pytest.approx(1.0)
  with pytest.raises(ValueError):
    intervals.wilson_interval(0.5, 0)
  # The interval always holds p itself (at 0 and 1 float rounding put a bound a hair inside for
  # about half of all n), so a solution's reader accepts what the solver wrote.
  for n in range(1, 3000):
    for p in (0.0, 1.0):
      lo, hi = intervals.wilson_interval(p, n)
      assert lo <= p <= hi, (p, n, lo, hi)


def test_paired_drop_interval_matches_published_examples_and_covers():
  """Newcombe's method 10 with its corrected phi. Published: Fagerland, Lydersen & Laake's
  textbook example (59, 6, 16, 80): -0.0621 (-0.1186 to -0.0046); Newcombe 1998's example
  (36, 12, 2, 0): 0.2000 (0.0569 to 0.3404), where ad < bc leaves phi uncorrected."""
  drop, lo, hi = intervals.paired_drop_interval(59, 6, 16, 80)
  assert (drop, lo, hi) == pytest.approx((-0.0621, -0.1186, -0.0046), abs=5e-5)
  drop, lo, hi = intervals.paired_drop_interval(36, 12, 2, 0)
  assert (drop, lo, hi) == pytest.approx((0.2, 0.0569, 0.3404), abs=5e-5)
  drop, lo, hi = intervals.paired_drop_interval(116, 0, 1, 3)
  # Paired is narrower than the unpaired interval (the same with phi = 0: independent samples)
  # where the graphs mostly agree...
  p1, p2 = 116 / 120, 117 / 120
  l1, u1 = intervals.wilson_interval(p1, 120)
  l2, u2 = intervals.wilson_interval(p2, 120)
  unpaired = np.hypot(p1 - l1, u2 - p2) + np.hypot(u1 - p1, p2 - l2)
  assert hi - lo < 0.75 * unpaired
  # Where 0 < ad - bc <= n / 2 the corrected phi is 0: the interval is the two Wilson intervals
  # combined as for independent samples (phi uncorrected would narrow it: 0.426 for 0.465).
  for counts in ((2, 1, 1, 1), (10, 10, 10, 11), (5, 3, 2, 2)):
    a, b, c, d = counts
    n = sum(counts)
    assert 0 < a * d - b * c <= n / 2, counts
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = intervals.wilson_interval(p1, n)
    l2, u2 = intervals.wilson_interval(p2, n)
    drop, lo, hi = intervals.paired_drop_interval(*counts)
    assert (lo, hi) == pytest.approx((max(-1.0, drop - np.hypot(p1 - l1, u2 - p2)),
                                      min(1.0, drop + np.hypot(u1 - p1, p2 - l2))), abs=1e-12)
  assert intervals.paired_drop_interval(2, 1, 1, 1)[2] == pytest.approx(0.465, abs=5e-4)
  # A zero margin (the unpruned graph right on every image: no correlation to estimate) has
  # phi 0 as well; phi 1 there left the drop's lower end at 0.0415 instead of 0.0033.
  l1, u1 = intervals.wilson_interval(1.0, 100)
  l2, u2 = intervals.wilson_interval(0.95, 100)
  drop, lo, hi = intervals.paired_drop_interval(95, 5, 0, 0)
  assert (drop, lo, hi) == pytest.approx((0.05, 0.05 - np.hypot(1.0 - l1, u2 - 0.95),
                                          0.05 + np.hypot(u1 - 1.0, 0.95 - l2)), abs=1e-12)
  assert lo == pytest.approx(0.0033, abs=5e-5)
  # ... but not degenerate where no image differs (the unpruned accuracy's own uncertainty).
  drop, lo, hi = intervals.paired_drop_interval(229, 0, 0, 10)
  assert drop == 0 and lo < -0.005 and hi > 0.005
  with pytest.raises(ValueError, match="need 4 whole image counts >= 0"):
    intervals.paired_drop_interval(1, -1, 0, 0)
  with pytest.raises(ValueError, match="need 4 whole image counts >= 0"):
    intervals.paired_drop_interval(0, 0, 0, 0)
  # Coverage: 2000 draws of 240 paired images whose true drop is 0.01 (unpruned right 0.97,
  # pruned 0.96, 2 % of the images differ); the 95 % interval holds 0.01 in at least 93 %.
  rng = np.random.default_rng(0)
  probs = [0.95, 0.015, 0.005, 0.03]        # both right, lost, gained, both wrong
  covered = 0
  for _ in range(2000):
    counts = rng.multinomial(240, probs)
    _, lo, hi = intervals.paired_drop_interval(*counts)
    covered += lo <= 0.01 <= hi
  assert 0.93 * 2000 <= covered <= 0.99 * 2000, covered      # (97.5 % here; Wald's: 93 %)


def test_change_interval_by_metric():
  """Accuracy: minus the paired drop interval. Agreement: the unpruned graph agrees with itself
  exactly, so the change is agreement - 1 with the Wilson interval of the agreement, minus 1
  (never above 0). The unpruned graph itself: 0, no uncertainty."""
  change, lo, hi = intervals.change_interval((59, 6, 16, 80), "accuracy")
  assert (change, lo, hi) == pytest.approx((0.0621, 0.0046, 0.1186), abs=5e-5)
  change, lo, hi = intervals.change_interval((57, 3, 0, 0), "agreement")
  wl, wh = intervals.wilson_interval(57 / 60, 60)
  assert (change, lo, hi) == pytest.approx((57 / 60 - 1, wl - 1, wh - 1), abs=1e-15)
  assert intervals.change_interval((60, 0, 0, 0), "agreement")[2] == 0.0
  assert intervals.change_interval((50, 0, 0, 10), "accuracy", identical=True) == (0, 0, 0)
  with pytest.raises(ValueError, match="the unpruned graph differs from itself on 2 images"):
    intervals.change_interval((50, 1, 1, 8), "accuracy", identical=True)
  for pair in ((50, 1, 0, 9), (50, 0, 1, 9)):       # each kind alone (mutation audit)
    with pytest.raises(ValueError, match="the unpruned graph differs from itself on 1 images"):
      intervals.change_interval(pair, "accuracy", identical=True)
  with pytest.raises(ValueError, match="agreement with the unpruned graph counted 3 images"):
    intervals.change_interval((50, 1, 1, 2), "agreement")
  for pair, k in (((5, 1, 0, 1), 1), ((5, 1, 2, 0), 2)):    # each kind alone (mutation audit)
    with pytest.raises(ValueError, match=f"agreement with the unpruned graph counted {k} images"):
      intervals.change_interval(pair, "agreement")
  # Counts are whole, >= 0, of at least one image, on every path; the metric is one of two.
  assert intervals.change_interval((3.0, 0, 0, 1), "accuracy") == (
      intervals.change_interval((3, 0, 0, 1), "accuracy"))
  for bad in ((0, 0, 0, 0), (5, -1, 0, 0), (2.9, 0, 0, 1), (1, 2, 3), (float("nan"), 0, 0, 1)):
    for metric in ("accuracy", "agreement"):
      with pytest.raises(ValueError, match=r"need 4 whole image counts >= 0 \(both right, lost, "
                         r"gained, both wrong\) and at least one image"):
        intervals.change_interval(bad, metric)
  with pytest.raises(ValueError, match="metric must be 'accuracy' or 'agreement', got 'kl'"):
    intervals.change_interval((3, 1, 0, 0), "kl")


def test_pair_counts_and_change_record():
  right_u = np.array([1, 1, 1, 0, 0, 1], bool)
  right_p = np.array([1, 0, 1, 1, 0, 1], bool)
  pair = intervals.pair_counts(right_u, right_p)
  assert pair == (3, 1, 1, 1)
  record = intervals.change_record(pair, "accuracy")
  assert record["value"] == 0.0 and (record["images_lost"], record["images_gained"]) == (1, 1)
  assert record["interval_95"][0] < 0 < record["interval_95"][1]
  assert intervals.describe_change(record).startswith("+0.0000 (paired 95% interval -0.")
  assert intervals.describe_change(record).endswith(": 1 image lost, 1 gained)")
  with pytest.raises(ValueError, match=r"need two \[M\] arrays of the same images"):
    intervals.pair_counts(right_u, right_p[:5])
  with pytest.raises(ValueError, match=r"need two \[M\] arrays .*got \(2, 2\) and \(2, 2\)"):
    intervals.pair_counts(np.ones((2, 2), bool), np.ones((2, 2), bool))   # (same shape, 2-D)
  for bad in (np.array([-0.5, 0.3]), np.array([1, 0]), np.array([np.nan, 1.0])):
    with pytest.raises(TypeError, match=r"^pruned_right must be bools \(right on each image\), "
                       r"got (float64|int64) \(compare margins with > 0 first\)$"):
      intervals.pair_counts(np.array([True, False]), bad)   # (a negative margin counted right)


def test_accuracy_record_and_its_line():
  """What run_deployed and `vitprune.edge run` report: the Wilson interval of the images right."""
  r = intervals.accuracy_record(350, 359)
  lo, hi = intervals.wilson_interval(350 / 359, 359)
  assert r == {"value": 350 / 359, "correct": 350, "num_images": 359, "interval_95": [lo, hi]}
  assert intervals.describe_accuracy(r) == "0.9749 (350/359; 95% interval 0.9530..0.9868)"
  assert intervals.accuracy_record(np.int64(0), 4)["interval_95"][0] == 0.0
  for bad in (True, 5, -1, 2.0):
    with pytest.raises(ValueError, match=r"a whole number of images right in 0\.\.4, got"):
      intervals.accuracy_record(bad, 4)
  with pytest.raises(ValueError, match="at least one example"):
    intervals.accuracy_record(0, 0)


def test_impossible_counts_and_z_are_refused_not_turned_into_intervals():
  """n = NaN gave (0, 1), n = inf (p, p), z = 0 or negative an interval of width 0, bools were
  taken as counts: each is now an error naming the argument."""
  for n in (float("nan"), float("inf"), True, 2.0, 0, -3):
    with pytest.raises(ValueError, match=r"need at least one example \(a whole number\), got"):
      intervals.wilson_interval(0.5, n)
  for p in (-0.01, 1.01, float("nan")):
    with pytest.raises(ValueError, match=r"^a proportion must be in \[0, 1\], got"):
      intervals.wilson_interval(p, 10)
  assert intervals.wilson_interval(1.0, 10)[1] == intervals.wilson_interval(0.0, 10)[0] + 1.0
  for z in (0, -1.96, float("nan"), float("inf"), True, "1.96"):
    with pytest.raises(ValueError, match=r"z must be a finite number > 0 \(1\.96: 95 %\), got"):
      intervals.wilson_interval(0.5, 10, z=z)
    with pytest.raises(ValueError, match="z must be a finite number > 0"):
      intervals.paired_drop_interval(90, 5, 2, 3, z=z)
  with pytest.raises(ValueError, match="need 4 whole image counts"):
    intervals.paired_drop_interval(True, False, False, False)
  assert intervals.wilson_interval(0.5, np.int64(100)) == intervals.wilson_interval(0.5, 100)
  assert intervals.paired_drop_interval(90.0, 5, 2, np.int32(3))[0] == pytest.approx(0.03)


def test_wilson_bounds_are_clamped_to_0_1():
  """The raw Wilson bounds fall a hair outside [0, 1] at p = 0 (n = 21: -1e-17) and p = 1
  (n = 16: 1 + 2e-16): both are clamped, so no bound is negative or above 1."""
  z = 1.959963984540054
  assert intervals.wilson_interval(0.0, 21) == (0.0, pytest.approx(z * z / (21 + z * z)))
  assert intervals.wilson_interval(1.0, 16) == (pytest.approx(16 / (16 + z * z)), 1.0)
  for n in range(1, 3000):
    for p in (0.0, 1.0):
      lo, hi = intervals.wilson_interval(p, n)
      assert 0.0 <= lo <= hi <= 1.0, (p, n, lo, hi)


def test_asymmetric_pair_counts_record_and_line():
  """Lost and gained differ, so a swap of the two shows (the pair (3, 1, 1, 1) above cannot)."""
  right_u = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0], bool)
  right_p = np.array([1, 1, 0, 0, 0, 1, 0, 0, 0, 0], bool)
  pair = intervals.pair_counts(right_u, right_p)
  assert pair == (2, 3, 1, 4)
  record = intervals.change_record(pair, "accuracy")
  drop, lo, hi = intervals.paired_drop_interval(*pair)
  assert record == {"value": -drop, "interval_95": [-hi, -lo], "images_lost": 3,
                    "images_gained": 1}
  assert record["value"] == pytest.approx(-0.2)
  assert intervals.describe_change(record) == (
      f"-0.2000 (paired 95% interval {-hi:+.4f}..{-lo:+.4f}: 3 images lost, 1 gained)")
  none_lost = intervals.change_record((5, 0, 2, 3), "accuracy")
  assert intervals.describe_change(none_lost).endswith(": 0 images lost, 2 gained)")
  with pytest.raises(TypeError, match=r"^unpruned_right must be bools \(right on each image\), "
                     r"got int64"):
    intervals.pair_counts(np.array([1, 0]), np.array([True, False]))


def test_accuracy_record_of_every_image_right():
  """correct == n is allowed (0..n inclusive): the value 1 and the Wilson interval
  [n / (n + z^2), 1]."""
  z = 1.959963984540054
  r = intervals.accuracy_record(4, 4)
  assert r["value"] == 1.0 and r["correct"] == 4 and r["num_images"] == 4
  assert r["interval_95"] == [pytest.approx(4 / (4 + z * z), abs=1e-12), 1.0]
  assert intervals.describe_accuracy(r) == "1.0000 (4/4; 95% interval 0.5101..1.0000)"
