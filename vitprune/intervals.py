"""95 % intervals of measured accuracies (no jax): the Wilson interval of one proportion, and
the change of a pruned graph against the unpruned one measured on the same images (paired).

A pair is the four image counts of two graphs on the same images: both right, the unpruned one
only ("lost" by pruning), the pruned one only ("gained"), neither (`pair_counts`).
"""
from __future__ import annotations

from typing import Any, Dict, Sequence, Tuple

import numpy as np

from vitprune.console import counted


def wilson_interval(p: float, n: int, z: float = 1.959963984540054) -> Tuple[float, float]:
  """Wilson score interval (default 95 %) of a proportion `p` measured on `n` examples."""
  _check_n(n)
  _check_z(z)
  if not 0.0 <= p <= 1.0:
    raise ValueError(f"a proportion must be in [0, 1], got {p}")
  z2 = z * z
  den = 1.0 + z2 / n
  centre = (p + z2 / (2 * n)) / den
  half = z * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / den
  # The interval holds p exactly (at p = 0 or 1 float rounding put the bound a hair inside).
  return float(min(p, max(0.0, centre - half))), float(max(p, min(1.0, centre + half)))


def _check_n(n: Any) -> None:
  """ValueError unless `n` is a whole number of examples >= 1 (NaN gave (0, 1), inf (p, p))."""
  if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
    raise ValueError(f"need at least one example (a whole number), got {n!r}")


def _check_z(z: Any) -> None:
  """ValueError unless `z` is a finite number > 0 (0 gave an interval of width 0)."""
  if isinstance(z, bool) or not isinstance(z, (int, float, np.integer, np.floating)) or not (
      np.isfinite(z) and z > 0):
    raise ValueError(f"z must be a finite number > 0 (1.96: 95 %), got {z!r}")


def _image_counts(pair: Sequence[Any]) -> Tuple[int, int, int, int]:
  """(both right, lost, gained, both wrong) as ints: whole counts >= 0 of at least one image,
  else ValueError naming them."""
  vals = tuple(pair)
  ok = len(vals) == 4 and all(not isinstance(v, (bool, np.bool_)) and (
      isinstance(v, (int, np.integer)) or
      (isinstance(v, (float, np.floating)) and float(v).is_integer())) for v in vals)
  if not ok or min(vals) < 0 or sum(vals) < 1:
    raise ValueError(f"need 4 whole image counts >= 0 (both right, lost, gained, both wrong) "
                     f"and at least one image, got {list(vals)}")
  return tuple(int(v) for v in vals)


