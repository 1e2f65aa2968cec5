r"""How well step detection finds the steps of a latency curve: simulated staircases.

  python -m benchmarks.step_detection                      # 400 curves per stride, ~10 s
  python -m benchmarks.step_detection --burst_share=0.08 --fast_share=0.04 --noise=0.01
  python -m benchmarks.step_detection --pair_share=0.04    # bursts over two neighbouring counts

A device's latency curve is simulated as the profiler measures it (`vitprune.profile.steps`
judges exactly these inputs): token counts from `--max_tokens` down every `--strides` tokens;
a step of +5..20 % every 8..16 tokens (the latency is a product of the steps above a count),
a smooth slope of up to 0.1 % per token; per count a median of R = 5..30 samples with relative
spread `--noise` (IQR 0.5..2x of it); then single counts out of line: bursts of load (a
`--burst_share` of the counts, +10..30 %, their IQR 3x) and fast counts (`--fast_share`,
-5..15 %), and with `--pair_share` bursts over two neighbouring counts at once (each +10..30 %,
IQR 3x: a burst of load lasting two measurements, or two shapes the compiler handles badly).
`steps.detect_steps` then judges each curve. A true step is a pair of neighbouring
counts with a step edge between them; a step found elsewhere is false.

Prints, per stride: curves, true steps, found / missed / false, curves judged exactly right,
and how many of the counts put out of line were named lone counts. Writes JSON (--out). Needs
no jax or device: it measures the detector, not a machine.
"""
from __future__ import annotations

import time
from typing import Any, Dict, List, Set, Tuple

import numpy as np
from absl import flags

from experiments import common
from vitprune import atomic
from vitprune.profile import steps as steps_lib

RESULT_FORMAT = "vitprune-step-detection"


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
  """Registers this benchmark's flags."""
  flags.DEFINE_integer("curves", 400, "Simulated curves per stride.", lower_bound=1,
                       upper_bound=100_000, flag_values=fv)
  flags.DEFINE_list("strides", ["1", "2", "4"], "Token strides of the grids.", flag_values=fv)
  flags.DEFINE_integer("counts", 60, "Token counts per curve (fewer where the grid ends).",
                       lower_bound=4, upper_bound=10_000, flag_values=fv)
  flags.DEFINE_integer("max_tokens", 200, "The largest token count.", lower_bound=8,
                       upper_bound=100_000, flag_values=fv)
  flags.DEFINE_float("noise", 0.003, "Relative spread of one timed call, at most 0.25 (a "
                     "median of 5 calls then stays positive; above, the simulated medians went "
                     "negative).", lower_bound=0.0, upper_bound=0.25, flag_values=fv)
  flags.DEFINE_float("burst_share", 0.04, "Share of counts measured during a burst of load.",
                     lower_bound=0.0, upper_bound=0.5, flag_values=fv)
  flags.DEFINE_float("fast_share", 0.0, "Share of counts measured fast.", lower_bound=0.0,
                     upper_bound=0.5, flag_values=fv)
  flags.DEFINE_float("pair_share", 0.0, "Share of counts starting a burst of load over two "
                     "neighbouring counts.", lower_bound=0.0, upper_bound=0.5, flag_values=fv)
  flags.DEFINE_integer("seed", 0, "Seed.", lower_bound=0, upper_bound=common.MAX_SEED,
                       flag_values=fv)
  flags.DEFINE_string("out", "outputs/benchmark/step_detection.json", "JSON output.",
                      flag_values=fv)


