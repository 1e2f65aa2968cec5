"""Typed records passed between the stages (no jax in this package).

  profile   `vitprune.profile.records.Profile`     latency L(n) / per-block table (stage 1)
  estimate  `vitprune.records.estimate.Estimate`   accuracy A(n) / sensitivity S[l, n] (stage 2)
  solution  `vitprune.records.solution.Solution`   the chosen schedule + frontier (stage 3)
  manifest  `vitprune.records.manifest.Manifest`   what a deployment artifact holds (deploy)

Each record is a frozen dataclass with one `to_json()` and one `from_json(doc, where)`; files are
read and written only at the edges (the CLIs and the pipeline's output step). A solution's
human-readable summary lives beside it in `vitprune.records.solution_text`.
"""