def paired_drop_interval(both_right: int, lost: int, gained: int, both_wrong: int,
                         z: float = 1.959963984540054) -> Tuple[float, float, float]:
  """The drop of a pruned graph against the unpruned one measured on the same images, with its
  paired 95 % interval -> (drop, low, high). Per image: `both_right`, `lost` (the unpruned graph
  right, the pruned one wrong), `gained` (the reverse), `both_wrong`; drop = (lost - gained) / n.
  Newcombe's hybrid score interval for a difference of paired proportions (Stat. Med. 1998,
  method 10): the two Wilson intervals combined with the images' correlation phi (corrected as
  published: (ad - bc - n/2) / sqrt(...) when ad - bc > n/2, 0 up to n/2), so it is far
  narrower than two unpaired intervals when the graphs mostly agree, yet not degenerate when
  few or no images differ (the unpruned graph's own uncertainty remains)."""
  a, b, c, d = _image_counts((both_right, lost, gained, both_wrong))
  _check_z(z)
  n = a + b + c + d
  p1, p2 = (a + b) / n, (a + c) / n          # unpruned, pruned
  l1, u1 = wilson_interval(p1, n, z)
  l2, u2 = wilson_interval(p2, n, z)
  den = float(a + b) * (c + d) * (a + c) * (b + d)
  cross = float(a * d - b * c)
  if cross > n / 2:
    cross -= n / 2
  elif cross > 0:
    cross = 0.0
  phi = cross / np.sqrt(den) if den > 0 else 0.0
  drop = p1 - p2
  below = np.sqrt(max((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2, 0.0))
  above = np.sqrt(max((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2, 0.0))
  return float(drop), float(max(-1.0, drop - below)), float(min(1.0, drop + above))


def change_interval(pair: Sequence[int], metric: str, identical: bool = False
                    ) -> Tuple[float, float, float]:
  """A pruned graph's `metric` minus the unpruned graph's on the same images, with its 95 %
  interval -> (change, low, high), from `pair` = the images both get right, the unpruned one
  only, the pruned one only, neither (`estimate.paired_counts`). Accuracy: the paired interval
  (`paired_drop_interval`). Agreement: the unpruned graph agrees with itself on every image, so
  the change is agreement - 1 exactly and its interval the Wilson interval of the agreement,
  minus 1. `identical`: the unpruned graph itself, change 0 with no uncertainty."""
  if metric not in ("accuracy", "agreement"):
    raise ValueError(f"metric must be 'accuracy' or 'agreement', got {metric!r}")
  both_right, lost, gained, both_wrong = _image_counts(pair)
  n = both_right + lost + gained + both_wrong
  if identical:
    if lost or gained:
      raise ValueError(f"the unpruned graph differs from itself on {lost + gained} images")
    return 0.0, 0.0, 0.0
  if metric == "agreement":
    if gained or both_wrong:
      raise ValueError(f"agreement with the unpruned graph counted {gained + both_wrong} images "
                       "the unpruned graph itself disagrees with")
    lo, hi = wilson_interval(both_right / n, n)
    return both_right / n - 1.0, lo - 1.0, hi - 1.0
  drop, lo, hi = paired_drop_interval(both_right, lost, gained, both_wrong)
  return 0.0 - drop, 0.0 - hi, 0.0 - lo


def pair_counts(unpruned_right: np.ndarray, pruned_right: np.ndarray
                ) -> Tuple[int, int, int, int]:
  """`[M]` bools, each graph right on each image -> (both right, lost, gained, both wrong)."""
  ref, got = np.asarray(unpruned_right), np.asarray(pruned_right)
  for what, a in (("unpruned_right", ref), ("pruned_right", got)):
    if a.dtype != bool:     # (margins or NaN were cast: a negative margin counted as right)
      raise TypeError(f"{what} must be bools (right on each image), got {a.dtype} (compare "
                      "margins with > 0 first)")
  if ref.shape != got.shape or ref.ndim != 1:
    raise ValueError(f"need two [M] arrays of the same images, got {ref.shape} and {got.shape}")
  return (int(np.sum(ref & got)), int(np.sum(ref & ~got)), int(np.sum(~ref & got)),
          int(np.sum(~ref & ~got)))


def change_record(pair: Sequence[int], metric: str, identical: bool = False) -> Dict[str, Any]:
  """`change_interval` as JSON: {"value", "interval_95": [low, high], "images_lost",
  "images_gained"}."""
  change, lo, hi = change_interval(pair, metric, identical)
  return {"value": change, "interval_95": [lo, hi], "images_lost": int(pair[1]),
          "images_gained": int(pair[2])}


def accuracy_record(correct: int, n: int) -> Dict[str, Any]:
  """The accuracy of `correct` right of `n` images as JSON: {"value", "correct", "num_images",
  "interval_95": the Wilson interval}."""
  _check_n(n)
  if isinstance(correct, bool) or not isinstance(correct, (int, np.integer)) or not (
      0 <= correct <= n):
    raise ValueError(f"need a whole number of images right in 0..{n}, got {correct!r}")
  lo, hi = wilson_interval(correct / n, n)
  return {"value": correct / n, "correct": int(correct), "num_images": int(n),
          "interval_95": [lo, hi]}


def describe_accuracy(record: Dict[str, Any]) -> str:
  """An `accuracy_record`: '0.9749 (350/359; 95% interval 0.9530..0.9868)'."""
  lo, hi = record["interval_95"]
  return (f"{record['value']:.4f} ({record['correct']}/{record['num_images']}; 95% interval "
          f"{lo:.4f}..{hi:.4f})")


def describe_change(change: Dict[str, Any]) -> str:
  """A `change_record`: '-0.0084 (paired 95% interval -0.0167..+0.0000: 3 images lost, 1
  gained)'."""
  lo, hi = change["interval_95"]
  return (f"{change['value']:+.4f} (paired 95% interval {lo:+.4f}..{hi:+.4f}: "
          f"{counted(change['images_lost'], 'image')} lost, "
          f"{change['images_gained']} gained)")