def simulate(rng: np.random.Generator, *, stride: int, counts: int, max_tokens: int,
             noise: float, burst_share: float, fast_share: float, pair_share: float = 0.0
             ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Set[Tuple[int, int]],
                        Set[int]]:
  """One curve -> (tokens [P] descending, medians [P], IQRs [P], samples per count [P], the true
  step pairs {(n_hi, n_lo)}, the counts put out of line)."""
  t = max_tokens - stride * np.arange(min(counts, (max_tokens - 2) // stride + 1))
  edges, e = [], max_tokens - int(rng.integers(4, 16))
  while e > t[-1]:
    edges.append(e)
    e -= int(rng.integers(8, 17))
  jumps = 1 + rng.uniform(0.05, 0.20, len(edges))
  slope = rng.uniform(0, 0.001)
  level = np.array([np.prod(jumps[[n > x for x in edges]]) * (1 + slope * (n - t[-1]))
                    for n in t])
  samples = rng.integers(5, 31, t.size)
  sigma = noise * level
  med = level + rng.normal(0, 1, t.size) * 1.2533 * sigma / np.sqrt(samples)
  iqr = 1.349 * sigma * rng.uniform(0.5, 2.0, t.size)
  burst = rng.random(t.size) < burst_share
  med[burst] *= 1 + rng.uniform(0.10, 0.30, burst.sum())
  iqr[burst] *= 3
  fast = ~burst & (rng.random(t.size) < fast_share)
  med[fast] *= 1 - rng.uniform(0.05, 0.15, fast.sum())
  if pair_share > 0:      # (drawn only when asked: the other figures reproduce draw for draw)
    start = rng.random(t.size - 1) < pair_share
    pair = np.zeros(t.size, bool)
    pair[:-1] |= start
    pair[1:] |= start
    pair &= ~(burst | fast)
    med[pair] *= 1 + rng.uniform(0.10, 0.30, pair.sum())
    iqr[pair] *= 3
    burst |= pair
  true = {(int(a), int(b)) for a, b in zip(t, t[1:]) if any(a > x >= b for x in edges)}
  return t, med, iqr, samples, true, {int(n) for n in t[burst | fast]}


def run_stride(stride: int, f: flags.FlagValues) -> Dict[str, Any]:
  """Simulates and judges `--curves` curves of one stride -> its row."""
  rng = np.random.default_rng([f.seed, stride])
  row = {"stride": stride, "curves": f.curves, "true": 0, "found": 0, "missed": 0, "false": 0,
         "exact": 0, "out_of_line": 0, "named_lone": 0}
  for _ in range(f.curves):
    t, med, iqr, n, true, odd = simulate(
        rng, stride=stride, counts=f.counts, max_tokens=f.max_tokens, noise=f.noise,
        burst_share=f.burst_share, fast_share=f.fast_share, pair_share=f.pair_share)
    rep = steps_lib.detect_steps(t, med, iqr, n)
    got = {(s.n_from, s.n_to) for s in rep.steps}
    row["true"] += len(true)
    row["found"] += len(got & true)
    row["missed"] += len(true - got)
    row["false"] += len(got - true)
    row["exact"] += got == true
    row["out_of_line"] += len(odd)
    row["named_lone"] += len(odd & {c.n for c in rep.lone})
  return row


def table(rows: List[Dict[str, Any]]) -> str:
  """The markdown table of the rows."""
  lines = ["| stride | curves | true steps | found | missed | false | curves exact | counts out "
           "of line named lone |", "|---:|---:|---:|---:|---:|---:|---:|---|"]
  for r in rows:
    lone = (f"{r['named_lone']} / {r['out_of_line']}" if r["out_of_line"] else "-")
    lines.append(f"| {r['stride']} | {r['curves']} | {r['true']} | {r['found']} | "
                 f"{r['missed']} | {r['false']} | {r['exact']} | {lone} |")
  return "\n".join(lines)


def main(f: flags.FlagValues) -> Dict[str, Any]:
  """Runs the benchmark, prints the table, writes --out -> the JSON document."""
  atomic.check_output_json(f.out, RESULT_FORMAT, "out")
  strides = common.parse_ints(f.strides, "strides")
  if (f.max_tokens - 2) // max(strides) + 1 < steps_lib.MIN_POINTS_FOR_STEPS:
    raise ValueError(f"--strides={max(strides)} leaves fewer than "
                     f"{steps_lib.MIN_POINTS_FOR_STEPS} counts below --max_tokens="
                     f"{f.max_tokens}: no step could be called")
  t0 = time.perf_counter()
  rows = [run_stride(s, f) for s in strides]
  print(table(rows))
  doc = {"format": RESULT_FORMAT, "command": common.command_line("benchmarks.step_detection", f),
         "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": time.perf_counter() - t0,
         "rows": rows}
  common.write_result(f.out, doc, RESULT_FORMAT, indent=1)
  print(f"wrote {f.out}")
  return doc


if __name__ == "__main__":
  common.run(main, define_flags)
