r"""Export a pruned ViT as a deployment artifact (StableHLO forward + orbax weights + manifest).

  python -m experiments.deploy --weights=weights/vit_digits --method=pomt \
      --schedule=keep@3:40 --platforms=cpu,cuda --batch_size=8 --out=deploy/vit_digits_pomt
  python -m experiments.deploy --weights=DIR --solution=outputs/solve/solution.json --out=DIR

The schedule comes from `--schedule` (compact text, see `vitprune.schedule.parse_schedule`, or a
comma list of depth + 1 counts) or from a solver output (`--solution`), not both. `--method=none`
exports the unpruned model. `--symbolic_batch` exports a batch-polymorphic graph instead of the
fixed `--batch_size`. Run the artifact with `python -m experiments.run_deployed`.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

from absl import flags

from experiments import common
from vitprune import checkpoint, console, deploy, jsonio, memory
from vitprune.config import (COMPUTE_DTYPES, PRECISIONS, config_to_dict, configs_shown,
                             method_label, options_text, same_method)
from vitprune.digest import params_sha256
from vitprune.edge.targets import check_compute_dtype, host_cpu, parse_target, parse_targets
from vitprune.profile import latency_model as latency_model_lib
from vitprune.profile import records
from vitprune.records.estimate import read_estimate
from vitprune.records.solution import read_solution
from vitprune.reduce.methods import make_reducer, reducer_fields
from vitprune.schedule import format_schedule, full_schedule, parse_schedule


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
  """Registers this CLI's flags on `fv` (only when run as a script, or into a fresh FlagValues
  via `common.parse`)."""
  flags.DEFINE_string("weights", None, "Weights directory (vitprune.checkpoint.save_weights).",
                      flag_values=fv)
  flags.DEFINE_string("out", None, "Artifact directory to write.", flag_values=fv)
  flags.DEFINE_string("schedule", None, "Token schedule text (default: from --solution, else "
                      "'full').", flag_values=fv)
  flags.DEFINE_string("method", "pomt", "Token-reduction method (vitprune.reduce.methods), or "
                      "'none'.", flag_values=fv)
  flags.DEFINE_list("method_opts", [], "Reducer options as key=value (values parsed as JSON, "
                    "else kept as strings), e.g. seed=3,nested=false.", flag_values=fv)
  flags.DEFINE_string("solution", None, "Solver output JSON to take the schedule (and method) "
                      "from; recorded as provenance.", flag_values=fv)
  flags.DEFINE_string("profile", None, "Profile file the schedule was chosen with (provenance).",
                      flag_values=fv)
  flags.DEFINE_string("estimate", None, "Estimate file the schedule was chosen with "
                      "(provenance).", flag_values=fv)
  flags.DEFINE_list("platforms", [], "Export platforms (cpu, cuda, rocm, tpu); default the "
                    "local one.", flag_values=fv)
  flags.DEFINE_integer("batch_size", 1, "Fixed batch size of the exported graph (with "
                       "--solution: the batch its schedule was chosen for, unless given).",
                       flag_values=fv)
  flags.DEFINE_bool("allow_batch_mismatch", False, "Deploy a --solution at another batch size "
                    "than the one its schedule was chosen for.", flag_values=fv)
  flags.DEFINE_bool("symbolic_batch", False, "Export with a symbolic batch dimension instead.",
                    flag_values=fv)
  flags.DEFINE_enum("dtype", "float32", list(COMPUTE_DTYPES), "Compute dtype (with "
                    "--solution: the dtype its profile was timed in).", flag_values=fv)
  flags.DEFINE_enum("precision", "highest", list(PRECISIONS),
                    "float32 matmul precision.", flag_values=fv)
  flags.DEFINE_bool("verify", True, "Check the exported forward reproduces the in-process one "
                    "(when the local platform is exported; given explicitly, it must be).",
                    flag_values=fv)
  flags.DEFINE_bool("overwrite", False, "Replace an existing --out.", flag_values=fv)
  flags.DEFINE_multi_string("target", ["jax"], "Deployment targets, repeatable or comma lists: "
                            "jax, iree:host, iree:llvm-cpu:<triple>[:<cpu>], iree:cuda:<sm_XX>, "
                            "iree:vulkan (IREE modules are added next to the jax export).",
                            flag_values=fv)
  flags.DEFINE_integer("cpu_cores", None, "CPU targets: cores of the CPU the modules run "
                       "on, for batch shards (default: this machine's for iree:host, 1 for a "
                       "cross-compiled CPU; 1: never shard).", flag_values=fv)


def input_provenance(profile_path: str = "", estimate_path: str = "") -> dict:
  """Identity of the profile / estimate records a deployment came from (read strictly)."""
  out = {}
  if profile_path:
    with console.input_flag("--profile", profile_path):
      p = records.load(profile_path)
    out["profile"] = {"path": os.path.abspath(profile_path),
                      "sha256": records.measurement_sha256(p), "model": p.model,
                      "device_kind": p.device_kind, "platform": p.platform, "dtype": p.dtype,
                      "batch_sizes": list(p.batch_sizes), "modes": list(p.modes)}
    timed = latency_model_lib.calibration_method(p)       # (pruned graphs of one method)
    if timed is not None:
      out["profile"]["schedules_of"] = timed
  if estimate_path:
    with console.input_flag("--estimate", estimate_path):
      e = read_estimate(estimate_path)
    out["estimate"] = {"path": os.path.abspath(estimate_path), "sha256": e.sha256(),
                       "model": e.model, "kind": e.kind, "method": e.method,
                       "method_kwargs": e.reducer_kwargs, "weights_sha256": e.weights_sha256,
                       "data_fingerprint": e.data_fingerprint}
  return out


def check_inputs_match(provenance: dict, model: str, weights_sha256: str,
                       batch_size, dtype: str, method: Optional[str] = None,
                       reducer=None) -> None:
  """The --profile / --estimate a deployment records must be of what it deploys: the same
  model, the estimate of these weights and (`method`, None for an unpruned artifact) of this
  reducer (an estimate of the same method measured with the options `reducer` has), the
  profile timed at this batch size (any, for a symbolic batch) in this dtype and, where it
  timed pruned schedules ('schedule' points: the latency model's calibration), of this method.
  ValueError naming the mismatch."""
  prof, est = provenance.get("profile"), provenance.get("estimate")
  for name, rec in (("--profile", prof), ("--estimate", est)):
    if rec is not None and rec["model"] != model:
      raise ValueError(f"{name}={rec['path']} is of model {rec['model']!r}, the weights are "
                       f"{model!r}")
  measured = None if est is None else str(est.get("method")).strip().lower()  # (as readers
  stand_in = measured == "random" and est.get("kind") == "tokens"            # accept names)
  if (est is not None and method is not None and not stand_in
      and measured != method.strip().lower()):   # (a random-drop artifact recorded a POMT
    # estimate as its own; random drop's one curve is any method's proxy)
    raise ValueError(f"--estimate={est['path']} measured --method={est['method']}, the "
                     f"artifact prunes with --method={method}")
  said = None if est is None else est.get("method_kwargs")   # (None: provenance of old)
  ran = (make_reducer(method, **said) if reducer is not None and said is not None
         and method is not None and measured == method.strip().lower() else None)
  if ran is not None and ran != reducer:       # (nested draws deployed for per-layer ones)
    measured_with = reducer_fields(ran)        # (defaults too: {} said evit(normalize=false))
    raise ValueError(f"--estimate={est['path']} measured "
                     f"{method_label(method, measured_with)}, the artifact prunes with "
                     f"{method_label(method, reducer_fields(reducer))}: its accuracy is for "
                     f"those (give --method_opts={options_text(measured_with)})")
  if est is not None and est["weights_sha256"] != weights_sha256:
    raise ValueError(f"--estimate={est['path']} was measured on other weights (sha256 "
                     f"{est['weights_sha256'][:12]}..., these are {weights_sha256[:12]}...)")
  timed = None if prof is None else prof.get("schedules_of")
  if (timed is not None and method is not None
      and timed.strip().lower() != method.strip().lower()):
    raise ValueError(f"--profile={prof['path']} timed {timed} schedules, the artifact prunes "
                     f"with --method={method}: their latency is of other graphs")
  if prof is not None and prof["dtype"] != dtype:
    raise ValueError(f"--profile={prof['path']} was timed in {prof['dtype']}, the artifact "
                     f"computes in {dtype}")
  if prof is not None and batch_size is not None and batch_size not in prof["batch_sizes"]:
    raise ValueError(f"--profile={prof['path']} holds batch sizes {prof['batch_sizes']}, the "
                     f"artifact runs batch {batch_size} (latency steps depend on the batch)")


def _solved_before_measurement_digests(path: str, sha256: str) -> bool:
  """Whether `sha256` is the digest solutions recorded of profile `path` before they recorded
  `records.measurement_sha256`: of the profile's JSON, steps included, as the file holds them;
  of the profile record's own keys (a board profile's 'edge' entry left out, as `to_json`
  left it), or of the whole file."""
  try:
    doc = jsonio.read_json(path, "profile")
  except (OSError, ValueError):
    return False
  if jsonio.canonical_sha256(doc) == sha256:
    return True
  try:
    return jsonio.canonical_sha256(records.to_json(records.from_json(doc, path))) == sha256
  except ValueError:
    return False


def check_options_agree(sol, given: dict, solution: str) -> None:
  """--method_opts with --solution may repeat what the solution's method was measured with, not
  change it: every option when the file says them (defaults included), else those its format
  version fixes (a version-1 file's random drop drew per layer). ValueError naming each one."""
  if sol.method_kwargs is not None:
    fixed = reducer_fields(make_reducer(sol.method, **sol.method_kwargs))
  else:                                 # (None: not measured with any, or a file that does not
    fixed = sol.method_option_defaults  # say them)
  make_reducer(sol.method, **{**fixed, **given})     # (an option it lacks, a value's type)
  clash = [k for k in sorted(given) if k in fixed and given[k] != fixed[k]]
  if clash:
    gave, was = (options_text({k: opts[k] for k in clash}) for opts in (given, fixed))
    did, why = (("measured", "its accuracy is") if sol.estimate_measured_method else
                ("chose", "its schedule was chosen"))      # (paper mode's chosen.method_options)
    raise ValueError(f"--method_opts gives {gave}, but the solver output {solution} {did} "
                     f"{sol.method} with {was}: {why} for those (leave them out)")


def check_solution_inputs(provenance: dict, profile_ref, estimate_ref, solution: str) -> None:
  """With --solution, a --profile / --estimate given as well must be the very record the solution
  was solved from (same canonical sha256): the manifest records both, and two different
  profiles there contradict each other. ValueError naming the two."""
  for flag, key, ref in (("--profile", "profile", profile_ref),
                         ("--estimate", "estimate", estimate_ref)):
    rec = provenance.get(key)
    if rec is not None and ref is not None and rec["sha256"] != ref.sha256 and not (
        key == "profile" and _solved_before_measurement_digests(rec["path"], ref.sha256)):
      raise ValueError(f"{flag}={rec['path']} (sha256 {rec['sha256'][:12]}...) is not the "
                       f"{key} the solver output {solution} was solved from ({ref.path}, sha256 "
                       f"{ref.sha256[:12]}...); give that one, or leave {flag} out")


def main(f: flags.FlagValues) -> str:
  """Checks the flags and --out, exports, prints the manifest summary; returns the artifact
  path."""
  if not f.weights or not f.out:
    raise ValueError("--weights and --out are required")
  common.check_new_dir(f.out, "out", overwrite=f.overwrite)
  targets = parse_targets(f.target)  # a bad --target fails before any work
  common.positive(f.cpu_cores, "cpu_cores", allow_none=True)
  if f.cpu_cores is not None and not any(t.backend == "llvm-cpu" for t in targets):
    raise ValueError("--cpu_cores needs an IREE CPU target (iree:host or iree:llvm-cpu:...)")
  if not f.symbolic_batch:
    common.positive(f.batch_size, "batch_size")
  elif f["batch_size"].present:
    raise ValueError("--batch_size applies without --symbolic_batch (a symbolic batch takes "
                     "any size)")
  elif any(t.is_iree for t in targets):    # (refused only after the jax export)
    raise ValueError(f"--symbolic_batch exports for the jax target only: IREE modules take a "
                     f"fixed batch (--target={next(t.text for t in targets if t.is_iree)}); "
                     "drop --symbolic_batch or the IREE target")
  if f.allow_batch_mismatch and not f.solution:
    raise ValueError("--allow_batch_mismatch applies with --solution only")
  platforms = deploy.normalize_platforms(f.platforms or None)
  if f.verify and deploy.local_platform() not in platforms and f["verify"].present:
    raise ValueError(f"--verify checks the export on this machine's platform "
                     f"({deploy.local_platform()}), which --platforms={','.join(platforms)} does "
                     f"not export: add it to --platforms or leave --verify out")
  cfg, meta = checkpoint.read_weights_config(f.weights, named=f"--weights={f.weights}")
  method, dtype = f.method, f.dtype
  provenance = {}
  batch_size = None if f.symbolic_batch else f.batch_size
  if f.solution:
    if f["schedule"].present:
      raise ValueError("give either --schedule or --solution, not both")
    with console.input_flag("--solution", f.solution):
      sol = read_solution(f.solution)
    if sol.config != cfg:
      theirs, ours = ((repr(sol.model), repr(cfg.name)) if sol.model != cfg.name else
                      configs_shown(sol.model, config_to_dict(sol.config), cfg.name,
                                    config_to_dict(cfg)))
      raise ValueError(f"solver output {f.solution} is for model {theirs}, the weights "
                       f"{f.weights} are {ours}")
    if f["method"].present and not same_method(f.method, sol.method):
      raise ValueError(f"--method={f.method} conflicts with the solver output's method "
                       f"{sol.method!r}")
    method, schedule = sol.method, sol.schedule
    provenance["solution"] = sol.provenance()
    chosen_for = sol.profile.batch_size
    if not f["batch_size"].present and not f.symbolic_batch:
      batch_size = chosen_for
    elif batch_size not in (None, chosen_for) and not f.allow_batch_mismatch:
      # (a symbolic batch covers the chosen one)
      raise ValueError(f"--batch_size={batch_size}, but the solver output {f.solution} chose "
                       f"its schedule for "
                       f"batch {chosen_for} (latency steps depend on the batch size); pass "
                       f"--batch_size={chosen_for}, or --allow_batch_mismatch to deploy it "
                       "anyway")
    timed_in = sol.profile.dtype
    if not f["dtype"].present:
      dtype = timed_in
    elif dtype != timed_in:
      raise ValueError(f"--dtype={dtype}, but the solver output {f.solution} timed its schedule "
                       f"in {timed_in} (latency steps depend on the dtype); pass "
                       f"--dtype={timed_in}, or deploy the schedule by text "
                       f"(--schedule={sol.schedule})")
  else:
    schedule = parse_schedule(cfg, f.schedule or "full")
  check_compute_dtype(targets, dtype, "deploy bfloat16 for --target=jax alone")
  memory.check_batch_fits(cfg, [batch_size or 1], dtype)    # before the export, naming the fit
  provenance.update(input_provenance(f.profile, f.estimate))
  if f.solution:
    check_solution_inputs(provenance, sol.profile, sol.estimate, f.solution)
  reducer, opts = None, common.parse_method_options(f.method_opts)
  if f.solution:
    check_options_agree(sol, opts, f.solution)
    opts = sol.reducer_options(opts)      # (a version-1 file's random drop: nested=False)
  if method.lower() != "none":
    reducer = make_reducer(method, **opts)
  elif opts:
    raise ValueError("--method_opts given with --method=none")
  elif schedule != full_schedule(cfg):    # (export_artifact said "no reducer was given", later)
    raise ValueError(f"--method=none, but the schedule {format_schedule(schedule, cfg)} removes "
                     "tokens: give the method that removes them (e.g. --method=pomt)")
  if schedule == full_schedule(cfg):
    given = [] if f.solution else common.given_flags(f, ("method", "method_opts"))
    if given and method.lower() != "none":       # (recorded as the artifact's reducer, unused)
      shown = {"--method": f"--method={f.method}",
               "--method_opts": f"--method_opts={','.join(f.method_opts)}"}
      raise ValueError(f"{' / '.join(shown[g] for g in given)} given, but --schedule="
                       f"{f.schedule or 'full'} removes no token: nothing would use the "
                       "reducer (give a --schedule that prunes, or leave them out)")
    reducer = None     # an unpruned artifact names no reducer (it said pomt, the default, or
                       # a solution's method when it chose the unpruned schedule)
  _, params = checkpoint.load_weights(f.weights)
  common.note_smoke_run(f.weights, meta)
  weights_sha256 = params_sha256(params)
  if f.solution:
    sol.check_weights(weights_sha256, f"--weights={f.weights}")
  # The estimate's method is the artifact's unless a solution names its own estimate (checked
  # by sha256 above: paper mode solves with random drop's embed curve for any method) or the
  # artifact prunes nothing.
  # (an unpruned artifact has no reducer, above)
  check_inputs_match(provenance, cfg.name, weights_sha256, batch_size, dtype,
                     method if reducer is not None and not f.solution else None, reducer)
  names = checkpoint.read_class_names(f.weights)
  path = deploy.export_artifact(
      f.out, cfg, params, schedule=schedule, reducer=reducer,
      reducer_name=None if reducer is None else method.lower(), reducer_options=opts,
      platforms=f.platforms or None, batch_size=batch_size,
      dtype=dtype, precision=f.precision, provenance=provenance,
      weights_source={"path": os.path.abspath(f.weights), "meta": meta},
      class_names=names, verify=f.verify, overwrite=f.overwrite, targets=f.target,
      cpu_cores=f.cpu_cores)
  m = deploy.read_manifest(path)
  print(f"wrote {common.shown(path)}")
  print(f"  model {m.model}, schedule {m.schedule_text} "
        f"(counts {','.join(map(str, m.counts))}), reducer "
        f"{method_label(m.reducer_name, m.reducer.get('fields')) if m.reducer else 'none'}")
  print(f"  input {list(m.input_shape)} float32 -> output {list(m.output_shape)}, "
        f"compute {m.dtype}, platforms {','.join(m.platforms)}")
  print(f"  weights sha256 {m.weights['sha256']}")
  print(f"  targets {','.join(m.targets)}")
  if f.verify and deploy.local_platform() not in m.platforms:
    print(f"note: not verified: the export holds no {deploy.local_platform()} module to run "
          "here (--verify checks it on this machine)")
  if f.solution or f.profile:      # (a --profile alone said nothing of another device)
    said, prof = ((f"{common.shown(f.solution)} chose its schedule on a profile of",
                   {"device_kind": sol.profile.device_kind, "platform": sol.profile.platform})
                  if f.solution else
                  (f"--profile={common.shown(f.profile)} was timed on", provenance["profile"]))
    note = _device_note(prof["device_kind"], prof["platform"], targets, m.platforms,
                        f.symbolic_batch)
    if note:
      print(f"note: {said} {common.shown(prof['device_kind'])} ({prof['platform']}){note}")
  return path


def _device_note(device_kind: str, platform: str, targets, platforms: Sequence[str],
                 symbolic_batch: bool) -> Optional[str]:
  """How the artifact (`targets`, its JAX `platforms`) differs from the device a profile of
  `device_kind` on `platform` timed -> the end of a note after that device's name, or None."""
  if platform.startswith("iree") and not any(t.is_iree for t in targets):
    return (", an IREE board; this artifact holds the JAX export only: add --target=iree:... to "
            "build the module that board runs" + (" (IREE modules take a fixed batch: without "
                                                  "--symbolic_batch)" if symbolic_batch else ""))
  if platform.startswith("iree"):
    # (any IREE target silenced the note: a profile of an sm_87 board deployed for the host CPU)
    board = _board_note(device_kind, targets)
    return None if board is None else f"; {board}"
  if not set(_EXPORT_PLATFORMS.get(platform, (platform,))) & set(platforms):
    # (a schedule chosen on H100 latency deployed for the CPU said nothing; latency steps
    # depend on the device at least as much as on the batch size, which is refused)
    return (f"; this artifact exports for {','.join(platforms)}: its latency steps were "
            "measured on another device")
  return None


def _board_note(device_kind: str, targets) -> Optional[str]:
  """How the IREE modules of `targets` differ from what an IREE board's profile timed (its
  device kind: the kit's target, then for a CPU target the CPU's model, as `vitprune.edge.kit`
  names it) -> the end of a note, or None (the same target; a device kind naming none):
  another backend is another device; another CPU target of the same backend, code generated
  for another CPU; `iree:host` on both, another host's CPU when the models differ."""
  words = device_kind.split(None, 1)
  try:
    board = parse_target(words[0]) if words else None
  except ValueError:
    return None
  iree = [t for t in targets if t.is_iree]
  if board is None or not iree:
    return None
  if board in iree:
    model = host_cpu()["model"]
    if board.text != "iree:host" or len(words) < 2 or words[1] == model:
      return None
    return (f"this artifact's iree:host module is built for this machine's CPU ({model}): "
            "its latency steps were measured on another CPU")
  texts = ",".join(t.text for t in iree)
  if board.backend == "llvm-cpu" and any(t.backend == "llvm-cpu" for t in iree):
    return (f"its latency steps were timed on a module for {board.text}, this artifact's are "
            f"for {texts}: code generated for another CPU may move them")
  return (f"this artifact's IREE modules are for {texts}: its latency steps were measured on "
          "another device")


# A profile's jax platform -> the export platforms that run on it.
_EXPORT_PLATFORMS = {"gpu": ("cuda", "rocm")}


if __name__ == "__main__":
  common.run(main, define_flags)
