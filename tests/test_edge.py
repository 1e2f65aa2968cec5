"""Edge deployment: IREE targets vs JAX, cross-compilation, the jax-free runner and kits.

Every compile uses the tiny test config (a few seconds each, two at a time)."""
import dataclasses
import functools
import glob
import hashlib
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from tests.conftest import lose_inventory_beside_notes, run_cli_in_process
from vitprune import atomic, deploy, iree_build, jsonio, model
from vitprune import data as data_lib
from vitprune.edge import kit as kit_lib
from vitprune.edge import runtime as edge_rt
from vitprune.edge import targets as targets_lib
from vitprune.edge.targets import EdgeError, parse_target, parse_targets
from vitprune.flops import forward_gflop
from vitprune.profile import protocol, records
from vitprune.reduce.methods import make_reducer
from vitprune.registry import get_config
from vitprune.schedule import parse_schedule

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = get_config("test_tiny_vit")
METHODS = ("pomt", "topk", "tome", "evit", "random")
# Runs a module as __main__ with jax, flax and orbax made unimportable (as on a board).
NO_JAX = ("import sys, runpy; [sys.modules.__setitem__(m, None) for m in ('jax', 'jaxlib', "
          "'flax', 'orbax', 'orbax.checkpoint')]; sys.argv = sys.argv[1:]; "
          "runpy.run_module(sys.argv[0], run_name='__main__')")


def run_edge(*args):
  return subprocess.run([sys.executable, "-c", NO_JAX, "vitprune.edge", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def params():
  return model.init_params(CFG, 0)


@pytest.fixture(scope="module")
def images():
  return np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)


def test_a_compile_profile_is_checked_against_its_flags():
  """The latency profile's peel strategy is in every latency module's flags (a fallback never
  drops it) and in no throughput module's; a record naming no profile or flags says nothing."""
  host = parse_target("iree:host")
  for profile in targets_lib.CPU_PROFILES:
    assert targets_lib.profile_flags_problem(profile, host.compile_flags(profile)) == ""
  assert targets_lib.profile_flags_problem(
      "throughput", host.compile_flags("latency")) == (
          "compile profile 'throughput', but its flags hold the latency profile's "
          "--iree-llvmcpu-vector-pproc-strategy=peel")
  fallen_back = [f for f in host.compile_flags("latency") if f not in targets_lib.CPU_FUSION]
  assert targets_lib.profile_flags_problem("latency", fallen_back) == ""
  assert "lack" in targets_lib.profile_flags_problem("latency", host.compile_flags())
  assert targets_lib.profile_flags_problem("fast", []).startswith("unknown compile profile")
  assert targets_lib.profile_flags_problem(None, []) == ""
  assert targets_lib.profile_flags_problem("latency", None) == ""


def test_parse_targets():
  assert parse_target("iree:host").cpu == "host"
  t = parse_target("iree:llvm-cpu:aarch64-linux-gnu:cortex-a78ae")
  assert (t.triple, t.cpu, t.arch, t.driver) == ("aarch64-linux-gnu", "cortex-a78ae", "aarch64",
                                                 "local-task")
  assert "--iree-llvmcpu-target-cpu=cortex-a78ae" in t.compile_flags()
  assert parse_target("iree:cuda:SM_87").compile_flags() == ["--iree-cuda-target=sm_87"]
  assert [x.text for x in parse_targets(["jax,iree:host", "iree:vulkan"])] == [
      "jax", "iree:host", "iree:vulkan"]
  for bad, msg in (("tpu", "unknown target"), ("iree:cuda:87", "not a CUDA architecture"),
                   ("iree:llvm-cpu:aarch64", "not an LLVM target triple")):
    with pytest.raises(EdgeError, match=msg):
      parse_target(bad)
  with pytest.raises(EdgeError, match="given twice"):
    parse_targets(["iree:host", "iree:host"])
  # (edge_kit --target=iree:host,iree:vulkan: 'unknown target', as if the forms were wrong)
  with pytest.raises(EdgeError, match=r"^unknown target 'iree:host,iree:vulkan'; expected one "
                                      r"of .*, iree:vulkan \(one target here, not a list\)$"):
    parse_target("iree:host,iree:vulkan")
  with pytest.raises(EdgeError, match=r"^unknown target 'tpu'; expected one of .*, iree:vulkan$"):
    parse_target("tpu")


def test_two_targets_that_would_share_a_module_file_are_refused():
  """'_' and ':' both spell a target's module file: two such targets overwrote one module with
  the other, and the artifact did not load."""
  with pytest.raises(EdgeError, match="would share the module file "
                                      r"iree/iree_llvm-cpu_aarch64-linux-gnu_x\.vmfb"):
    parse_targets(["iree:llvm-cpu:aarch64-linux-gnu_x", "iree:llvm-cpu:aarch64-linux-gnu:x"])


def test_a_host_module_of_a_cpu_with_more_features_is_refused(monkeypatch):
  """An iree:host module records its CPU's features; a board lacking one would die of SIGILL
  running it, so it is refused in one line (and `load` moves on to the next target)."""
  here = targets_lib.host_cpu()
  record = {"target": "iree:host", "host_cpu": {"arch": here["arch"],
                                                "features": list(here["features"])}}
  targets_lib.check_runnable(record, "m")
  record["host_cpu"]["features"].append("no_such_feature")
  with pytest.raises(EdgeError, match=r"^m was compiled with --target=iree:host on a CPU with "
                                      r"features this CPU lacks \(no_such_feature\); recompile"):
    targets_lib.check_runnable(record, "m")


def test_a_fractional_cgroup_cpu_quota_rounds_up(tmp_path, monkeypatch):
  """--cpus=1.5 (cpu.max '150000 100000') lets 2 cores run part of the time: 2, not 1."""
  monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
  cpu_max = tmp_path / "cpu.max"
  for text, cores in (("150000 100000", 2), ("100000 100000", 1), ("50000 100000", 1),
                      ("max 100000", 8), ("1000000 100000", 8)):
    cpu_max.write_text(text)
    assert targets_lib.usable_cores(str(cpu_max)) == cores, text


def test_a_record_file_entry_must_lie_inside_the_artifact(tmp_path):
  """A record naming '../x.vmfb' (with the right sha256) read a file outside the artifact."""
  import hashlib  # pylint: disable=g-import-not-at-top
  (tmp_path / "x.vmfb").write_bytes(b"module")
  root = tmp_path / "art"
  (root / "iree").mkdir(parents=True)
  sha = hashlib.sha256(b"module").hexdigest()
  for rel in ("../x.vmfb", "iree/../../x.vmfb", str(tmp_path / "x.vmfb")):
    with pytest.raises(EdgeError, match=f"^w: bad file entry {re.escape(repr(rel))}$"):
      edge_rt.checked_file(str(root), {"file": rel, "sha256": sha}, "w")
  (root / "iree" / "x.vmfb").write_bytes(b"module")
  assert edge_rt.checked_file(str(root), {"file": "iree/x.vmfb", "sha256": sha}, "w") == str(
      root / "iree" / "x.vmfb")


def test_a_board_profile_merges_only_runs_of_the_same_edge_setup():
  """A profile file's points are merged with a new run's only when the edge setup is the same:
  target, compiler, IREE runtime and the host CPU (another CPU's timings were merged in)."""
  base = {"target": "iree:host", "compiler": {"flags": []}, "iree_runtime": "1",
          "host_cpu": {"model": "A"}, "shards": {"1": 1}, "profiles": {"1": "latency"}}
  merged = kit_lib.merge_edge_fields({"edge": base}, {"edge": dict(base, shards={"2": 1},
                                                                  profiles={"2": "latency"})})
  assert merged["edge"]["shards"] == {"1": 1, "2": 1}
  for key, other in (("host_cpu", {"model": "B"}), ("target", "iree:vulkan"),
                     ("iree_runtime", "2"), ("compiler", {"flags": ["-O3"]})):
    with pytest.raises(ValueError, match=f"it was timed with edge {key} .*, this run with"):
      kit_lib.merge_edge_fields({"edge": base}, {"edge": dict(base, **{key: other})})


def test_cpu_profile_driver_and_compile_retries():
  host = parse_target("iree:host")
  small, deit8 = get_config("vit_digits"), get_config("deit_small_patch16_224")
  assert 0.03 < forward_gflop(small) < 0.035 and 70 < forward_gflop(deit8, 8) < 75
  assert iree_build.choose_runtime(small, 1, host) == {
      "profile": "latency", "driver": "local-sync", "gflop": 0.032, "shards": 1,
      "source": "auto"}
  assert iree_build.choose_runtime(deit8, 8, host)["driver"] == "local-task"
  for cfg, batch in ((small, 8), (deit8, 1)):   # 0.26 and 9.2 GFLOP: both cores pay off
    assert iree_build.choose_runtime(cfg, batch, host, cores=1)["profile"] == "throughput"
  # On several cores a batch splits into shards of small graphs, each on its own local-sync.
  plan = iree_build.choose_runtime(small, 8, host, cores=2)
  assert (plan["profile"], plan["driver"], plan["shards"]) == ("latency", "local-sync", 2)
  assert [iree_build.choose_runtime(small, 8, host, cores=c)["shards"] for c in (3, 4, 16)] == [
      2, 4, 8]
  assert iree_build.choose_runtime(small, 6, host, cores=4)["shards"] == 3
  assert iree_build.choose_runtime(small, 7, host, cores=4)["shards"] == 1   # 7 is prime
  for batch in (2, 8):      # DeiT-S shards would do 9.2 / 36.8 GFLOP each: the task system
    plan = iree_build.choose_runtime(deit8, batch, host, cores=2)
    assert (plan["driver"], plan["shards"]) == ("local-task", 1)
  cross = parse_target("iree:llvm-cpu:aarch64-linux-gnu:cortex-a78ae")   # its cores: unknown
  assert iree_build.choose_runtime(small, 8, cross)["shards"] == 1
  assert iree_build.choose_runtime(small, 8, cross, cores=12)["shards"] == 8   # told: a board
  for bad in (0, -2, 1.5, True):
    with pytest.raises(iree_build.IreeBuildError, match="CPU cores must be an integer >= 1"):
      iree_build.choose_runtime(small, 8, host, cores=bad)
  assert targets_lib.cpu_plan(2 * targets_lib.SHARD_MAX_GFLOP - 0.01, 2, 2) == ("latency", 2)
  assert targets_lib.cpu_plan(2 * targets_lib.SHARD_MAX_GFLOP, 2, 2) == ("throughput", 1)
  assert [targets_lib.shards_for(b, 4) for b in (1, 2, 3, 5, 6, 12)] == [1, 2, 3, 1, 3, 4]
  given = iree_build.choose_runtime(small, 8, host, "local-task", cores=2)
  assert (given["profile"], given["source"], given["shards"]) == ("throughput", "given", 1)
  assert iree_build.choose_runtime(small, 1, parse_target("iree:cuda:sm_87"))["driver"] == "cuda"
  with pytest.raises(EdgeError, match=r"^IREE driver 'cuda' cannot run target iree:host; "
                     r"expected one of local-task, local-sync$"):
    iree_build.choose_runtime(small, 1, host, "cuda")
  latency = host.compile_flags("latency")
  assert set(targets_lib.CPU_LATENCY) <= set(latency) and host.compile_flags() == (
      ["--iree-llvmcpu-target-cpu=host"] + list(targets_lib.CPU_TUNING))
  with pytest.raises(EdgeError, match="unknown CPU profile"):
    host.compile_flags("fast")
  stack = "error: 'func.func' op exceeded stack allocation limit of 32768 bytes for function. Got "
  flags, why = targets_lib.next_attempt(latency, stack + "50368 bytes")
  assert flags == latency + [targets_lib.CPU_STACK] and "stack limit" in why
  flags, why = targets_lib.next_attempt(flags, stack + "335872 bytes")
  assert "--iree-opt-generalize-matmul" not in flags and why.startswith("dropped")
  flags, _ = targets_lib.next_attempt(flags, stack + "335872 bytes")
  assert not set(targets_lib.CPU_TUNING) & set(flags)
  assert targets_lib.next_attempt(flags, "error: anything") is None
  flags, _ = targets_lib.next_attempt(latency, "error: failed to lower micro kernel")
  assert set(targets_lib.CPU_FUSION) <= set(flags) and not set(targets_lib.CPU_TUNING) & set(flags)


def test_edge_package_imports_without_jax():
  code = ("import sys; [sys.modules.__setitem__(m, None) for m in ('jax', 'flax', 'orbax')]; "
          "import vitprune.edge, vitprune.edge.kit, vitprune.edge.__main__, vitprune.data, "
          "vitprune.profile.records; print('ok')")
  r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                     timeout=60)
  assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


@pytest.fixture(scope="module")
def method_modules(params):
  # Every method reduces in both blocks: ToMe merging a second time gathered the carried sizes
  # from a strided slice, which IREE 3.13 could not translate (every multi-block ToMe graph
  # failed, e.g. vit_digits r8); one reducing block compiled.
  sched = parse_schedule(CFG, "keep@0:12,1:8")
  lowered = {m: iree_build.lower(CFG, params, schedule=sched, reducer=make_reducer(m),
                                 batch_size=2) for m in METHODS}
  host = parse_target("iree:host")
  compiled = iree_build.compile_many({m: (low.mlir, host) for m, low in lowered.items()},
                                     threads=2, profile="latency")
  return sched, lowered, compiled


@pytest.mark.parametrize("method", METHODS)
def test_iree_host_matches_jax(method, method_modules, params, images):
  sched, lowered, compiled = method_modules
  low, (blob, info) = lowered[method], compiled[method]
  runner = edge_rt.Runner("local-sync")
  fn = runner.load_bytes(blob)
  leaves = jax.tree.leaves(params)
  got = fn(*[runner.put(np.asarray(leaves[i])) for i in low.weight_index],
           runner.put(images)).to_host()
  want = np.asarray(model.jitted_forward(params, images, cfg=CFG, schedule=sched,
                                         reducer=make_reducer(method), precision="highest"))
  assert got.shape == want.shape == (2, CFG.num_classes)
  assert np.max(np.abs(got - want)) <= 1e-5
  assert info["iree_version"] and "--iree-llvmcpu-target-cpu=host" in info["flags"]
  assert info["profile"] == "latency" and "--iree-llvmcpu-vector-pproc-strategy=peel" in info[
      "flags"]
  # Every method compiles with data tiling and microkernels at the first attempt (ToMe's
  # protected-token mask is an additive bias: IREE 3.13 could not pad its i1 select).
  assert info["fallback"] is None and set(targets_lib.CPU_TUNING) <= set(info["flags"])


def test_tome_at_batch_1_matches_jax(params):
  """ToMe at batch 1 with data tiling and microkernels: IREE 3.13 fused the merge's output into
  the next matmul's packing and the module crashed the process (SIGSEGV / SIGBUS, every
  tiny-model ToMe schedule; batch 2 and vit_digits ran); a barrier after the merge keeps them
  apart. Run in a subprocess so a crash fails this test alone. The throughput profile (vit_digits
  from batch 8 and DeiT-S: no matmul generalization, local-task) compiles it with every CPU
  tuning flag, no fallback."""
  code = ("import numpy as np, jax\n"
          "from vitprune import iree_build, model\n"
          "from vitprune.edge import runtime as rt\n"
          "from vitprune.edge.targets import parse_target\n"
          "from vitprune.registry import get_config\n"
          "from vitprune.reduce.methods import make_reducer\n"
          "from vitprune.schedule import parse_schedule\n"
          "cfg = get_config('test_tiny_vit'); p = model.init_params(cfg, 0)\n"
          "s, red = parse_schedule(cfg, 'keep@0:12,1:8'), make_reducer('tome')\n"
          "low = iree_build.lower(cfg, p, schedule=s, reducer=red, batch_size=1)\n"
          "blob, info = iree_build.compile_module(low.mlir, parse_target('iree:host'), "
          "profile='throughput')\n"
          "assert info['fallback'] is None, info\n"
          "from vitprune.edge.targets import CPU_TUNING\n"
          "assert set(CPU_TUNING) <= set(info['flags']), info\n"
          "r = rt.Runner('local-sync'); fn = r.load_bytes(blob); leaves = jax.tree.leaves(p)\n"
          "x = np.random.default_rng(0).normal(size=(1, 32, 32, 3)).astype(np.float32)\n"
          "got = fn(*[r.put(np.asarray(leaves[i])) for i in low.weight_index], r.put(x))\n"
          "want = model.jitted_forward(p, x, cfg=cfg, schedule=s, reducer=red)\n"
          "print(float(np.max(np.abs(got.to_host() - np.asarray(want)))))\n")
  r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                     timeout=300)
  assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
  assert float(r.stdout.split()[-1]) <= 1e-5


def test_tome_writes_its_iree_form_only_inside_iree_lowering(method_modules, params, images):
  sched, lowered, _ = method_modules
  assert "optimization_barrier" in lowered["tome"].mlir
  fn = functools.partial(model.forward, cfg=CFG, schedule=sched, reducer=make_reducer("tome"))
  assert "optimization_barrier" not in jax.jit(fn).lower(params, images).as_text()


def test_stable_sort_rule_only_inside_iree_lowering():
  x = jax.ShapeDtypeStruct((2, 9), np.int32)
  fn = jax.jit(lambda m: jax.numpy.argsort(m, axis=1, stable=True))
  def text():  # the module without source locations (they name the calling line)
    return iree_build.strip_locations(jax.export.export(fn, platforms=("cpu",))(x)
                                      .mlir_module())
  plain = text()
  with iree_build.iree_lowering():
    fixed = text()
  assert plain == text()       # nothing leaks out of the block (jax caches lowerings)
  assert "is_stable = true" in plain and "is_stable = true" not in fixed


@pytest.fixture(scope="module")
def artifact(tmp_path_factory, params):
  out = str(tmp_path_factory.mktemp("art") / "tiny")
  with pytest.MonkeyPatch.context() as mp:   # a 2-core host: iree:host runs 2 shards of 1 image
    mp.setattr(iree_build, "usable_cores", lambda: 2)
    deploy.export_artifact(out, CFG, params, schedule=parse_schedule(CFG, "keep@1:9"),
                           reducer=make_reducer("pomt"), reducer_name="pomt", batch_size=2,
                           targets=["jax", "iree:host", "iree:cuda:sm_87",
                                    "iree:llvm-cpu:aarch64-linux-gnu:cortex-a78ae",
                                    "iree:vulkan"])
  return out


def test_an_iree_artifact_without_its_inventory_keeps_a_users_notes(artifact, tmp_path):
  """Every file of an artifact with four IREE targets fits the artifact's layout, so one whose
  inventory is lost is still replaceable, and a NOTES.txt added beside it is refused by it."""
  dst = str(tmp_path / "copy")
  shutil.copytree(artifact, dst)
  lose_inventory_beside_notes(dst, deploy.is_artifact_dir)
  with pytest.raises(atomic.ForeignOutputError, match=r"it holds NOTES\.txt, which vitprune did "
                                                      r"not write there \(its list"):
    atomic.check_output_dir_target(dst, True, deploy.is_artifact_dir)


def test_a_target_the_artifact_lacks_or_jax_is_named_as_such(artifact):
  """`vitprune.edge run --target=jax` said the artifact has no module for jax: jax is not an
  edge target at all (its export runs with experiments.run_deployed)."""
  targets = "iree:cuda:sm_87, iree:host, iree:llvm-cpu:aarch64-linux-gnu:cortex-a78ae, iree:vulkan"
  with pytest.raises(EdgeError, match=re.escape(
      f"--target=jax is not an edge target: vitprune.edge runs the IREE modules of {artifact} "
      f"({targets}); run its jax export with python -m experiments.run_deployed")):
    edge_rt.load(artifact, "jax")
  with pytest.raises(EdgeError, match=re.escape(
      f"{artifact} has no module for target iree:cuda:sm_90 (it has {targets})")):
    edge_rt.load(artifact, "iree:cuda:sm_90")


def test_artifact_targets_cross_compile_and_match_jax(artifact, images, tmp_path):
  with open(os.path.join(artifact, "manifest.json")) as f:
    manifest = json.load(f)
  assert manifest["targets"] == ["jax", "iree:host", "iree:cuda:sm_87",
                                 "iree:llvm-cpu:aarch64-linux-gnu:cortex-a78ae", "iree:vulkan"]
  recs = {r["target"]: r for r in edge_rt.read_records(artifact)}
  assert set(recs) == set(manifest["targets"][1:])
  for r in recs.values():
    assert r["module"]["bytes"] > 0 and r["weights"]["params_sha256"] == \
        manifest["weights"]["sha256"]
    assert r["input"]["shape"] == [2, 32, 32, 3] and r["output"]["shape"] == [2, 10]
  assert "--iree-cuda-target=sm_87" in recs["iree:cuda:sm_87"]["compiler"]["flags"]
  host = recs["iree:host"]   # a tiny graph: latency profile, recorded with the driver it chose
  assert host["driver"] == host["runtime"]["driver"] == "local-sync"
  assert (host["runtime"]["source"], host["compiler"]["profile"]) == ("auto", "latency")
  assert (host["runtime"]["shards"], host["module"]["batch_size"]) == (2, 1)
  assert "--iree-opt-generalize-matmul" in host["compiler"]["flags"]
  cross = recs["iree:llvm-cpu:aarch64-linux-gnu:cortex-a78ae"]    # the board's cores: unknown
  assert (cross["runtime"]["shards"], cross["module"]["batch_size"]) == (1, 2)
  assert recs["iree:cuda:sm_87"]["driver"] == "cuda"
  assert recs["iree:vulkan"]["driver"] == "vulkan"     # SPIR-V for Vulkan GPUs (compile only)
  edge = edge_rt.load(artifact)             # the first target this host runs: iree:host
  assert (edge.target, edge.driver, edge.shards) == ("iree:host", "local-sync", 2)
  want = np.asarray(deploy.load(artifact)(images))
  assert np.abs(want[0] - want[1]).max() > 1e-3        # the two images' logits differ
  assert np.max(np.abs(edge(images) - want)) <= 1e-5   # shards concatenated in batch order
  assert np.max(np.abs(edge(images[::-1]) - want[::-1])) <= 1e-5
  with pytest.raises(ValueError, match=r"expects images \[2, 32, 32, 3\]"):
    edge(images[:1])
  task = edge_rt.load(artifact, "iree:host", driver="local-task")   # the override is honoured
  assert task.driver == "local-task" and task._runner.driver == "local-task"
  # ... also without a target (the first target this host runs on that driver): it was
  # dropped there, so `bench --driver=local-task` timed local-sync unsaid.
  assert edge_rt.load(artifact, driver="local-task").driver == "local-task"
  with pytest.raises(EdgeError, match="no target runs on this host: .*IREE driver 'vulkan' "
                                      "cannot run target iree:host"):
    edge_rt.load(artifact, driver="vulkan")
  assert np.max(np.abs(task(images) - want)) <= 1e-5
  with pytest.raises(EdgeError, match="^IREE driver 'vulkan' cannot run target iree:host"):
    edge_rt.load(artifact, "iree:host", driver="vulkan")
  r = run_edge("bench", f"--artifact={artifact}", "--target=iree:host", "--driver=local-task",
               "--min_run_time=0.01")
  assert r.returncode == 0 and "driver local-task x2 shards" in r.stdout, r.stderr[-2000:]
  # A latency spread wider than --max_rel_iqr after its re-measurements says so (it printed as
  # any other at 63 %; a probe), and the results keep the note.
  out = tmp_path / "bench.json"
  r = run_edge("bench", f"--artifact={artifact}", "--min_run_time=0.01", "--max_rel_iqr=1e-9",
               "--max_retries=1", f"--output={out}")
  assert r.returncode == 0, r.stderr[-2000:]
  (note,) = [ln for ln in r.stdout.splitlines() if ln.startswith("note: ")]
  assert re.fullmatch(r"note: the latency has an IQR of [0-9.e+-]+% of its median after 1 "
                      r"re-measurement round, above 1e-07%: the machine was busy or the "
                      r"call's time varies, so the median is uncertain; time it again on a "
                      r"quieter machine before comparing it", note), note
  assert json.loads(out.read_text())["latency"]["note"] == note[6:]
  # A driver IREE does not have is a bad flag value, refused as one before any loading (it was
  # refused per target, one long line listing every target's drivers).
  r = run_edge("bench", f"--artifact={artifact}", "--driver=local-turbo", "--min_run_time=0.01")
  assert r.returncode == 2 and r.stderr.splitlines() == [
      "error: flag --driver=local-turbo: value should be one of "
      "<cuda|local-sync|local-task|vulkan>", "(see --help)"]


def test_edge_results_another_run_wrote_meanwhile_are_kept_beside_them(artifact, tmp_path):
  """Two `bench --output` runs into one file both said they wrote it, and one's timings were
  gone: the later one is refused and keeps its results beside the file (a probe)."""
  out = tmp_path / "b.json"
  other = json.dumps({"format": "vitprune-edge-result", "run": "other"})
  race = NO_JAX.split("; sys.argv")[0] + (   # (the other run writes while this one loads)
      "\nfrom vitprune.edge import runtime\nreal = runtime.load\n"
      "def load(*a, **k):\n"
      f"  model = real(*a, **k); open({str(out)!r}, 'w').write({other!r}); return model\n"
      "runtime.load = load\nsys.argv = sys.argv[1:]\n"
      "runpy.run_module(sys.argv[0], run_name='__main__')")
  r = subprocess.run([sys.executable, "-c", race, "vitprune.edge", "bench",
                      f"--artifact={artifact}", "--min_run_time=0.01", f"--output={out}"],
                     cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert r.returncode == 1, r.stderr[-2000:]
  (kept,) = [p for p in tmp_path.iterdir() if p.name.startswith("b.kept-")]
  assert r.stderr == (
      f"error: {out} was written by another run after this one began (two runs writing one "
      "output at once): this run does not replace that run's output; give each run its own "
      f"output; the results are kept in {kept}\n")
  assert json.loads(out.read_text())["run"] == "other"
  assert json.loads(kept.read_text())["latency"]["median_s"] > 0


def test_edge_cli_refuses_unread_flags_and_foreign_outputs_before_timing(artifact, tmp_path):
  def one_line_error(r, code=1):
    assert r.returncode == code and r.stderr.startswith("error: "), r.stderr[-2000:]
    assert "Traceback" not in r.stderr and r.stdout == ""

  r = run_edge("bench", f"--artifact={artifact}", f"--out={tmp_path / 'p.json'}")
  one_line_error(r)
  assert "--out is not read by bench (only by profile)" in r.stderr
  r = run_edge("run", f"--artifact={artifact}", f"--images={tmp_path}", "--seed=5")
  one_line_error(r)                                # (it changed nothing: one graph is timed)
  assert "--seed is not read by run (only by profile)" in r.stderr
  r = run_edge("bench", f"--artifact={artifact}", "--warmup=abc")
  one_line_error(r, 2)
  assert r.stderr.strip().splitlines()[1:] == ["(see --help)"]
  # A seed past 32 bits is refused as on every other command line (it was recorded; a probe).
  r = run_edge("profile", f"--kit={tmp_path}", f"--out={tmp_path / 'p.json'}",
               "--seed=4294967296")
  one_line_error(r, 2)
  assert r.stderr.startswith("error: flag --seed=4294967296: ") and "4294967295" in r.stderr
  # A stray or missing command is a usage error as in the other CLIs (it exited 1, no hint).
  for args, got in ((("run", "extra"), "['run', 'extra']"), ((), "[]")):
    r = run_edge(*args, f"--artifact={artifact}")
    one_line_error(r, 2)
    assert r.stderr.splitlines() == [
        f"error: give one command: run | bench | profile (got {got})", "(see --help)"]
  foreign = tmp_path / "mine.json"
  foreign.write_text('{"mine": true}')
  r = run_edge("bench", f"--artifact={artifact}", f"--output={foreign}", "--min_run_time=30")
  one_line_error(r)                  # refused at once, not after 30 s of timing
  assert "refusing to replace" in r.stderr and foreign.read_text() == '{"mine": true}'
  r = run_edge("bench", f"--artifact={artifact}", f"--output={tmp_path}")
  one_line_error(r)
  assert "is a directory, not a file" in r.stderr
  (tmp_path / "afile").write_text("x")
  r = run_edge("profile", f"--kit={artifact}", f"--out={tmp_path / 'afile' / 'p.json'}")
  one_line_error(r)
  assert "afile is a file, not a directory" in r.stderr
  r = run_edge("profile", f"--kit={artifact}", f"--out={tmp_path}")
  one_line_error(r)
  assert "is a directory, not a file" in r.stderr
  (tmp_path / "imgs" / "3").mkdir(parents=True)    # a .png result there broke every later run
  r = run_edge("run", f"--artifact={artifact}", f"--images={tmp_path / 'imgs'}",
               f"--output={tmp_path / 'imgs' / '3' / 'r.png'}")
  one_line_error(r)
  assert f"--output={tmp_path}/imgs/3/r.png is inside --images={tmp_path}/imgs and named like " \
         "an image: the next run would read it as one" in r.stderr
  out = tmp_path / "res.json"
  for _ in range(2):                 # our own results file is replaced
    r = run_edge("bench", f"--artifact={artifact}", f"--output={out}", "--min_run_time=0.01")
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(out.read_text())["format"] == "vitprune-edge-result"


def test_no_output_is_written_inside_an_artifact(artifact, tmp_path, capsys):
  """`--output=ARTIFACT/iree/bench.json` was written, and every later load of the artifact
  failed on it ('not a vitprune-edge-target record ... (a newer vitprune wrote it?)'); deploy
  --out=ARTIFACT/sub nested an artifact the outer one could then not be replaced over."""
  from experiments import common, run_deployed  # pylint: disable=g-import-not-at-top
  from experiments import deploy as deploy_cli  # pylint: disable=g-import-not-at-top
  from experiments import estimate as estimate_cli  # pylint: disable=g-import-not-at-top
  before = sorted(str(p) for p in pathlib.Path(artifact).rglob("*"))
  real = os.path.realpath(artifact)
  inside = os.path.join(artifact, edge_rt.EDGE_DIR, "bench.json")
  r = run_edge("bench", f"--artifact={artifact}", f"--output={inside}")
  assert (r.returncode, r.stdout) == (1, "")
  assert r.stderr == (f"error: --output={inside} is inside {real}, a folder vitprune wrote as a "
                      "whole (it lists its files in .vitprune-files.json): write elsewhere\n")
  os.symlink(os.path.join(artifact, edge_rt.EDGE_DIR), tmp_path / "link")   # (got through)
  for cli, argv, where in (
      (run_deployed, [f"--artifact={artifact}", f"--images={tmp_path}", f"--output={inside}"],
       f"is inside {real}, a folder"),
      (deploy_cli, [f"--weights={ROOT}/weights/vit_digits", f"--out={artifact}/sub"],
       f"is inside {real}, a folder"),
      (estimate_cli, ["--tokens=65", f"--out_dir={artifact}"], "is a folder"),
      (estimate_cli, ["--tokens=65", f"--out_dir={tmp_path}/link/sub"],
       f"is inside {real}, a folder")):
    with pytest.raises(SystemExit) as e:
      common.run_in_process(cli.main, cli.define_flags, argv)
    assert e.value.code == 1
    flag, value = argv[-1][2:].split("=", 1)
    assert f"error: --{flag}={value} {where} vitprune wrote as a whole" in (
        capsys.readouterr().err)
  assert sorted(str(p) for p in pathlib.Path(artifact).rglob("*")) == before


def test_no_output_is_written_into_a_copied_iree_folder(artifact, tmp_path, capsys):
  """The board setup copies iree/ alone (no inventory): `--output=COPY/iree/bench.json` was
  written with exit 0, and the copy's next load failed on it ('not a vitprune-edge-target record
  of version 1 or 2 (a newer vitprune wrote it?)')."""
  from experiments import common, run_deployed  # pylint: disable=g-import-not-at-top
  board = tmp_path / "board"
  shutil.copytree(os.path.join(artifact, edge_rt.EDGE_DIR), board / edge_rt.EDGE_DIR)
  inside = str(board / edge_rt.EDGE_DIR / "bench.json")
  want = (f"--output={inside} is inside {os.path.realpath(board / edge_rt.EDGE_DIR)}, an "
          "artifact's iree/ folder whose every .json is read as a module record: write "
          "elsewhere\n")
  r = run_edge("bench", f"--artifact={board}", f"--output={inside}")
  assert (r.returncode, r.stderr) == (1, "error: " + want)
  r = run_edge("profile", f"--kit={tmp_path / 'kit'}", f"--out={inside}")
  assert r.returncode == 1 and "an artifact's iree/ folder" in r.stderr, r.stderr
  with pytest.raises(SystemExit) as e:
    common.run_in_process(run_deployed.main, run_deployed.define_flags, [
        f"--artifact={board}", f"--images={tmp_path}", f"--output={inside}"])
  assert e.value.code == 1 and capsys.readouterr().err == "error: " + want
  assert sorted(os.listdir(board / edge_rt.EDGE_DIR)) == sorted(
      os.listdir(os.path.join(artifact, edge_rt.EDGE_DIR)))
  # A result put there all the same is named as a stray file, not as a newer record.
  (board / edge_rt.EDGE_DIR / "bench.json").write_text('{"format": "vitprune-edge-result"}')
  with pytest.raises(EdgeError, match=r"bench.json: not a vitprune-edge-target record \(format "
                     r"'vitprune-edge-result'\): a file put into iree/ after the export\? move "
                     r"it out"):
    edge_rt.read_records(str(board))
  # A folder named iree/ that holds no module record is not an artifact's (a web app's).
  web = tmp_path / "webapp"
  (web / "iree").mkdir(parents=True)
  (web / "manifest.json").write_text('{"name": "my app"}')
  (web / "iree" / "notes.json").write_text('{"format": "other"}')
  edge_rt.check_not_in_records_folder(str(web / "iree" / "bench.json"), "output")


def test_a_digits_folder_of_the_weights_training_images_is_refused_on_the_board(tmp_path,
                                                                                capsys):
  """`run_deployed` and `vitprune.edge run` scored the bundled model on a `digits_images
  --split=train` folder (accuracy 1.0000, exit 0), which `estimate` refuses."""
  from experiments import common, run_deployed  # pylint: disable=g-import-not-at-top
  from vitprune import checkpoint, digits  # pylint: disable=g-import-not-at-top
  cfg, params = checkpoint.load_weights(os.path.join(ROOT, "weights", "vit_digits"))
  meta = checkpoint.read_weights_config(os.path.join(ROOT, "weights", "vit_digits"))[1]
  art = deploy.export_artifact(str(tmp_path / "art"), cfg, params, batch_size=2,
                               targets=["jax", "iree:host"], class_names=digits.DIGITS_CLASSES,
                               weights_source={"path": "weights/vit_digits", "meta": meta})
  train = digits.write_digits_imagefolder(tmp_path / "train", split="train", limit=10)
  test = digits.write_digits_imagefolder(tmp_path / "test", split="test", limit=10)
  said = (f"10 of the 10 digits in {train} are training images of the weights of {art} "
          "(digits split of seed 0, test fraction 0.2), so every score on them would be "
          "inflated: write that split's test images (digits_images --split=test "
          "--split_seed=0)")
  r = run_edge("run", f"--artifact={art}", f"--images={train}")
  assert (r.returncode, r.stdout, r.stderr) == (1, "", f"error: {said}\n")
  with pytest.raises(SystemExit) as e:
    common.run_in_process(run_deployed.main, run_deployed.define_flags,
                          [f"--artifact={art}", f"--images={train}", "--repeats=3"])
  assert e.value.code == 1 and capsys.readouterr().err == f"error: {said}\n"
  r = run_edge("run", f"--artifact={art}", f"--images={test}")
  assert r.returncode == 0, r.stderr[-2000:]
  common.run_in_process(run_deployed.main, run_deployed.define_flags,
                        [f"--artifact={art}", f"--images={test}", "--repeats=3"])
  assert "accuracy" in capsys.readouterr().out
  # A board holding iree/ without the manifest (as the README allows) scored the train folder
  # at 1.0000: its record says what the weights were trained on, part of the module's
  # identity (an edit names a function the module lacks).
  board = tmp_path / "board"
  shutil.copytree(os.path.join(art, "iree"), board / "iree")
  (record,) = [p for p in (board / "iree").glob("*.json")]
  assert json.loads(record.read_text())["weights"]["training"] == {
      "dataset": "sklearn_digits", "split": meta["split"]}
  r = run_edge("run", f"--artifact={board}", f"--images={train}")
  assert (r.returncode, r.stderr) == (1, "error: " + said.replace(str(art), str(board)) + "\n")
  assert run_edge("run", f"--artifact={board}", f"--images={test}").returncode == 0
  doc = json.loads(record.read_text())
  doc["weights"]["training"]["split"]["seed"] = 1          # lifting the guard by an edit
  record.write_text(json.dumps(doc))
  r = run_edge("run", f"--artifact={board}", f"--images={train}")
  assert r.returncode == 1 and "the record does not match its module" in r.stderr


def test_edge_cli_ctrl_c_is_one_line(artifact):
  import signal  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  p = subprocess.Popen([sys.executable, "-c", NO_JAX, "vitprune.edge", "bench",
                        f"--artifact={artifact}", "--min_run_time=60"], cwd=ROOT,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 90         # wait until the IREE runtime is loaded (then timing)
  while time.time() < deadline and p.poll() is None:
    with open(f"/proc/{p.pid}/maps") as f:
      if "iree" in f.read():
        break
    time.sleep(0.2)
  time.sleep(2)
  p.send_signal(signal.SIGINT)
  out, err = p.communicate(timeout=60)
  assert p.returncode == 130 and err.strip() == "error: interrupted", err[-2000:]


def test_wrong_device_and_tampering_are_refused(artifact, tmp_path):
  with pytest.raises(EdgeError, match="no cuda device is available here"):
    edge_rt.load(artifact, "iree:cuda:sm_87")
  with pytest.raises(EdgeError, match=r"targets iree:vulkan, but (this IREE runtime has no "
                                      r"'vulkan' driver|no vulkan device is available here)"):
    edge_rt.load(artifact, "iree:vulkan")
  with pytest.raises(EdgeError, match="aarch64.*this host is x86_64"):
    edge_rt.load(artifact, "iree:llvm-cpu:aarch64-linux-gnu:cortex-a78ae")
  for host in ({}, None):          # (said "compiled for target iree:host (None)")
    with pytest.raises(EdgeError, match=r"^x was compiled for target iree:host but does not "
                                        r"record the host CPU it was compiled on"):
      targets_lib.check_runnable({"target": "iree:host", "host_cpu": host}, "x")
  r = run_edge("bench", f"--artifact={artifact}", "--target=iree:cuda:sm_87",
               "--min_run_time=0.01")
  assert r.returncode == 1 and r.stderr.strip().count("\n") == 0
  assert r.stderr.startswith("error: ") and "cuda" in r.stderr

  def copy(name):
    dst = str(tmp_path / name)
    shutil.copytree(artifact, dst)
    return dst

  def edited_copy(name, change):
    """A copy of the artifact whose iree:host record `change` edited in place."""
    dst = copy(name)
    rec_path = os.path.join(dst, "iree", "iree_host.json")
    with open(rec_path) as f:
      rec = json.load(f)
    change(rec)
    with open(rec_path, "w") as f:
      json.dump(rec, f)
    return dst

  bad = copy("bytes")
  with open(os.path.join(bad, "iree", "iree_host.vmfb"), "r+b") as f:
    f.seek(100)
    byte = f.read(1)
    f.seek(100)
    f.write(bytes([byte[0] ^ 0xFF]))
  with pytest.raises(EdgeError, match="iree_host.vmfb has sha256 .* corrupted or replaced"):
    edge_rt.load(bad, "iree:host")
  bad = edited_copy("record", lambda r: r["weights"].update(sha256="0" * 64))
  with pytest.raises(EdgeError, match="the record does not match its module"):
    edge_rt.load(bad, "iree:host")
  # The compile profile relabelled (a board profile keys its curves by it): the flags tell.
  def relabel(where):
    def change(r):
      flip = {"latency": "throughput", "throughput": "latency"}
      r[where]["profile"] = flip[r[where]["profile"]]
    return change

  for where in ("runtime", "compiler"):
    bad = edited_copy("profile_" + where, relabel(where))
    with pytest.raises(EdgeError, match=rf"iree_host.json: {where}: compile profile "
                       r"'(latency|throughput)', but its flags (hold|lack) the latency "
                       r"profile's --iree-llvmcpu-vector-pproc-strategy=peel: edited after "
                       r"export\?"):
      edge_rt.load(bad, "iree:host")
  bad = copy("weights")          # the record intact, its weights file changed
  with open(os.path.join(bad, "iree", "weights.bin"), "r+b") as f:
    f.write(b"\1\2\3\4")
  with pytest.raises(EdgeError, match="weights.bin has sha256"):
    edge_rt.load(bad, "iree:host")
  # Fields that change what the numbers mean are bound to the module's function name.
  def swap_leaves(r):             # two same-shaped weights exchanged in weights.bin's table
    leaves = r["weights"]["leaves"]
    a, b = [i for i, l in enumerate(leaves) if "qkv" in l["name"] and "kernel" in l["name"]][:2]
    leaves[a]["offset"], leaves[b]["offset"] = leaves[b]["offset"], leaves[a]["offset"]

  for name, change in (("classes", lambda r: r.update(class_names=list("abcdefghij"))),
                       ("leaves", swap_leaves),
                       ("nan", lambda r: r["preprocessing"].update(mean=[float("nan")] * 3)),
                       ("crop", lambda r: r["preprocessing"].update(crop_pct=0.5)),
                       ("schedule", lambda r: r.update(schedule="keep@1:5")),
                       ("model", lambda r: r.update(model="vit_digits"))):
    bad = edited_copy("id_" + name, change)
    with pytest.raises(EdgeError, match="the record does not match its module|bad value|"
                       "NaN is not a JSON number|is not of this artifact"):
      edge_rt.load(bad, "iree:host")
    r = run_edge("bench", f"--artifact={bad}", "--target=iree:host", "--min_run_time=0.01")
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0, r.stderr[-2000:]
  def rename(r):                 # the function name edited to match edited fields
    r["class_names"] = list("abcdefghij")
    r["function"] = edge_rt.function_name(edge_rt.record_identity(r))

  bad = edited_copy("renamed", rename)
  with pytest.raises(EdgeError, match="its class_names .* differs from the manifest's"):
    edge_rt.load(bad, "iree:host")
  os.unlink(os.path.join(bad, "manifest.json"))     # a board copy: the other record tells ...
  with pytest.raises(EdgeError, match="are of two artifacts: their class_names differ"):
    edge_rt.load(bad, "iree:host")
  for f in glob.glob(os.path.join(bad, edge_rt.EDGE_DIR, "iree_*.json")):
    if os.path.basename(f) != "iree_host.json":
      os.unlink(f)                                  # ... and alone, the module still tells
  with pytest.raises(EdgeError, match="has no function 'main_[0-9a-f]{16}': the record"):
    edge_rt.load(bad, "iree:host")
  for name, edit, msg in (
      ("shards3", lambda r: r["runtime"].update(shards=3), "shards 3 does not split the batch "
       "of 2 into equal parts"),
      ("shards0", lambda r: r["runtime"].update(shards=0), "shards 0 does not split"),
      ("unsharded", lambda r: r["runtime"].pop("shards"), "a module for batch 1 in 1 shard "
       "cannot take the batch of 2"),
      ("nullbatch", lambda r: r["module"].update(batch_size=None), "a module for batch None in "
       "2 shards cannot"),
      ("strbatch", lambda r: r["module"].update(batch_size="1"), "a module for batch '1'")):
    bad = edited_copy(name, edit)
    with pytest.raises(EdgeError, match=msg):
      edge_rt.load(bad, "iree:host")
  bad = copy("missing")
  os.unlink(os.path.join(bad, "iree", "iree_host.vmfb"))
  r = run_edge("bench", f"--artifact={bad}", "--target=iree:host", "--min_run_time=0.01")
  assert r.returncode == 1 and "iree_host.vmfb is missing" in r.stderr
  assert r.stderr.strip().count("\n") == 0


def test_weights_table_must_be_the_packing_of_its_file(tmp_path):
  """weights.bin is checked by its sha256, its leaf table by the packing: a kit record whose
  offset was edited read other leaves' bytes as the weight without a word."""
  leaves = [np.arange(6, dtype=np.float32).reshape(2, 3), np.full((5,), 7, np.float32),
            np.ones((4, 4), np.float32)]
  blob, table = edge_rt.pack_weights(leaves, ["a", "b", "c"])
  (tmp_path / "weights.bin").write_bytes(blob)
  entry = {"mode": "args", "file": "weights.bin", "leaves": table,
           "sha256": deploy.file_sha256(str(tmp_path / "weights.bin"))}
  for got, want in zip(edge_rt.read_weights(str(tmp_path), entry, "kit K"), leaves):
    np.testing.assert_array_equal(got, want)
  shifted = json.loads(json.dumps(entry))
  shifted["leaves"][1]["offset"] += 4            # still inside the file, 4-byte aligned
  with pytest.raises(EdgeError, match=r"^kit K: weight leaf b is at offset 68 of .*weights\.bin, "
                     r"but the packing puts it at 64 \(an edited record\?\)$"):
    edge_rt.read_weights(str(tmp_path), shifted, "kit K")
  dropped = dict(entry, leaves=table[:2])        # a leaf left out of the table
  with pytest.raises(EdgeError, match=r"weights\.bin holds 192 bytes, its weight leaves end at "
                     r"84$"):
    edge_rt.read_weights(str(tmp_path), dropped, "kit K")


def test_failed_compile_leaves_nothing(tmp_path, params, monkeypatch):
  def boom(*a, **k):
    raise iree_build.IreeBuildError("simulated: compiler killed")
  monkeypatch.setattr(iree_build, "compile_module", boom)
  out = tmp_path / "art"
  with pytest.raises(iree_build.IreeBuildError, match="simulated"):
    deploy.export_artifact(str(out), CFG, params, batch_size=1, targets=["iree:host"],
                           verify=False)
  assert os.listdir(tmp_path) == []
  with pytest.raises(ValueError, match="fixed batch size"):    # (refused before the export)
    deploy.export_artifact(str(out), CFG, params, batch_size=None, targets=["iree:host"],
                           verify=False)
  assert os.listdir(tmp_path) == []


def test_kit_profile_solve_deploy_run(tmp_path, params):
  from tests.test_solve import _estimate  # pylint: disable=g-import-not-at-top
  from vitprune import solve_stage  # pylint: disable=g-import-not-at-top
  from vitprune.records.estimate import read_estimate  # pylint: disable=g-import-not-at-top
  # pylint: disable-next=g-import-not-at-top
  from vitprune.records.solution import read_solution, write_solution
  from vitprune.digits import write_digits_imagefolder  # pylint: disable=g-import-not-at-top
  kit_dir, cache = str(tmp_path / "kit"), str(tmp_path / "cache")
  grid = (17, 9)
  iree_build.build_kit(kit_dir, CFG, params, target="iree:host", grid=grid,
                       reducer=make_reducer("random"), reducer_name="random", threads=2,
                       cache_dir=cache, driver="local-task")
  kit = kit_lib.read_kit(kit_dir)
  assert [p["tokens"] for p in kit["points"]] == list(grid)
  assert (kit["driver"], kit["runtime"]["source"], kit["compiler"]["profile"]) == (
      "local-task", "given", "throughput")
  assert not any(p["cached"] for p in kit["points"])
  # Rebuilding hits the cache (same MLIR + flags).
  iree_build.build_kit(kit_dir, CFG, params, target="iree:host", grid=grid,
                       reducer=make_reducer("random"), threads=2, cache_dir=cache,
                       overwrite=True, driver="local-task")
  assert all(p["cached"] for p in kit_lib.read_kit(kit_dir)["points"])
  # Another run's kit published there while this one compiled: not replaced (both exited 0).
  compile_many, built = iree_build.compile_many, kit_lib.read_kit(kit_dir)["created"]

  def compile_while_another_publishes(*args, **kwargs):
    shutil.copytree(kit_dir, kit_dir + ".side")
    shutil.rmtree(kit_dir)
    os.rename(kit_dir + ".side", kit_dir)
    return compile_many(*args, **kwargs)
  iree_build.compile_many = compile_while_another_publishes
  try:
    with pytest.raises(atomic.ReplacedMeanwhileError, match=re.escape(
        f"{kit_dir} was written by another run after this one began")):
      iree_build.build_kit(kit_dir, CFG, params, target="iree:host", grid=grid,
                           reducer=make_reducer("random"), threads=2, cache_dir=cache,
                           overwrite=True, driver="local-task")
  finally:
    iree_build.compile_many = compile_many
  assert kit_lib.read_kit(kit_dir)["created"] == built
  (kept,) = glob.glob(kit_dir + ".partial-*")          # its compiles kept, a whole kit
  assert len(kit_lib.read_kit(kept)["points"]) == len(grid)
  shutil.rmtree(kept)
  # A kit copied without its inventory (a dotfile) holding a user's NOTES.txt: --overwrite
  # deleted it (the marker alone decided); the kit's layout refuses it now, before compiling.
  lost = tmp_path / "lost_kit"
  shutil.copytree(kit_dir, lost)
  lose_inventory_beside_notes(str(lost), iree_build.is_kit, "truncated")
  with pytest.raises(atomic.ForeignOutputError, match=r"it holds NOTES\.txt, which vitprune did "
                                                      r"not write there \(its list"):
    iree_build.build_kit(str(lost), CFG, params, target="iree:host", grid=grid,
                         reducer=make_reducer("random"), threads=2, cache_dir=cache,
                         overwrite=True, driver="local-task")
  assert (lost / "NOTES.txt").read_text() == "mine"
  # A point field edited to the wrong type is refused by name, as a field of kit.json.
  bad_kit = tmp_path / "bad_kit"
  shutil.copytree(kit_dir, bad_kit)
  doc = json.loads((bad_kit / "kit.json").read_text())
  doc["points"][1].update(compile_s="x")
  doc["points"][1]["input"].pop("shape")
  (bad_kit / "kit.json").write_text(json.dumps(doc))
  with pytest.raises(EdgeError, match=r"kit.json: points\[1\]: input.shape must be 4 ints >= "
                     r"0, the batch >= 1; compile_s must be a number >= 0$"):
    kit_lib.read_kit(str(bad_kit))
  doc["points"][1].update(compile_s=-5, input=doc["points"][0]["input"])   # out of range
  (bad_kit / "kit.json").write_text(json.dumps(doc))
  with pytest.raises(EdgeError, match=r"kit.json: points\[1\]: compile_s must be a number >= "
                                      r"0$"):
    kit_lib.read_kit(str(bad_kit))
  # A point without its schedule (null for one count) was a KeyError after timing the points
  # before it; one of counts below 1 compiled nothing a profile can hold.
  for schedule, missing in ((None, True), ([17, 0, 0], False), ("17", False), ([], False)):
    doc = json.loads((pathlib.Path(kit_dir) / "kit.json").read_text())
    if missing:
      doc["points"][1].pop("schedule")
    else:
      doc["points"][1]["schedule"] = schedule
    (bad_kit / "kit.json").write_text(json.dumps(doc))
    with pytest.raises(EdgeError, match=r"kit.json: points\[1\]: schedule must be null \(one "
                       r"count\) or a list of the counts entering each block, each >= 1$"):
      kit_lib.read_kit(str(bad_kit))
  doc = json.loads((pathlib.Path(kit_dir) / "kit.json").read_text())
  doc["points"].append(dict(doc["points"][0]))       # refused before timing, naming both
  (bad_kit / "kit.json").write_text(json.dumps(doc))
  with pytest.raises(EdgeError, match=r"kit.json: points\[2\] repeats points\[0\] \(model, "
                     r"batch 1, 17 tokens\)"):
    kit_lib.read_kit(str(bad_kit))
  # A point's driver edited to one its target cannot run: named as the kit's (it read like a
  # bad --driver flag, which was not given).
  doc = json.loads((pathlib.Path(kit_dir) / "kit.json").read_text())
  doc["points"][0].setdefault("runtime", {"shards": 1})["driver"] = "cuda"
  (bad_kit / "kit.json").write_text(json.dumps(doc))
  with pytest.raises(EdgeError, match=r"^kit .*bad_kit \(.*\): IREE driver 'cuda' cannot run "
                     r"target iree:host; .* \(an edited kit.json\?\)$"):
    kit_lib._kit_plans(str(bad_kit), None)    # pylint: disable=protected-access
  with pytest.raises(EdgeError, match=r"^IREE driver 'vulkan' cannot run target iree:host"):
    kit_lib._kit_plans(str(bad_kit), "vulkan")    # pylint: disable=protected-access
  # ... or to the other CPU driver: two drivers in one curve, unsaid (a probe: the step
  # '65 -> 45 saves 40.7%' became 'no steps above noise'); a --driver given runs them all on it.
  doc["points"][0]["runtime"]["driver"] = "local-sync"      # (the kit's: local-task)
  (bad_kit / "kit.json").write_text(json.dumps(doc))
  with pytest.raises(EdgeError, match=r"^kit .*bad_kit: the points of batch 1 name drivers "
                     r"local-sync and local-task, where experiments.edge_kit gives a batch "
                     r"size one: an edited kit.json\? rebuild it with experiments.edge_kit$"):
    kit_lib._kit_plans(str(bad_kit), None)    # pylint: disable=protected-access
  assert kit_lib._kit_plans(str(bad_kit), "local-task")[0]["driver"] == "local-task"  # noqa
  # A point deleted from kit.json: its module stayed, and the profile came out a point short.
  doc = json.loads((pathlib.Path(kit_dir) / "kit.json").read_text())
  gone = doc["points"].pop()["module"]["file"]
  (bad_kit / "kit.json").write_text(json.dumps(doc))
  with pytest.raises(EdgeError, match=re.escape(f"{bad_kit}/kit.json names no point for {gone}: "
                                                "an edited kit.json?")):
    kit_lib.read_kit(str(bad_kit))
  # A kit given where an artifact goes is named as a kit (it said only "holds no IREE target").
  with pytest.raises(EdgeError, match=re.escape(
      f"{kit_dir} is a profiling kit (kit.json), not an artifact: profile it with python -m "
      f"vitprune.edge profile --kit={kit_dir}")):
    edge_rt.read_records(kit_dir)
  # A stray file a copy brought along is not a module (a Mac's .DS_Store was refused as one),
  # and a module file that is not a string is named (it was an unhashable-list TypeError).
  (bad_kit / "kit.json").write_text((pathlib.Path(kit_dir) / "kit.json").read_text())
  (bad_kit / "modules" / ".DS_Store").write_bytes(b"\0")
  (bad_kit / "modules" / "notes.txt").write_text("built on the lab machine")
  kit_lib.read_kit(str(bad_kit))
  doc = json.loads((pathlib.Path(kit_dir) / "kit.json").read_text())
  doc["points"][0]["module"]["file"] = [doc["points"][0]["module"]["file"]]
  (bad_kit / "kit.json").write_text(json.dumps(doc))
  with pytest.raises(EdgeError, match=r"kit.json: points\[0\]: module must be an object naming "
                     "its file$"):
    kit_lib.read_kit(str(bad_kit))
  out = str(tmp_path / "board.json")
  r = run_edge("profile", f"--kit={kit_dir}", f"--out={out}", "--min_run_time=0.02",
               "--quiet")
  assert r.returncode == 0, r.stderr[-2000:]
  prof = records.load(out)
  assert prof.model == CFG.name and prof.platform == "iree-local-task"
  assert sorted(p.tokens for p in prof.points) == sorted(grid)
  assert all(p.component == "model" and p.median_s > 0 and p.num_samples >= 5
             for p in prof.points)
  # The curve's shape in words, as experiments.profile prints it (a walkthrough: a board curve
  # 0.95, 1.12, 1.11, 0.66 ms passed to solve with no word of its steps or lone counts).
  lines = r.stdout.splitlines()
  assert records.step_lines(prof) == lines[-1 - len(records.step_lines(prof)):-1]
  assert lines[-1 - len(records.step_lines(prof))].startswith("-- steps of model curve, batch ")
  before = open(out, "rb").read()
  # Other timing settings cannot merge into it: refused before the kit is timed (it measured
  # every point, then refused the merge), and outputs that would land elsewhere are refused.
  r = run_edge("profile", f"--kit={kit_dir}", f"--out={out}", "--min_run_time=0.03")
  assert r.returncode == 1 and r.stderr.startswith("error: cannot merge"), r.stderr[-2000:]
  assert "[1/" not in r.stderr and r.stderr.count("\n") == 1 and r.stdout == ""
  for bad, message in ((f"{tmp_path / 'newdir'}/", "ends in '/': that names a directory"),
                       (str(tmp_path / "board.csv"), "must name the profile's .json file"),
                       (os.path.join(kit_dir, "p.json"), "is inside the kit"),
                       # (wrote <tmp_path>/newdir.json and sub.json beside the folder named)
                       (f"{tmp_path / 'newdir'}/.json", "names no file: give the profile a "
                                                        "name, e.g. "),
                       (f"{tmp_path / 'sub'}/..json", "names no file")):
    r = run_edge("profile", f"--kit={kit_dir}", f"--out={bad}")
    assert r.returncode == 1 and message in r.stderr and r.stderr.count("\n") == 1, r.stderr
  assert open(out, "rb").read() == before
  assert not [n for n in os.listdir(tmp_path) if n.startswith(("newdir", "board.csv.", "sub"))]
  assert not os.path.exists(os.path.join(kit_dir, "p.json"))
  # Merged into a profile holding more counts: the summary is of the file (it was of this run's
  # points alone: "too few counts" printed for a file of 6 points and a step).
  merged = str(tmp_path / "merged.json")
  doc = json.load(open(out))
  extra = next(n for n in range(CFG.num_tokens, 1, -1) if n not in grid)
  doc["points"].append(dict(doc["points"][0], tokens=extra))
  json.dump(doc, open(merged, "w"))
  r = run_edge("profile", f"--kit={kit_dir}", f"--out={merged}", "--min_run_time=0.02",
               "--quiet")
  assert r.returncode == 0, r.stderr[-2000:]
  whole = records.load(merged)
  assert sorted(p.tokens for p in whole.points) == sorted(list(grid) + [extra])
  assert (f"{merged} holds {len(grid) + 1} points: this run's {len(grid)} merged into the 1 "
          "other it held (the summary is of them all; it is an earlier run's: a step between "
          "its counts and this run's may be the machine's drift between the runs)"
          ) in r.stdout.splitlines()
  assert r.stdout.splitlines()[-1 - len(records.step_lines(whole)):-1] == records.step_lines(
      whole)
  assert sum(line.endswith(" ms)") and ": median " in line
             for line in r.stdout.splitlines()) == len(grid) + 1
  est = _estimate(tmp_path, [None], sorted(grid), lambda l, n: 0.5 + n / 40, cfg=CFG, batch=1)
  solution = solve_stage.solve_paper(records.load(out), read_estimate(est), layer=1)
  paths = write_solution(solution, str(tmp_path / "solve"))
  chosen = read_solution(paths["json"])
  art = str(tmp_path / "art")
  deploy.export_artifact(art, CFG, params, schedule=chosen.schedule,
                         reducer=make_reducer(chosen.method), batch_size=1,
                         targets=["iree:host"], verify=False)
  imgs = str(tmp_path / "imgs")
  write_digits_imagefolder(imgs)
  r = run_edge("run", f"--artifact={art}", f"--images={imgs}", "--quiet",
               "--min_run_time=0.02")
  assert r.returncode == 0, r.stderr[-2000:]
  assert "accuracy " in r.stdout and "target iree:host" in r.stdout
  assert re.search(r"accuracy \d\.\d{4} \(\d+/359; 95% interval \d\.\d{4}\.\.\d\.\d{4}\)\n",
                   r.stdout)
  # A tampered or incomplete kit is refused with one line.
  with open(os.path.join(kit_dir, "kit.json")) as f:
    doc = json.load(f)
  good = doc["points"][0]["module"]["sha256"]
  doc["points"][0]["module"]["sha256"] = "f" * 64
  with open(os.path.join(kit_dir, "kit.json"), "w") as f:
    json.dump(doc, f)
  r = run_edge("profile", f"--kit={kit_dir}", f"--out={tmp_path / 'x.json'}")
  assert r.returncode == 1 and "corrupted or replaced" in r.stderr
  assert not os.path.exists(tmp_path / "x.json")
  doc["points"][0]["module"]["sha256"] = good
  with open(os.path.join(kit_dir, "kit.json"), "w") as f:
    json.dump(dict(doc, backend="cuda"), f)
  with pytest.raises(EdgeError, match="backend 'cuda' is not the iree:host target's 'llvm-cpu'"):
    kit_lib.profile_kit(kit_dir)
  # The compiler entry the board profile records (and merges on), and the weight leaves' dtype
  # (an edit was recorded as given, or met IREE's raw buffer diagnostics).
  with open(os.path.join(kit_dir, "kit.json"), "w") as f:
    json.dump(dict(doc, compiler=dict(doc["compiler"], flags=["x"])), f)
  with pytest.raises(EdgeError, match=r"kit.json: compiler.flags are none of its points' "
                     "flags: an edited kit.json"):
    kit_lib.profile_kit(kit_dir)
  # A compile profile relabelled (the board profile keys curves by it): its flags tell.
  flip = {"latency": "throughput", "throughput": "latency"}
  points = [dict(p, runtime=dict(p["runtime"], profile=flip[p["runtime"]["profile"]]))
            for p in doc["points"]]
  for edited, where in ((dict(doc, points=points), r"\(modules/[^)]+\.vmfb\)"),
                        (dict(doc, compiler=dict(doc["compiler"],
                                                 profile=flip[doc["compiler"]["profile"]])),
                         "compiler")):
    with open(os.path.join(kit_dir, "kit.json"), "w") as f:
      json.dump(edited, f)
    with pytest.raises(EdgeError, match=rf"kit {re.escape(kit_dir)}:? ?{where}: compile "
                       r"profile '\w+', but its flags (hold|lack) the latency profile's "
                       r"--iree-llvmcpu-vector-pproc-strategy=peel: an edited kit.json\?"):
      kit_lib.profile_kit(kit_dir)
  leaves = [dict(leaf) for leaf in doc["weights"]["leaves"]]
  leaves[1]["dtype"] = "int32"
  with open(os.path.join(kit_dir, "kit.json"), "w") as f:
    json.dump(dict(doc, weights=dict(doc["weights"], leaves=leaves)), f)
  with pytest.raises(EdgeError, match=f"weight leaf {re.escape(leaves[1]['name'])} is stored "
                     "as 'int32'; vitprune packs float32 weights"):
    kit_lib.profile_kit(kit_dir)
  # A leaf's shape transposed (same bytes: the file's sha256 holds) or two leaves' names
  # swapped: IREE's buffer diagnostics, or the wrong weights bound to each argument.
  square = next(i for i, leaf in enumerate(doc["weights"]["leaves"])
                if len(leaf["shape"]) == 2 and leaf["shape"][0] != leaf["shape"][1])
  for edit in ("shape", "names"):
    leaves = [dict(leaf) for leaf in doc["weights"]["leaves"]]
    if edit == "shape":
      leaves[square]["shape"] = leaves[square]["shape"][::-1]
    else:
      leaves[0]["name"], leaves[1]["name"] = leaves[1]["name"], leaves[0]["name"]
    with open(os.path.join(kit_dir, "kit.json"), "w") as f:
      json.dump(dict(doc, weights=dict(doc["weights"], leaves=leaves)), f)
    with pytest.raises(EdgeError, match=r"kit .*: the weight leaves' names and shapes do not give "
                       r"the recorded weights.params_sha256 \(an edited record\?\)$"):
      kit_lib.profile_kit(kit_dir)
  with open(os.path.join(kit_dir, "kit.json"), "w") as f:
    json.dump(doc, f)
  os.unlink(os.path.join(kit_dir, doc["points"][1]["module"]["file"]))
  with pytest.raises(EdgeError, match="is missing"):
    kit_lib.profile_kit(kit_dir)
  os.mkfifo(os.path.join(kit_dir, doc["points"][1]["module"]["file"]))    # not "missing"
  with pytest.raises(EdgeError, match=r"\.vmfb in .* is not a regular file \(a device, FIFO or "
                                      r"socket\) \(replaced\?\)$"):
    kit_lib.profile_kit(kit_dir)
  os.unlink(os.path.join(kit_dir, doc["points"][1]["module"]["file"]))
  os.symlink("/dev/zero", os.path.join(kit_dir, doc["points"][1]["module"]["file"]))
  with pytest.raises(EdgeError, match=r"\.vmfb in .* is not a regular file \(a device"):
    kit_lib.profile_kit(kit_dir)                       # (was "a dangling symbolic link")


def test_many_shards_keep_batch_order_and_old_records_still_load(tmp_path, params,
                                                                 monkeypatch):
  imgs = np.random.default_rng(1).normal(size=(4, 32, 32, 3)).astype(np.float32)
  want = np.asarray(model.forward(params, imgs, cfg=CFG))
  art4, art1 = str(tmp_path / "s4"), str(tmp_path / "s1")
  deploy.export_artifact(art4, CFG, params, batch_size=4, targets=["iree:host"], cpu_cores=4,
                         verify=False)
  with monkeypatch.context() as mp:         # as exported before function names had identities
    mp.setattr(iree_build, "rename_main", lambda mlir, name: mlir)
    deploy.export_artifact(art1, CFG, params, batch_size=4, targets=["iree:host"],
                           cpu_cores=1, verify=False)
  edge = edge_rt.load(art4)
  assert edge.shards == 4 and edge.record["module"]["batch_size"] == 1
  for order in ([0, 1, 2, 3], [3, 1, 0, 2]):
    assert np.max(np.abs(edge(imgs[order]) - want[order])) <= 1e-5
  # A record written before shards existed has neither runtime.shards nor module.batch_size.
  rec_path = os.path.join(art1, "iree", "iree_host.json")
  with open(rec_path) as f:
    rec = json.load(f)
  assert (rec["runtime"]["shards"], rec["module"]["batch_size"]) == (1, 4)
  del rec["runtime"]["shards"], rec["module"]["batch_size"]
  rec["function"] = "main"
  with open(rec_path, "w") as f:
    json.dump(rec, f)
  old = edge_rt.load(art1)
  assert old.shards == 1 and np.max(np.abs(old(imgs) - want)) <= 1e-5


def test_kit_compiler_record_is_the_largest_batch_plan(tmp_path, params, monkeypatch):
  # Batch 1 falls under the task threshold (latency profile), batch 2 over it (throughput): the
  # kit-level compiler record must describe the batch-2 modules, the kit's own plan.
  monkeypatch.setattr(iree_build, "usable_cores", lambda: 1)
  gflop = forward_gflop(CFG, 1)
  monkeypatch.setattr(targets_lib, "TASK_MIN_GFLOP", 1.5 * gflop)
  kit_dir = str(tmp_path / "kit")
  iree_build.build_kit(kit_dir, CFG, params, target="iree:host", grid=(9,), batch_sizes=(1, 2),
                       reducer=make_reducer("random"), threads=1)     # (the largest not first)
  kit = kit_lib.read_kit(kit_dir)
  by_batch = {p["batch_size"]: p for p in kit["points"]}
  assert {b: p["runtime"]["profile"] for b, p in by_batch.items()} == {1: "latency",
                                                                       2: "throughput"}
  assert kit["runtime"]["profile"] == kit["compiler"]["profile"] == "throughput"
  assert kit["compiler"]["flags"] == by_batch[2]["flags"] != by_batch[1]["flags"]


def test_kit_points_run_as_an_artifact_at_their_batch_size(tmp_path, params, monkeypatch):
  monkeypatch.setattr(iree_build, "usable_cores", lambda: 2)
  host = parse_target("iree:host")
  kit_dir = str(tmp_path / "kit")
  iree_build.build_kit(kit_dir, CFG, params, target="iree:host", grid=(17,), batch_sizes=(1, 2),
                       reducer=make_reducer("random"), threads=2)
  kit = kit_lib.read_kit(kit_dir)      # the plan at batch 2: 2 shards; batch 1 runs whole
  assert (kit["runtime"]["shards"], kit["driver"]) == (2, "local-sync")
  for p in kit["points"]:
    assert p["runtime"] == iree_build.choose_runtime(CFG, p["batch_size"], host)
  assert [(p["batch_size"], p["runtime"]["shards"], p["module"]["batch_size"])
          for p in kit["points"]] == [(1, 1, 1), (2, 2, 1)]
  prof, _ = kit_lib.profile_kit(kit_dir, protocol.TimingConfig(min_run_time=0.01))
  assert sorted(p.batch_size for p in prof.points) == [1, 2]
  # The trial run of a kit for a named CPU calls every point on its own plan, not the first one
  # only: each point is another graph, and a missing instruction may sit in any one of them.
  bound, bind = [], edge_rt.Runner.bind
  monkeypatch.setattr(edge_rt.Runner, "bind", lambda self, fns, w, x: bound.append(
      (self.driver, len(fns), len(x))) or bind(self, fns, w, x))
  kit_lib.trial_call(kit_dir)
  assert bound == [("local-sync", 1, 1), ("local-sync", 2, 2)]
  monkeypatch.setattr(edge_rt.Runner, "bind", bind)
  assert all(p.median_s > 0 for p in prof.points)
  prof, used = kit_lib.profile_kit(kit_dir, protocol.TimingConfig(min_run_time=0.01),
                                   driver="local-task")      # an override covers every point
  assert used["driver"] == "local-task" and prof.platform == "iree-local-task"
  good = kit_lib.read_kit(kit_dir)
  for change in (lambda d: d["points"][0].update(tokens=9),   # a label edited after the build
                 lambda d: d["points"][0].update(batch_size=8),
                 lambda d: d.update(model="vit_digits"),
                 lambda d: d["config"].update(depth=3),
                 lambda d: d.update(dtype="bfloat16")):
    doc = json.loads(json.dumps(good))
    change(doc)
    with open(os.path.join(kit_dir, "kit.json"), "w") as f:
      json.dump(doc, f)
    with pytest.raises(EdgeError, match="does not match its module"):
      kit_lib.profile_kit(kit_dir)
  doc = json.loads(json.dumps(good))
  doc["points"][1]["runtime"]["shards"] = 4
  with open(os.path.join(kit_dir, "kit.json"), "w") as f:
    json.dump(doc, f)
  with pytest.raises(EdgeError, match=r"shards 4 does not split the batch of 2"):
    kit_lib.profile_kit(kit_dir)
  del doc["points"][1]["runtime"]      # an old kit: the kit's driver, one shard
  with open(os.path.join(kit_dir, "kit.json"), "w") as f:
    json.dump(doc, f)
  with pytest.raises(EdgeError, match=r"a module for batch 1 in 1 shard cannot take the "
                     "batch of 2"):
    kit_lib.profile_kit(kit_dir)


def test_deploy_cli_rejects_a_bad_target_before_any_work(tmp_path):
  r = subprocess.run([sys.executable, "-m", "experiments.deploy", "--weights=weights/vit_digits",
                      f"--out={tmp_path / 'a'}", "--target=iree:cuda:87"], cwd=ROOT,
                     capture_output=True, text=True, timeout=120,
                     env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert r.returncode == 1 and r.stderr.strip() == (
      "error: target 'iree:cuda:87': '87' is not a CUDA architecture such as sm_87")
  assert not os.path.exists(tmp_path / "a")


def test_edge_profile_files_are_published_together_and_merge_only_with_their_setup(tmp_path):
  """The board's profile JSON and CSV: a failure while publishing leaves the old pair (a kill
  left a new JSON beside an old CSV), and an existing profile of another platform (a jax one)
  is refused, not replaced."""
  import dataclasses
  from vitprune import atomic
  from vitprune.profile import records
  from vitprune.registry import get_config
  cfg = get_config("test_tiny_vit")

  def prof(platform, median, batch=1):
    pts = [records.Point(component="model", batch_size=batch, tokens=n, median_s=median,
                         q25_s=median, q75_s=median, num_samples=3, samples_s=(median,) * 3,
                         compile_s=0.1, retries=0) for n in (17, 9)]
    return records.analyze(records.Profile(
        model=cfg.name, config=dataclasses.asdict(cfg), device_kind="cpu", platform=platform,
        jax_version="none", jaxlib_version="none", dtype="float32", modes=("model",),
        reducer="keep_first", timing={}, points=tuple(pts), created=records.now_iso()))

  out = str(tmp_path / "board.json")
  paths = kit_lib.write_profile(prof("iree-local-sync", 1e-3), out)
  before = {k: open(p, "rb").read() for k, p in paths.items()}

  def fail(phase):
    if phase.startswith("renamed:"):
      raise RuntimeError("killed while publishing")

  atomic.fault_hook = fail
  try:
    with pytest.raises(RuntimeError, match="killed"):
      kit_lib.write_profile(prof("iree-local-sync", 2e-3), out)
  finally:
    atomic.fault_hook = None
  kit_lib.write_profile(prof("iree-local-sync", 3e-3), out)    # the next run finishes the set
  after = records.load(out)
  assert {p.median_s for p in after.points} == {3e-3}
  assert ",17,,3,3,3," in open(paths["csv"]).read()          # milliseconds: the JSON's twin
  assert before["csv"] != open(paths["csv"], "rb").read()
  jax_out = str(tmp_path / "jax.json")
  records.save(prof("cpu", 1e-3), str(tmp_path), stem="jax")
  with pytest.raises(ValueError, match=r"cannot merge into .*jax.json \(its value first, this "
                     r"run's second\): cannot merge profiles with different platform: 'cpu' vs "
                     r"'iree-local-sync'"):
    kit_lib.write_profile(prof("iree-local-sync", 1e-3), jax_out)
  assert records.load(jax_out).platform == "cpu"
  # Two kits of one setup but another shard plan (or compiler, runtime, host): one curve held
  # points timed in 2 shards and in 1, nothing telling them apart.
  kit = {"target": "iree:host", "compiler": {"flags": []}, "shards": {"1": [2]}}
  board = str(tmp_path / "board2.json")
  kit_lib.write_profile(prof("iree-local-sync", 1e-3), board, kit)
  assert json.load(open(board))["edge"]["shards"] == {"1": [2]}
  kit_lib.write_profile(prof("iree-local-sync", 2e-3), board, kit)          # same setup: merged
  with pytest.raises(ValueError, match=r"cannot merge into .*board2.json: its batch-1 points ran "
                     r"in \[2\] shard\(s\), this run's in \[1\]"):
    kit_lib.write_profile(prof("iree-local-sync", 3e-3), board, dict(kit, shards={"1": [1]}))
  with pytest.raises(ValueError, match=r"it was timed with edge compiler \{'flags': \[\]\}, this "
                     r"run with \{'flags': \['-O3'\]\}"):
    records.check_save(prof("iree-local-sync", 1e-3), str(tmp_path), "board2", flag="out",
                       fields=kit_lib.edge_fields(dict(kit, compiler={"flags": ["-O3"]})),
                       merge_fields=kit_lib.merge_edge_fields)
  assert {p.median_s for p in records.load(board).points} == {2e-3}
  kit_lib.write_profile(prof("iree-local-sync", 4e-3, batch=8), board, dict(kit, shards={
      "8": [1]}))                                  # another batch size: its own shard plan
  assert json.load(open(board))["edge"]["shards"] == {"1": [2], "8": [1]}
  # ... or another compile profile (the latency flags at batch 1 in a kit of batches 1 and 8,
  # the throughput flags in a kit of batch 1 alone, under one kit-level compiler entry): one
  # curve held points of both, its 'edge' entry naming one set of flags.
  flagged = dict(kit, profiles={"1": ["latency"]})
  other = str(tmp_path / "board3.json")
  kit_lib.write_profile(prof("iree-local-sync", 1e-3), other, flagged)
  with pytest.raises(ValueError, match=r"its batch-1 points were compiled with the \['latency'\] "
                     r"flags, this run's with the \['throughput'\]"):
    kit_lib.write_profile(prof("iree-local-sync", 2e-3), other,
                          dict(kit, profiles={"1": ["throughput"]}))
  kit_lib.write_profile(prof("iree-local-sync", 3e-3, batch=8), other,
                        dict(kit, shards={"8": [1]}, profiles={"8": ["throughput"]}))
  assert json.load(open(other))["edge"]["profiles"] == {"1": ["latency"], "8": ["throughput"]}
  assert {(p.batch_size, p.median_s) for p in records.load(board).points} == {(1, 2e-3),
                                                                                (8, 4e-3)}
  for old in (None, "gone"):     # a board profile from before shards were kept (0cc7cea), or
    doc = json.load(open(board))  # of a kit from before shard plans: merged, the plan added
    if old is None:
      doc["edge"]["shards"] = None
    else:
      del doc["edge"]["shards"]
    json.dump(doc, open(board, "w"))
    kit_lib.write_profile(prof("iree-local-sync", 5e-3), board, kit)
    assert json.load(open(board))["edge"]["shards"] == {"1": [2]}
  # An edited 'edge' entry merged unchecked (points of the latency and the throughput flags in
  # one curve, exit 0), or raised a TypeError blamed on the kit: refused, naming the file.
  edge = json.load(open(board))["edge"]
  for edited, why in (
      (None, "its 'edge' entry is missing"), ([], "its 'edge' entry is not an object"),
      ({k: v for k, v in edge.items() if k not in ("compiler", "host_cpu")},
       "its 'edge' entry states no compiler, host_cpu"),
      (dict(edge, shards=[1]), r"its edge shards is not an object of batch sizes \(\[1\]\)"),
      (dict(edge, shards=[]), r"its edge shards is not an object of batch sizes \(\[\]\)"),
      (dict(edge, profiles={"b1": ["latency"]}), "its edge profiles is not an object of batch "
       r"sizes \(\{'b1': \['latency'\]\}\)")):
    doc = json.load(open(board))
    doc["edge"] = edited
    json.dump(doc, open(board, "w"))
    with pytest.raises(ValueError, match=f"^cannot merge into {re.escape(board)}: {why}.* so "
                       r"the .*setup of its points cannot be checked \(write this run to another "
                       r"--out, or move the file away\)$"):
      kit_lib.write_profile(prof("iree-local-sync", 6e-3), board, kit)
    assert {p.median_s for p in records.load(board).points} == {4e-3, 5e-3}     # (kept)
  with pytest.raises(ValueError, match="different platform"):      # not a board profile
    kit_lib.write_profile(prof("iree-local-sync", 1e-3), jax_out, kit)


def test_a_features_artifact_is_not_run_as_a_classifier(tmp_path, artifact, capsys):
  """A model converted without its head (num_classes=0) outputs [B, C] features: `run` printed
  a "class" and a probability per image from a softmax over them, and exited 0."""
  from experiments import common, run_deployed  # pylint: disable=g-import-not-at-top
  cfg = CFG.replace(num_classes=0)
  out = str(tmp_path / "features")
  deploy.export_artifact(out, cfg, model.init_params(cfg, 0), batch_size=2,
                         targets=["jax", "iree:host"])
  record = json.loads((tmp_path / "features" / edge_rt.EDGE_DIR / "iree_host.json").read_text())
  assert record["output"] == {"shape": [2, cfg.embed_dim], "dtype": "float32",
                              "kind": "features"}
  assert json.loads((pathlib.Path(artifact) / edge_rt.EDGE_DIR / "iree_host.json").read_text()
                    )["output"]["kind"] == "logits"
  r = run_edge("run", f"--artifact={out}", f"--images={tmp_path}")
  assert (r.returncode, r.stdout) == (1, ""), r.stderr[-2000:]
  assert r.stderr == (f"error: {out}: its iree:host module outputs [B, {cfg.embed_dim}] "
                      "features (no classification head): `run` classifies images; `bench` "
                      "times the module\n")
  with pytest.raises(SystemExit) as e:
    common.run_in_process(run_deployed.main, run_deployed.define_flags,
                          [f"--artifact={out}", f"--images={tmp_path}"])
  assert e.value.code == 1
  assert capsys.readouterr().err == (
      f"error: {out} outputs [B, {cfg.embed_dim}] features (no classification head, "
      "num_classes=0): run_deployed classifies images; vitprune.load(path)(images) returns the "
      "features\n")


def test_the_board_model_refuses_raw_pixels_and_non_finite_images(artifact, images):
  """`vitprune.edge.load(path)(images)` took uint8 pixels as they were (a 3 read as class 0)
  and NaN/inf images (all-NaN logits, argmax 0) without a word; `vitprune.load` refuses both."""
  m = edge_rt.load(artifact)
  x = np.asarray(images[:2], np.float32)
  np.testing.assert_array_equal(m(x.astype(np.float64)), m(x))
  for bad, message in ((np.zeros(x.shape, np.uint8), "^images must be floating point, "
                        r"preprocessed as the record says \('preprocessing'.*got uint8 pixels$"),
                       (x.astype(np.complex64), "got complex64 pixels"),
                       (np.where(np.arange(x.size).reshape(x.shape) == 5, np.nan, x),
                        "^images hold NaN or inf values$"),
                       (np.full(x.shape, 1e300), "^images hold NaN or inf values$"),
                       (np.zeros(x.shape, np.int64).astype(object), "got int64 pixels"),
                       ([x[0], x[1, :-1]], r"^images must be one \[B, H, W, C\] array of "
                        r"numbers \(.*inhomogeneous"),            # (ragged: numpy's own error)
                       (np.full(x.shape, None, object), "got objects among them")):
    with pytest.raises(ValueError, match=message):
      m(bad)
  huge = x.copy()
  huge[0] = 3e38                            # finite, but the logits are NaN: class 0
  with pytest.raises(FloatingPointError, match=r"^the model's outputs are NaN/inf for 1 of 2 "
                     r"images \(first: batch row 0\), whose values reach 3e\+38"):
    m(huge)


def test_a_features_record_built_before_kinds_takes_its_kind_from_the_manifest(tmp_path,
                                                                              monkeypatch):
  """Records written before output kinds (function named without one) of a model without a
  head: the board would classify its features; the artifact's manifest states the kind."""
  name_of = edge_rt.function_name
  monkeypatch.setattr(edge_rt, "function_name", lambda identity: name_of(
      {**identity, "output": {k: v for k, v in identity["output"].items() if k != "kind"}}))
  cfg = CFG.replace(num_classes=0)
  out = tmp_path / "features"
  deploy.export_artifact(str(out), cfg, model.init_params(cfg, 0), batch_size=2,
                         targets=["jax", "iree:host"])
  path = out / edge_rt.EDGE_DIR / "iree_host.json"
  record = json.loads(path.read_text())
  del record["output"]["kind"]                       # as that version wrote it
  path.write_text(json.dumps(record))
  assert edge_rt.load(str(out)).output_kind == "features"


def test_a_manifest_that_is_not_a_file_is_refused_and_errors_are_one_line(artifact, tmp_path):
  """A directory named manifest.json made the board CLI skip every record-vs-manifest check
  (`run_deployed` said it was missing); an error naming a path with a newline took two lines."""
  bad = tmp_path / "dir_manifest"
  shutil.copytree(artifact, bad)
  (bad / "manifest.json").unlink()
  (bad / "manifest.json").mkdir()
  r = run_edge("bench", f"--artifact={bad}", "--min_run_time=0.01")
  assert (r.returncode, r.stderr) == (1, f"error: --artifact: {bad}/manifest.json exists but "
                                         "is not a "
                                         "regular file: copy the artifact's manifest.json with "
                                         "its iree/ folder, or the iree/ folder alone\n")
  with pytest.raises(deploy.ArtifactError, match=re.escape(    # (said "manifest.json is missing")
      f"{bad}/manifest.json is a directory: an artifact's manifest is a JSON file")):
    deploy.load(str(bad))
  os.unlink(bad / edge_rt.EDGE_DIR / "iree_host.json")
  os.mkfifo(bad / edge_rt.EDGE_DIR / "iree_host.json")
  with pytest.raises(EdgeError, match=r"iree_host.json is not a regular file \(a device, FIFO"):
    edge_rt.read_json(str(bad / edge_rt.EDGE_DIR / "iree_host.json"), "edge target record")
  r = run_edge("run", f"--artifact={tmp_path}/no\nsuch", f"--images={tmp_path}")
  assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
  assert r.stderr.startswith(f"error: --artifact: {tmp_path}/no such "), r.stderr


def test_a_malformed_record_is_one_line_from_the_board_cli(artifact, tmp_path):
  """A record field the header checks do not cover (input.shape deleted; runtime a list) ends
  the board CLI with one line naming the artifact, not a traceback."""
  for name, change in (("shape", lambda r: r["input"].pop("shape")),
                       ("runtime", lambda r: r.update(runtime=[1]))):
    bad = tmp_path / name
    shutil.copytree(artifact, bad)
    rec = bad / edge_rt.EDGE_DIR / "iree_host.json"
    doc = json.loads(rec.read_text())
    change(doc)
    rec.write_text(json.dumps(doc))
    r = run_edge("bench", f"--artifact={bad}", "--min_run_time=0.01")
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr[-2000:]
    assert r.stderr.startswith(f"error: --artifact={bad}"), r.stderr   # (its flag named)
  bad = tmp_path / "version"
  shutil.copytree(artifact, bad)
  rec = bad / edge_rt.EDGE_DIR / "iree_host.json"
  rec.write_text(json.dumps(dict(json.loads(rec.read_text()), version=True)))
  with pytest.raises(EdgeError, match="iree_host.json: not a vitprune-edge-target record of "
                                      "version 1 or 2"):       # (true passed as version 1)
    edge_rt.read_records(str(bad))


def _consistent_manifest(man):
  """`man` (a manifest's JSON) made whole again after an edit, as another artifact's own
  manifest is: its config's preprocessing the top-level one, its identity recomputed."""
  from vitprune.records.manifest import Manifest  # pylint: disable=g-import-not-at-top
  man["model"]["config"]["preprocessing"] = dict(man["preprocessing"])
  man.pop("identity", None)
  man["identity"] = Manifest.from_json(man).identity()


@pytest.mark.parametrize("field, edit", [
    ("weights .* differs from the manifest's", lambda m: m["weights"].update(sha256="0" * 64)),
    ("reducer name, options .* differs from the manifest's",
     lambda m: m["reducer"].update(name="random", options={"seed": 0})),
    ("class_names .* differs from the manifest's",
     lambda m: m.update(class_names=list("abcdefghij"))),
    ("preprocessing crop_pct 1.0 differs from the manifest's 0.5",
     lambda m: m["preprocessing"].update(crop_pct=0.5)),
    (r"preprocessing mean \[.*\] differs from the manifest's \[0.25, 0.25, 0.25\]",
     lambda m: m["preprocessing"].update(mean=[0.25, 0.25, 0.25])),
    ("compute precision .* differs from the manifest's",
     lambda m: m["compute"].update(precision="default")),
    ("schedule .* differs from the manifest's",
     lambda m: m["schedule"].update(text="keep@0:5", counts=[17, 5, 5])),
])
def test_a_module_from_another_artifact_is_refused(artifact, tmp_path, field, edit):
  """iree/ copied in from another artifact: the jax graph and the IREE module would answer for
  different weights (0.98 vs 0.09 accuracy in a fault probe), another reducer (random drop's
  0.9526 reported for a POMT artifact's 0.9777) or reversed class names (0.0084): every field
  the manifest and the records both state must agree; the message names the differing key of
  an object (it showed two truncated dicts, hiding a changed mean)."""
  mixed = tmp_path / "mixed"
  shutil.copytree(artifact, mixed)
  man = json.loads((mixed / "manifest.json").read_text())
  rec = json.loads((mixed / edge_rt.EDGE_DIR / "iree_host.json").read_text())
  assert rec["reducer"] == {k: man["reducer"][k] for k in ("name", "options", "fields")}
  edge_rt.load(str(mixed), "iree:host")
  edit(man)
  _consistent_manifest(man)         # (another artifact's own manifest, read whole by the board)
  (mixed / "manifest.json").write_text(json.dumps(man))
  with pytest.raises(EdgeError, match=rf"module's record is not of this artifact: its {field}"
                     r".*: files mixed from two artifacts"):
    edge_rt.load(str(mixed), "iree:host")
  os.unlink(mixed / "manifest.json")          # a board copy holding iree/ alone still loads
  assert edge_rt.load(str(mixed), "iree:host") is not None


def test_a_board_copy_without_manifest_refuses_records_of_two_artifacts(artifact, tmp_path):
  """iree/ alone (no manifest.json) was checked against nothing: the records of two artifacts
  copied into one folder loaded, each answering for its own labels and preprocessing."""
  mixed = tmp_path / "mixed"
  shutil.copytree(artifact, mixed)
  os.unlink(mixed / "manifest.json")
  edge_rt.load(str(mixed), "iree:host")
  rec = json.loads((mixed / edge_rt.EDGE_DIR / "iree_host.json").read_text())
  other = dict(rec, target="iree:llvm-cpu:aarch64-linux-gnu",
               class_names=list("abcdefghij"))               # another artifact's record
  (mixed / edge_rt.EDGE_DIR / "iree_zz_other.json").write_text(json.dumps(other))
  with pytest.raises(EdgeError, match=r"the iree:llvm-cpu:aarch64-linux-gnu module's record "
                     r"\(iree/iree_zz_other.json\) and the iree:\S+ one's \(iree/\S+\) are of two "
                     r"artifacts: their class_names differ \(\['a', 'b', "):
    edge_rt.load(str(mixed), "iree:host")
  # The same labels, but a record edited to another target: its function no longer matches its
  # module, which the board now checks for every record, as the jax path does (the artifact's
  # own targets loaded together above).
  (mixed / edge_rt.EDGE_DIR / "iree_zz_other.json").write_text(json.dumps(
      dict(rec, target="iree:llvm-cpu:aarch64-linux-gnu")))
  with pytest.raises(EdgeError, match=r"iree_zz_other.json: the record does not match its "
                     r"module .*edited after export\?"):
    edge_rt.load(str(mixed), "iree:host")


def test_vitprune_load_refuses_a_module_from_another_artifact(artifact, tmp_path, params):
  """`vitprune.load` (run_deployed) checked only that iree/ holds the manifest's targets: the
  IREE module of another schedule, copied in, loaded beside this artifact's jax graph."""
  out = tmp_path / "full"
  deploy.export_artifact(str(out), CFG, params, batch_size=2, targets=["jax", "iree:host"])
  assert deploy.load(str(out)) is not None
  for f in glob.glob(os.path.join(artifact, edge_rt.EDGE_DIR, "iree_host.*")):
    shutil.copy(f, out / edge_rt.EDGE_DIR)                  # keep@1:9's module and record
  with pytest.raises(deploy.ArtifactError, match=r"record is not of this artifact: its "
                     r"schedule .*keep@1:9.* differs from the manifest's .*full"):
    deploy.load(str(out))


def test_vitprune_load_refuses_damaged_or_missing_iree_files(artifact, tmp_path):
  """A truncated iree/weights.bin or module loaded on the jax path (run_deployed: rc 0) and was
  refused only on the board; each file is hashed as the board does."""
  assert deploy.load(artifact) is not None
  for name, damage, match in (
      ("weights.bin", lambda p: os.truncate(p, 100), "weights.bin has sha256 .* corrupted or "
                                                     "replaced"),
      ("iree_host.vmfb", lambda p: os.truncate(p, 100), "iree_host.vmfb has sha256 "),
      ("iree_host.vmfb", os.unlink, r"iree_host.vmfb is missing from .* \(incomplete copy\?\)")):
    bad = tmp_path / f"bad_{len(os.listdir(tmp_path))}"
    shutil.copytree(artifact, bad)
    damage(str(bad / edge_rt.EDGE_DIR / name))
    with pytest.raises(deploy.ArtifactError, match=r"/iree/\w+\.json: iree/" + match):
      deploy.load(str(bad))


def test_a_control_character_in_a_file_name_cannot_fake_a_prediction_row(artifact, tmp_path,
                                                                          capsys):
  """Each prediction is one tab-separated line: a file named "a\\n9\\t9\\t0.99..." printed a
  second, fake row (run_deployed and the board's `run`)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from experiments import common, run_deployed  # pylint: disable=g-import-not-at-top
  flat = tmp_path / "flat"
  flat.mkdir()
  odd = "a\n9\t9\t0.99\tlabel=9.png"
  for name in ("b.png", odd):
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(flat / name, format="PNG")
  common.run_in_process(run_deployed.main, run_deployed.define_flags,
                        [f"--artifact={artifact}", f"--images={flat}", "--repeats=3"])
  jax_out = capsys.readouterr().out
  jax_rows = jax_out.splitlines()[:2]
  r = run_edge("run", f"--artifact={artifact}", f"--images={flat}", "--target=iree:host",
               "--min_run_time=0.01")
  assert r.returncode == 0, r.stderr[-2000:]
  for out in (jax_out, r.stdout):     # (a flat folder: why there is no accuracy, said alike)
    assert data_lib.accuracy_line({"accuracy": None}) in out.splitlines()
  for rows in (jax_rows, r.stdout.splitlines()[:2]):
    assert [row.split("\t")[0] for row in rows] == [
        "a\\n9\\t9\\t0.99\\tlabel=9.png", "b.png"], rows
    assert all(len(row.split("\t")) == 4 for row in rows), rows


def test_a_pruned_vit_digits_graph_compiles_for_cuda(tmp_path):
  """keep@3:35 on vit_digits sorts 34 kept indices: IREE's CUDA backend failed to bufferize a
  sort of that length (the README's own edge command failed); the reducers order their indices
  with a second top_k instead (same values, checked against the references elsewhere)."""
  from vitprune.registry import get_config  # pylint: disable=g-import-not-at-top
  cfg = get_config("vit_digits")
  out = deploy.export_artifact(str(tmp_path / "d"), cfg, model.init_params(cfg, 0),
                               schedule=parse_schedule(cfg, "keep@3:35"),
                               reducer=make_reducer("pomt"), reducer_name="pomt",
                               batch_size=1, targets=["jax", "iree:cuda:sm_87"])
  assert deploy.read_manifest(out).targets == ("jax", "iree:cuda:sm_87")


def test_the_compile_cache_keys_host_modules_by_the_cpu(tmp_path, monkeypatch):
  """`--iree-llvmcpu-target-cpu=host` means this machine's CPU: a cache shared between machines
  must not serve one CPU's module to another (other flags: keyed by the flags alone)."""
  import types  # pylint: disable=g-import-not-at-top
  compiled = []
  fake = types.SimpleNamespace(compile_str=lambda *a, **k: compiled.append(1) or b"vmfb")
  cpu = {"arch": "x86_64", "model": "A", "features": ["avx2"]}
  monkeypatch.setattr(iree_build, "host_cpu", lambda: dict(cpu))
  host = ["--iree-llvmcpu-target-cpu=host"]
  named = ["--iree-llvmcpu-target-cpu=cortex-a78ae"]
  for flags_, other_cpu_hits in ((host, False), (named, True)):
    cpu["model"] = "A"
    assert not iree_build._compile_once(fake, "module {}", ["llvm-cpu"], flags_, "v",
                                        str(tmp_path))[1]
    assert iree_build._compile_once(fake, "module {}", ["llvm-cpu"], flags_, "v",
                                    str(tmp_path))[1]              # same CPU: cached
    cpu["model"] = "B"
    assert iree_build._compile_once(fake, "module {}", ["llvm-cpu"], flags_, "v",
                                    str(tmp_path))[1] == other_cpu_hits


def test_the_compile_cache_never_serves_a_damaged_or_foreign_entry(tmp_path):
  """A cache file holds its key and the module's sha256: a truncated or flipped file, or one
  copied over another key's, is recompiled and replaced, never served as a module."""
  import types  # pylint: disable=g-import-not-at-top
  compiled = []
  modules = {"module {a}": b"module-A" * 100, "module {b}": b"module-B" * 100}
  fake = types.SimpleNamespace(
      compile_str=lambda mlir, **k: compiled.append(mlir) or modules[mlir])
  flags = ["--iree-llvmcpu-target-cpu=cortex-a78ae"]

  def compile_(mlir):
    blob, cached, key = iree_build._compile_once(fake, mlir, ["llvm-cpu"], flags, "v",
                                                 str(tmp_path))
    assert blob == modules[mlir]
    return cached, os.path.join(str(tmp_path), key[:2], key + ".module")

  key_a = iree_build._compile_once(fake, "module {a}", ["llvm-cpu"], flags, "v", None)[2]
  os.makedirs(os.path.join(str(tmp_path), key_a[:2]))
  legacy = os.path.join(str(tmp_path), key_a[:2], key_a + ".vmfb")
  with open(legacy, "wb") as f:
    f.write(b"bare module")
  (cached_a, path_a), (cached_b, path_b) = compile_("module {a}"), compile_("module {b}")
  assert not os.path.exists(legacy)               # replaced by the new entry, not left behind
  assert not cached_a and not cached_b and compile_("module {a}")[0]
  good_a = open(path_a, "rb").read()
  damages = {"truncated": good_a[:-7], "a flipped byte": good_a[:-1] + b"?",
             "another key's entry": open(path_b, "rb").read(),
             "a bare module (older format)": modules["module {a}"], "empty": b""}
  for what, data in damages.items():
    with open(path_a, "wb") as f:
      f.write(data)
    n = len(compiled)
    assert compile_("module {a}") == (False, path_a), what
    assert len(compiled) == n + 1, what                        # recompiled ...
    assert open(path_a, "rb").read() == good_a, what           # ... and replaced
    assert compile_("module {a}")[0], what                     # served again afterwards


def test_a_kit_of_bfloat16_params_records_the_digest_of_what_it_packs(tmp_path):
  """The kit packs float32 leaves; its params_sha256 was of the bfloat16 tree given, so the
  board's check of the packing refused every such kit as edited."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  params = jax.tree.map(lambda a: jnp.asarray(a, jnp.bfloat16), model.init_params(CFG, 0))
  path = iree_build.build_kit(str(tmp_path / "kit"), CFG, params, target="iree:host",
                              grid=(CFG.num_tokens,), threads=1)
  kit_lib.trial_call(path)


def test_a_cached_modules_compile_s_is_the_time_it_took(monkeypatch):
  """A cache hit recorded compile_s 0.0, which a board profile of a kit built from the cache
  wrote as every point's compile time; it is the wall time of the hit, as in a JAX profile."""
  import time  # pylint: disable=g-import-not-at-top

  def hit(*_):
    time.sleep(0.02)
    return b"vmfb", True, "key"

  monkeypatch.setattr(iree_build, "_compile_once", hit)
  _, info = iree_build.compile_module("module {}", parse_target("iree:host"), cache_dir="c")
  assert info["cached"] and info["compile_s"] >= 0.02


def test_a_damaged_cache_slot_is_bypassed_not_fatal(tmp_path, caplog):
  """A file where an entry's folder goes, or a folder at the entry itself: the kit failed after
  compiling ('File exists' / 'Is a directory'); the module is good, only not cached."""
  import types  # pylint: disable=g-import-not-at-top
  fake = types.SimpleNamespace(compile_str=lambda mlir, **k: b"module-" + mlir.encode())
  flags = ["--iree-llvmcpu-target-cpu=cortex-a78ae"]
  key = iree_build._compile_once(fake, "module {a}", ["llvm-cpu"], flags, "v", None)[2]
  slot = tmp_path / key[:2]
  slot.write_text("junk")                                    # a file where the folder goes
  assert iree_build._compile_once(fake, "module {a}", ["llvm-cpu"], flags, "v",
                                  str(tmp_path))[:2] == (b"module-module {a}", False)
  assert "could not store" in caplog.text and slot.read_text() == "junk"
  slot.unlink()
  (slot / (key + ".module")).mkdir(parents=True)             # a folder at the entry
  assert iree_build._compile_once(fake, "module {a}", ["llvm-cpu"], flags, "v",
                                  str(tmp_path))[:2] == (b"module-module {a}", False)


def test_bytes_that_are_not_a_module_are_one_error_naming_the_file():
  """A damaged module whose record's sha256 was updated to match: the runtime's verifier
  failed outside the error mapping (a message without the file's name)."""
  with pytest.raises(EdgeError, match=r"^/x/iree_host.vmfb cannot be loaded on the local-sync "
                     "device: "):
    edge_rt.Runner("local-sync").load_bytes(b"junk" * 10, "main", "/x/iree_host.vmfb")


def test_the_board_cli_prints_a_path_that_is_not_utf8_escaped(artifact, tmp_path):
  """The board CLI wrote --output, then failed printing its name (exit 1 after the work)."""
  out = os.path.join(os.fsencode(tmp_path), b"\xff.json")
  r = subprocess.run([sys.executable, "-c", NO_JAX, "vitprune.edge", "bench",
                      f"--artifact={artifact}", "--target=iree:host", "--min_run_time=0.01",
                      b"--output=" + out], cwd=ROOT, capture_output=True, timeout=120,
                     env=dict(os.environ, PYTHONIOENCODING="utf-8:strict"))
  assert r.returncode == 0, r.stderr[-2000:]
  assert b"wrote " in r.stdout and b"\\udcff.json" in r.stdout and os.path.isfile(out)


@pytest.mark.parametrize("edit, message", [
    (lambda r: r.update(version=3), r"not a vitprune-edge-target record of version 1 or 2 "
     r"\(a newer vitprune wrote it\?\)"),
    (lambda r: r.pop("reducer"), r"record lacks \['reducer'\]"),
])
def test_record_versions(artifact, tmp_path, edit, message):
  """Version 2 records hold the reducer (part of the function identity): a runtime that reads
  version 1 only refuses them by version, not as 'edited after export'."""
  bad = tmp_path / "v"
  shutil.copytree(artifact, bad)
  rec = bad / edge_rt.EDGE_DIR / "iree_host.json"
  doc = json.loads(rec.read_text())
  assert doc["version"] == 2 and doc["reducer"]["name"] == "pomt"
  edit(doc)
  rec.write_text(json.dumps(doc))
  with pytest.raises(EdgeError, match=message):
    edge_rt.load(str(bad), "iree:host")


def test_a_schedule_kit_profile_names_each_schedule(tmp_path, params):
  """Two schedules entering with the same count printed as two identical 'schedule b1 n17'
  lines; each line names its schedule's counts."""
  kit_dir = str(tmp_path / "kit")
  scheds = [parse_schedule(CFG, t) for t in ("keep@0:12,1:8", "keep@1:9")]
  iree_build.build_kit(kit_dir, CFG, params, target="iree:host", mode="schedule",
                       schedules=scheds, reducer=make_reducer("tome"), reducer_name="tome",
                       threads=2)
  r = run_edge("profile", f"--kit={kit_dir}", f"--out={tmp_path / 'p.json'}",
               "--min_run_time=0.02")
  assert r.returncode == 0, r.stderr[-2000:]
  lines = r.stdout.splitlines()
  assert [l.split(":")[0] for l in lines[:2]] == ["schedule b1 17,12,8", "schedule b1 17,17,9"]
  assert lines[2] == f"wrote {tmp_path / 'p.json'}, {tmp_path / 'p.csv'}"   # (both files)
  progress = sorted(l.split("] ")[1] for l in r.stderr.splitlines() if l.startswith("["))
  assert progress == ["schedule b1 17,12,8", "schedule b1 17,17,9"], r.stderr
  # A point's schedule label or the kit's reducer edited (timings written into the profile
  # under another schedule or method, which solve then read) is refused by the module's name.
  doc = json.loads((pathlib.Path(kit_dir) / "kit.json").read_text())
  for edit in (lambda d: d["points"][0].__setitem__("schedule", [17, 12, 9]),
               lambda d: d.__setitem__("reducer", "pomt")):
    bad = json.loads(json.dumps(doc))
    edit(bad)
    (pathlib.Path(kit_dir) / "kit.json").write_text(json.dumps(bad))
    r = run_edge("profile", f"--kit={kit_dir}", f"--out={tmp_path / 'q.json'}",
                 "--min_run_time=0.02")
    assert r.returncode == 1 and "the record does not match its module" in r.stderr, r.stderr
    assert not (tmp_path / "q.json").exists()


def test_a_manifest_field_missing_is_named_as_missing(artifact, tmp_path):
  """A manifest without a field the records state was reported as the record's value 'differs
  from the manifest's None: files mixed from two artifacts?'."""
  for field in ("preprocessing", "compute", "preprocessing mean"):
    bad = tmp_path / field.replace(" ", "_")
    shutil.copytree(artifact, bad)
    man = json.loads((bad / "manifest.json").read_text())
    if " " in field:
      del man["preprocessing"]["mean"]
    else:
      del man[field]
    (bad / "manifest.json").write_text(json.dumps(man))
    # (the board reads the manifest whole, as the jax path does: named by the reader)
    with pytest.raises(EdgeError, match=rf"manifest.json: lacks required entries \['{field}'\]"
                       if " " not in field else r"manifest.json: preprocessing does not match "
                       r"model.config.preprocessing \(edited\?\)"):
      edge_rt.load(str(bad), "iree:host")


def test_edge_cli_help_exits_0():
  r = run_edge("--help")       # absl exits 1 after printing the usage
  assert (r.returncode, r.stderr) == (0, ""), r.stderr[-2000:]
  assert "USAGE: vitprune.edge" in r.stdout and "--artifact" in r.stdout


def test_targets_mismatch_by_hand():
  assert targets_lib.targets_mismatch(["jax", "iree:host"], ["iree:host"]) is None
  assert targets_lib.targets_mismatch(["jax"], []) is None
  assert targets_lib.targets_mismatch(["jax"], ["iree:host"]) == (
      "the manifest (targets ['jax']) does not list iree:host, for which iree/ holds a module "
      "record: an edited manifest or a partial copy? rebuild it with experiments.deploy")
  assert targets_lib.targets_mismatch(["jax", "iree:host", "iree:vulkan"], ["iree:host"]) == (
      "the manifest (targets ['jax', 'iree:host', 'iree:vulkan']) lists iree:vulkan, for which "
      "iree/ holds no module record: an edited manifest or a partial copy? rebuild it with "
      "experiments.deploy")
  assert targets_lib.targets_mismatch(["jax", "iree:host"], ["iree:host", "iree:host"]) == (
      "iree/ holds more than one module record for iree:host: a copied record? rebuild it "
      "with experiments.deploy")
  assert targets_lib.targets_mismatch(["jax", "iree:host", "iree:host"], ["iree:host"]) == (
      "the manifest lists iree:host more than once (targets ['jax', 'iree:host', 'iree:host']): "
      "an edited manifest? rebuild it with experiments.deploy")       # (was accepted)


def test_the_manifests_targets_must_be_what_iree_holds(artifact, tmp_path, params):
  """An artifact whose manifest was edited to list no IREE target (or to lose its targets)
  still ran its iree:host module on a board, and a jax artifact edited to list iree:host loaded
  in run_deployed: both sides compare the manifest's targets with the module records in iree/,
  found and read as the board reads them."""
  from vitprune.records.manifest import ArtifactError  # pylint: disable=g-import-not-at-top
  for name, edit in (("listed", lambda m: m.update(targets=["jax"])),
                     ("deleted", lambda m: m.pop("targets"))):
    bad = tmp_path / name
    shutil.copytree(artifact, bad)
    man = json.loads((bad / "manifest.json").read_text())
    edit(man)
    (bad / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(EdgeError, match=r"manifest.json: the manifest \(targets \['jax'\]\) "
                       r"does not list iree:cuda:sm_87, .*iree:host.*, for which iree/ holds"):
      edge_rt.load(str(bad), "iree:host")
    with pytest.raises(ArtifactError, match=r"does not list iree:cuda:sm_87"):
      deploy.load(str(bad))
  copied = tmp_path / "copied"                       # a second record of one target
  shutil.copytree(artifact, copied)
  shutil.copy(copied / "iree" / "iree_host.json", copied / "iree" / "zz_host.json")
  with pytest.raises(EdgeError, match="more than one module record for iree:host"):
    edge_rt.load(str(copied), "iree:host")
  with pytest.raises(ArtifactError, match="more than one module record for iree:host"):
    deploy.load(str(copied))
  junk = tmp_path / "junk"                           # what a Mac leaves on a FAT card: skipped
  shutil.copytree(artifact, junk)
  (junk / "iree" / "._iree_host.json").write_bytes(b"\x00\x05\x16\x07 binary")
  assert list(deploy.load(str(junk)).manifest.targets) == json.loads(
      (junk / "manifest.json").read_text())["targets"]
  (junk / "iree" / "notes.json").write_text('{"target": "iree:host"}')   # not a record
  with pytest.raises(ArtifactError, match=r"notes.json: not a vitprune-edge-target record"):
    deploy.load(str(junk))
  jax_only = str(tmp_path / "jax_only")
  deploy.export_artifact(jax_only, CFG, params, verify=False)
  man = json.loads(open(os.path.join(jax_only, "manifest.json")).read())
  man["targets"] = ["jax", "iree:host"]
  with open(os.path.join(jax_only, "manifest.json"), "w") as f:
    json.dump(man, f)
  with pytest.raises(ArtifactError, match=r"lists iree:host, for which iree/ holds no module "
                     r"record"):
    deploy.load(jax_only)


def test_a_copy_without_its_module_records_is_named_a_partial_copy(artifact, tmp_path, params):
  """An artifact copied without its iree/*.json records (the manifest listing its IREE targets)
  was told on the board that it 'holds no IREE target' and to export one, where vitprune.load
  names the partial copy; a jax-only artifact still gets the export hint."""
  partial = tmp_path / "partial"
  shutil.copytree(artifact, partial)
  for f in (partial / edge_rt.EDGE_DIR).glob("*.json"):
    f.unlink()
  with pytest.raises(EdgeError, match=r"manifest.json: the manifest \(targets \['jax', .*\) "
                     r"lists .*iree:host.*, for which iree/ holds no module record: an edited "
                     r"manifest or a partial copy\?"):
    edge_rt.load(str(partial))
  r = run_edge("run", f"--artifact={partial}", f"--images={partial}")
  assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr[-2000:]
  assert "for which iree/ holds no module record" in r.stderr
  jax_only = str(tmp_path / "jax_only")
  deploy.export_artifact(jax_only, CFG, params, verify=False)
  with pytest.raises(EdgeError, match=r"holds no IREE target \(no iree/\*.json\); export it"):
    edge_rt.load(jax_only)


def test_a_board_without_the_iree_runtime_says_what_to_install(artifact, tmp_path):
  """`vitprune.edge` on a board where iree-base-runtime is not installed (requirements-edge.txt
  skipped, another venv) ended in a traceback and ImportError: one error line names it."""
  no_iree = NO_JAX.replace("'orbax.checkpoint')", "'orbax.checkpoint', 'iree', 'iree.runtime')")
  for args in (("run", f"--artifact={artifact}", f"--images={artifact}"),
               ("bench", f"--artifact={artifact}")):
    r = subprocess.run([sys.executable, "-c", no_iree, "vitprune.edge", *args], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr[-2000:]
    assert r.stderr.startswith("error: the IREE runtime cannot be imported (") and (
        "pip install -r requirements-edge.txt" in r.stderr), r.stderr


def test_a_board_without_pillow_or_absl_says_what_to_install(artifact):
  """`python -m vitprune.edge` on a board lacking pillow or absl-py (both in
  requirements-edge.txt) ended in a traceback and ImportError, even for bench: one line."""
  for missing in ("'PIL'", "'absl'"):
    code = NO_JAX.replace("'orbax.checkpoint')", f"'orbax.checkpoint', {missing})")
    r = subprocess.run([sys.executable, "-c", code, "vitprune.edge", "bench",
                        f"--artifact={artifact}"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr[-2000:]
    assert r.stderr.startswith("error: a package vitprune.edge needs cannot be imported (") and (
        "pip install -r requirements-edge.txt" in r.stderr), r.stderr
  # One of vitprune's own modules failing to import is not a missing package: its traceback
  # stays (the guard named requirements-edge.txt for any ImportError; a review).
  code = NO_JAX.replace("'orbax.checkpoint')", "'orbax.checkpoint', 'vitprune.digits')")
  r = subprocess.run([sys.executable, "-c", code, "vitprune.edge", "bench",
                      f"--artifact={artifact}"], cwd=ROOT, capture_output=True, text=True,
                     timeout=120)
  assert r.returncode == 1 and "Traceback" in r.stderr and "requirements-edge" not in r.stderr
  assert "vitprune.digits" in r.stderr.splitlines()[-1], r.stderr[-2000:]


def test_the_board_cli_exits_as_interrupted_when_it_fails_with_a_signal_held():
  """A signal held while `--output` was published, then the publish failed: `vitprune.edge`
  exited 1 with the failure alone (the experiments CLIs say both and exit 143)."""
  code = (
      "import signal, sys\n"
      f"sys.path.insert(0, {ROOT!r})\n"
      "from vitprune import console\n"
      "import vitprune.edge.__main__ as m\n"
      "console.setup_process()\n"
      "m.FLAGS(['prog'])\n"
      "def fake():\n"
      "  with console.interrupts_held():\n"
      "    console._record_interrupt(signal.SIGTERM, None)\n"
      "    raise OSError(28, 'No space left on device while writing /out')\n"
      "m.cmd_bench = fake\n"
      "m.main(['prog', 'bench'])\n")
  r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
  assert (r.returncode, r.stderr) == (
      143, "error: [Errno 28] No space left on device while writing /out (terminated)\n")


def test_a_module_for_a_named_cpu_this_one_lacks_is_an_error_not_a_crash(tmp_path, params,
                                                                        images, monkeypatch):
  """`--target=iree:llvm-cpu:x86_64-linux-gnu:diamondrapids` run on an x86-64 CPU without its
  instructions: exit 132 and a native stack dump (the architecture check passed). A trial run
  in a child process now turns the SIGILL into an error line, and `load` takes the next target
  this CPU runs."""
  import platform  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  from vitprune.edge.targets import EdgeError  # pylint: disable=g-import-not-at-top
  record = {"target": "iree:llvm-cpu:x86_64-linux-gnu:x86-64"}
  calls = []
  run, code = subprocess.run, [-4]
  monkeypatch.setattr(subprocess, "run", lambda argv, **kw: run(argv, **kw) if argv[1] != "-c"
                      else calls.append(argv) or subprocess.CompletedProcess(argv, code[0]))
  with pytest.raises(EdgeError, match=r"^m \(x\) was compiled for the CPU 'x86-64', and a trial "
                     r"run on this CPU \(.*\) died of SIGILL: this CPU lacks instructions"):
    edge_rt.check_runs_here("/a", record, "m (x)")
  assert calls[0][-3:] == ["/a", record["target"], "local-task"]
  for code[0] in (-11, -9, 1):           # not a missing instruction: this process finds out
    edge_rt.check_runs_here("/a", record, "m (x)")
  code[0] = -2                           # the terminal's Ctrl-C reached the child
  with pytest.raises(KeyboardInterrupt):
    edge_rt.check_runs_here("/a", record, "m (x)")
  del calls[1:]
  for target in ("iree:host", "iree:llvm-cpu:x86_64-linux-gnu", "iree:cuda:sm_87"):
    edge_rt.check_runs_here("/a", {"target": target}, "m")          # no trial run for these
  # Nor inside the trial: its code says so first (fault probe: an environment variable did,
  # and exported by hand it skipped the trial and the artifact's file checks everywhere)
  assert "\n_runtime._IN_TRIAL_CHILD = True\n" in calls[0][2]
  monkeypatch.setattr(edge_rt, "_IN_TRIAL_CHILD", True)
  edge_rt.check_runs_here("/a", record, "m")
  assert len(calls) == 1
  monkeypatch.undo()
  flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
  if platform.machine() != "x86_64" or "amx_tile" in flags:
    pytest.skip("needs an x86-64 CPU without Diamond Rapids' AMX instructions")
  out = str(tmp_path / "art")
  named = ["iree:llvm-cpu:x86_64-linux-gnu:diamondrapids", "iree:llvm-cpu:x86_64-linux-gnu:x86-64"]
  deploy.export_artifact(out, CFG, params, schedule=parse_schedule(CFG, "keep@1:9"),
                         reducer=make_reducer("pomt"), reducer_name="pomt", batch_size=2,
                         targets=named)
  with pytest.raises(EdgeError, match="died of SIGILL"):
    edge_rt.load(out, named[0])
  m = edge_rt.load(out)
  assert m.target == named[1]
  np.testing.assert_allclose(m(images), np.asarray(deploy.load(out)(images)), atol=1e-4)
  for target in named:                    # a kit's first point is tried the same way
    kit_dir = str(tmp_path / target.rsplit(":", 1)[1])
    iree_build.build_kit(kit_dir, CFG, params, target=target, grid=(17, 9),
                         reducer=make_reducer("random"))
    if target == named[0]:
      with pytest.raises(EdgeError, match=f"^kit {kit_dir} was compiled for the CPU "
                         "'diamondrapids', and a trial run .* died of SIGILL"):
        kit_lib.profile_kit(kit_dir, protocol.TimingConfig(min_run_time=0.01))
    else:
      prof, _ = kit_lib.profile_kit(kit_dir, protocol.TimingConfig(min_run_time=0.01))
      assert len(prof.points) == 2


def test_the_trial_child_runs_a_module_and_a_kit_and_does_not_probe_again(tmp_path, params,
                                                                           monkeypatch):
  """The trial of a named-CPU module runs in one real child that exits 0 (a review: the test
  above runs a real child only where the SIGILL case applies, and any other failure of the
  child is ignored by design, so a broken trial prelude would have passed unseen)."""
  import platform  # pylint: disable=g-import-not-at-top
  if platform.machine() != "x86_64":
    pytest.skip("needs an x86-64 CPU (the baseline x86-64 target runs on every one)")
  target = "iree:llvm-cpu:x86_64-linux-gnu:x86-64"
  out = str(tmp_path / "art")
  deploy.export_artifact(out, CFG, params, schedule=parse_schedule(CFG, "keep@1:9"),
                         reducer=make_reducer("pomt"), reducer_name="pomt", batch_size=2,
                         targets=[target])
  kit_dir = str(tmp_path / "kit")
  iree_build.build_kit(kit_dir, CFG, params, target=target, grid=(17, 9),
                       reducer=make_reducer("random"))
  children, run = [], subprocess.run

  def recorded(argv, **kw):
    got = run(argv, **kw)
    if argv[1] == "-c":
      children.append(got.returncode)
    return got

  monkeypatch.setattr(subprocess, "run", recorded)
  assert edge_rt.load(out).target == target
  assert children == [0]                     # one child, no trial inside the trial
  kit_lib.profile_kit(kit_dir, protocol.TimingConfig(min_run_time=0.01))
  assert children == [0, 0]


@pytest.mark.parametrize("args, want", [
    (["--iree-llvmcpu-target-triple=x86_64-linux-gnu", "--iree-llvmcpu-target-cpu=notacpu"],
     "'notacpu' is not a recognized processor for this target (ignoring processor)"),
    (["--iree-llvmcpu-target-triple=foo-bar"], "createTargetMachine(foo-unknown-unknown-eabi-elf) "
     "failed; machine may not be enabled in LLVM"),
])
def test_a_failed_compile_names_its_reason(args, want):
  """`--target=iree:llvm-cpu:x86_64-linux-gnu:notacpu` was 'IREE could not compile ...: Error
  invoking IREE compiler tool iree-compile': the one line that said why was dropped."""
  import iree.compiler as ic  # pylint: disable=g-import-not-at-top
  with pytest.raises(Exception) as e:
    ic.compile_str("module {}", target_backends=["llvm-cpu"], extra_args=args)
  assert iree_build._first_error(e.value) == want
  assert iree_build._first_error(ValueError("x\nDiagnostics:\na.mlir:3:1: error: bad op\nLLVM "
                                            "ERROR: later")) == "a.mlir:3:1: error: bad op"


def test_the_weights_source_the_training_data_guard_reads_is_checked_on_the_board():
  """An edited `weights.source` in manifest.json (the split emptied or changed) lifted the
  guard that refuses to score the weights' training digits: `vitprune.edge run` then reported
  accuracy 1.0000 on them."""
  source = {"path": "weights/vit_digits", "meta": {"split": {"seed": 0}}}
  doc = {"weights": {"source": source, "source_sha256": jsonio.canonical_sha256(source)}}
  assert edge_rt.weights_meta(doc) == {"split": {"seed": 0}}
  assert edge_rt.weights_meta({"version": 1, "weights": {"source": source}}) == source["meta"]
  with pytest.raises(EdgeError, match=r"^manifest.json lacks weights.source_sha256"):
    edge_rt.weights_meta({"version": 2, "weights": {"source": source}})
  doc["weights"]["source"] = {"path": "weights/vit_digits"}
  with pytest.raises(EdgeError, match=r"^manifest.json: weights.source no longer hashes to "
                     r"weights.source_sha256 \(edited\?"):
    edge_rt.weights_meta(doc)


@pytest.mark.parametrize("edit, message", [
    (lambda leaves: leaves[1].update(shape="ab"),
     r"weights.leaves\[1\] shape must be a list of non-negative integers, got 'ab'"),
    (lambda leaves: leaves[0].update(offset=-64), r"weights.leaves\[0\] offset must be a "
                                                  r"non-negative integer, got -64"),
    (lambda leaves: leaves.__setitem__(0, 7), r"weights.leaves\[0\] is not an object"),
])
def test_a_malformed_weight_leaf_entry_is_named(tmp_path, edit, message):
  """A kit's weights.leaves[i].shape edited to "ab" ended `vitprune.edge profile` with
  'error: invalid literal for int() with base 10', naming neither the file nor the field."""
  from vitprune.digest import file_sha256  # pylint: disable=g-import-not-at-top
  blob, leaves = edge_rt.pack_weights([np.ones((2, 3), np.float32), np.zeros(5, np.float32)],
                                      ["a", "b"])
  (tmp_path / "w.bin").write_bytes(blob)
  entry = {"mode": "args", "file": "w.bin", "sha256": file_sha256(str(tmp_path / "w.bin")),
           "leaves": leaves}
  assert [a.shape for a in edge_rt.read_weights(str(tmp_path), entry, "kit k")] == [(2, 3), (5,)]
  edit(entry["leaves"])
  with pytest.raises(EdgeError, match=rf"^kit k: {message} \(an edited record\?\)$"):
    edge_rt.read_weights(str(tmp_path), entry, "kit k")


def test_a_manifest_set_back_to_version_1_is_refused_on_the_board(artifact, tmp_path):
  """A version-2 manifest set back to version 1, its source digest deleted and its split edited,
  lifted the training-data guard on the board. Its identity no longer matches (the board reads
  the manifest whole), and with the identity recomputed the module records, which carry the
  digest too, refuse it."""
  board = tmp_path / "board"
  shutil.copytree(artifact, board)
  rec = json.loads((board / edge_rt.EDGE_DIR / "iree_host.json").read_text())
  doc = json.loads((board / "manifest.json").read_text())
  assert rec["weights"]["source_sha256"] == doc["weights"]["source_sha256"]
  doc.update(version=1)
  doc["weights"].pop("source_sha256")
  doc["weights"]["source"] = {"meta": {"split": {"seed": 7}}}
  (board / "manifest.json").write_text(json.dumps(doc))
  with pytest.raises(EdgeError, match=r"identity does not match the manifest's fields \(the "
                                      r"manifest was edited\)"):   # (read whole, as jax reads it)
    edge_rt.check_against_manifest(str(board), edge_rt.read_records(str(board)))
  _consistent_manifest(doc)                      # ... and with its identity recomputed too
  (board / "manifest.json").write_text(json.dumps(doc))
  with pytest.raises(EdgeError, match=r"manifest.json: states no weights source \(the iree:"):
    edge_rt.check_against_manifest(str(board), edge_rt.read_records(str(board)))


def test_artifact_records_are_listed_not_globbed(artifact, tmp_path, monkeypatch):
  """Fault probe: the iree/ records were found with a glob of the artifact's own path, so an
  artifact at 'art[1]' held 'no IREE target', one at 'd*' read its sibling's records (refused as
  'files mixed from two artifacts' or 'corrupted'), and an unreadable iree/ folder was reported
  as holding no record instead of its error."""
  odd = tmp_path / "art[1]"
  shutil.copytree(artifact, odd)
  shutil.copytree(artifact, tmp_path / "art1")             # what '[1]' matched
  star = tmp_path / "d*"
  shutil.copytree(artifact, star)
  shutil.copytree(artifact, tmp_path / "dX")
  for p in (odd, star):
    assert [r["target"] for r in edge_rt.read_records(str(p))] == [
        r["target"] for r in edge_rt.read_records(artifact)]
    deploy.load(str(p))                                   # the manifest's checks pass
  assert edge_rt.record_files(str(tmp_path / "none")) == []
  real = os.listdir

  def listdir(path):
    if str(path).endswith(os.path.join("art[1]", "iree")):
      raise PermissionError(13, "Permission denied", path)
    return real(path)

  monkeypatch.setattr(edge_rt.os, "listdir", listdir)
  with pytest.raises(EdgeError, match=r"cannot list .*art\[1\]/iree: Permission denied$"):
    edge_rt.read_records(str(odd))
  with pytest.raises(deploy.ArtifactError, match=r"cannot list .*art\[1\]/iree: Permission"):
    deploy.load(str(odd))


def test_the_jax_path_refuses_a_record_the_board_refuses(artifact, tmp_path):
  """Fault probe: vitprune.load accepted an artifact whose iree:host record named a driver that
  cannot run it, or a function its module lacks, which the board then refused."""
  for name, change, message in (
      ("driver", lambda r: r.update(driver="bogus"),
       r"iree_host.json: IREE driver 'bogus' cannot run target iree:host"),
      ("cuda", lambda r: r.update(driver="cuda"),
       r"iree_host.json: IREE driver 'cuda' cannot run target iree:host"),
      ("function", lambda r: r.update(function="main_0123456789abcdef"),
       r"iree_host.json: the record does not match its module \(function "
       r"'main_0123456789abcdef'")):
    dst = tmp_path / name
    shutil.copytree(artifact, dst)
    rec_path = dst / "iree" / "iree_host.json"
    rec = json.loads(rec_path.read_text())
    change(rec)
    rec_path.write_text(json.dumps(rec))
    with pytest.raises(deploy.ArtifactError, match=message):
      deploy.load(str(dst))
    if name == "driver":    # the wrong folder given: named as what it is (a probe)
      with pytest.raises(EdgeError, match=re.escape(
          f"{dst} is an artifact (iree/*.json), not a profiling kit: run it with python -m "
          f"vitprune.edge run|bench --artifact={dst}")):        # (said "kit.json is missing")
        kit_lib.read_kit(str(dst))
      with pytest.raises(EdgeError, match=re.escape(      # (said "holds no IREE target")
          f"{dst}/iree is the iree/ folder of an artifact: give the artifact, --artifact={dst}")):
        edge_rt.read_records(str(dst / "iree"))
    if name == "cuda":      # the board names the record too (it read as a bad --driver flag)
      with pytest.raises(EdgeError, match=r"iree_host.json: IREE driver 'cuda' cannot run "
                         r"target iree:host; .* \(an edited record\?\)$"):
        edge_rt.load(str(dst))


def test_the_board_refuses_an_incomplete_artifact_the_jax_path_refuses(artifact, tmp_path):
  """A copy without one target's module ran on the board (which checked only the module it
  picked) and was refused by vitprune.load / run_deployed as incomplete (a probe)."""
  dst = tmp_path / "incomplete"
  shutil.copytree(artifact, dst)
  cuda = next(p for p in (dst / "iree").iterdir() if p.suffix == ".vmfb" and "cuda" in p.name)
  cuda.unlink()
  for load in (lambda: edge_rt.load(str(dst)), lambda: edge_rt.load(str(dst), "iree:host")):
    with pytest.raises(EdgeError, match=rf"iree_cuda_sm_87.json: iree/{cuda.name} is missing"):
      load()
  # ... nor one whose other record was edited (a driver its target cannot run; a module that
  # is no object): the jax path refused them (a review).
  for change, message in ((lambda r: r.update(driver="local-task"), "IREE driver 'local-task' "
                           "cannot run target iree:cuda:sm_87"),
                          (lambda r: r.update(module="x.vmfb"), "module must be an object")):
    shutil.rmtree(dst)
    shutil.copytree(artifact, dst)
    rec_path = dst / "iree" / "iree_cuda_sm_87.json"
    rec = json.loads(rec_path.read_text())
    change(rec)
    rec_path.write_text(json.dumps(rec))
    with pytest.raises(EdgeError, match=f"iree_cuda_sm_87.json: {message}"):
      edge_rt.load(str(dst), "iree:host")


def test_the_board_refuses_a_manifest_the_jax_path_refuses(artifact, tmp_path):
  """Fault probe: vitprune.edge ran an artifact whose manifest.json had been edited (format,
  version, identity, targets) where vitprune.load / run_deployed refused it: the board reads the
  manifest with the same reader (jax-free)."""
  for name, change, message in (
      ("format", lambda m: m.update(format="x"), r"format 'x' is not 'vitprune-deploy'"),
      ("version", lambda m: m.update(version=99), "unsupported format version 99"),
      ("identity", lambda m: m.update(identity="0" * 64),
       r"identity does not match the manifest's fields \(the manifest was edited\)"),
      ("targets", lambda m: m.update(targets=["iree:host"]), "targets must be a list of target "
       "names starting with 'jax'")):
    dst = tmp_path / name
    shutil.copytree(artifact, dst)
    path = dst / "manifest.json"
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(EdgeError, match=message):
      edge_rt.load(str(dst))
    with pytest.raises(deploy.ArtifactError, match=message):
      deploy.load(str(dst))


@pytest.mark.parametrize("edit, message", [
    (lambda r: r.update(runtime="x"), r"runtime must be an object, got str"),
    (lambda r: r.update(module="x"), r"module must be an object, got str"),
    (lambda r: r.update(module=7), r"module must be an object, got int"),
    (lambda r: r["module"].update(file=["a"]), r"module.file must be a string, got \['a'\]"),
    (lambda r: r["module"].update(sha256={}), r"module.sha256 must be a string, got \{\}"),
    (lambda r: r["weights"].update(file={"a": 1}), r"weights.file must be a string, got "),
])
def test_a_record_field_of_another_type_is_one_error_on_the_jax_path(artifact, tmp_path, edit,
                                                                       message):
  """run_deployed / vitprune.load read an artifact's IREE records too: a string as module or
  runtime was AttributeError and a list as file name TypeError, tracebacks (a probe); the
  board CLI said one line."""
  bad = tmp_path / "t"
  shutil.copytree(artifact, bad)
  rec = bad / edge_rt.EDGE_DIR / "iree_host.json"
  doc = json.loads(rec.read_text())
  edit(doc)
  rec.write_text(json.dumps(doc))
  with pytest.raises(deploy.ArtifactError, match=message):
    deploy.load(str(bad))


def test_a_weight_shape_beyond_int64_is_one_error(tmp_path):
  """A kit leaf shape of 10**30 overflowed numpy's int64 (OverflowError traceback); a merely
  large one was already 'does not fit'."""
  (tmp_path / "w.bin").write_bytes(b"\0" * 16)
  entry = {"mode": "args", "file": "w.bin",
           "sha256": deploy.file_sha256(str(tmp_path / "w.bin")),
           "leaves": [{"name": "a", "shape": [10 ** 30, 2], "dtype": "float32", "offset": 0,
                       "nbytes": 16}]}
  with pytest.raises(EdgeError, match=r"^kit: weight leaf a does not fit .*w.bin$"):
    edge_rt.read_weights(str(tmp_path), entry, "kit")


def test_the_runtime_failing_a_call_is_one_error():
  """IREE raises RuntimeError when an invoke fails (a board out of memory for the batch:
  RESOURCE_EXHAUSTED), which the board CLI let through as a 37-line traceback."""
  class Failing:
    def __call__(self, *args):
      raise RuntimeError("Error invoking function: c/runtime/src/iree/hal/allocator_libc.c:57: "
                         "RESOURCE_EXHAUSTED; libc allocator failed the request\n"
                         "; while invoking native function hal.device.queue.alloca")

  runner = edge_rt.Runner("local-sync")
  with pytest.raises(EdgeError, match=r"^the module failed on the local-sync device: not enough "
                     r"memory on this device for the batch \(try a smaller batch size\): Error "
                     r"invoking function: .*RESOURCE_EXHAUSTED"):
    runner.bind([Failing()], [], [None])()
  runner = edge_rt.Runner("local-sync", shards=2)     # a failing shard, raised once all ended
  with pytest.raises(EdgeError, match=r"^the module failed on the local-sync device: boom$"):
    runner.bind([lambda *a: (_ for _ in ()).throw(RuntimeError("boom")), Failing()], [],
                [None, None])()


def test_a_stopped_build_stops_its_running_compiler_processes(tmp_path, monkeypatch):
  """SIGTERM during edge_kit: the CLI exited (143) but both running iree-compile processes ran
  on for minutes (each DeiT-S compile). A failed or interrupted compile_many stops them, and a
  compile killed so is not retried with fewer flags (a CPU target's fallback started a new one
  after the stop: a review). The real compile_module runs; only the compiler is faked."""
  import threading  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  import iree.compiler as ireec  # pylint: disable=g-import-not-at-top
  fake = tmp_path / "iree-compile"
  fake.symlink_to(shutil.which("sleep"))
  started, children = threading.Event(), []

  def compile_str(mlir, **kw):
    if mlir == "slow":
      children.append(subprocess.Popen([str(fake), "60"]))
      started.set()
      children[-1].wait()
      raise ireec.CompilerToolError(subprocess.CompletedProcess(
          [str(fake)], children[-1].returncode, b"", b""))
    started.wait(10)
    raise KeyboardInterrupt      # what SIGTERM / Ctrl-C becomes in a CLI

  monkeypatch.setattr(ireec, "compile_str", compile_str)
  host = parse_target("iree:host")
  with pytest.raises(KeyboardInterrupt):
    iree_build.compile_many({"a": ("slow", host), "b": ("stop", host)}, threads=2)
  assert children[0].wait(timeout=10) == -signal.SIGTERM
  time.sleep(1.0)                        # (a retry would have started by now)
  assert len(children) == 1


def test_arch_aliases_of_a_triple_and_of_this_host_name_one_architecture(monkeypatch):
  """A module for 'amd64-...' runs on an x86_64 board and one for 'aarch64-...' on a host that
  calls itself 'arm64' (macOS): the spellings were compared as they stand, refusing both."""
  monkeypatch.setattr(targets_lib.platform, "machine", lambda: "x86_64")
  assert parse_target("iree:llvm-cpu:arm64-apple-darwin").arch == "aarch64"
  targets_lib.check_runnable({"target": "iree:llvm-cpu:amd64-pc-linux-gnu"}, "m")
  targets_lib.check_runnable({"target": "iree:llvm-cpu:x64-pc-linux-gnu"}, "m")
  with pytest.raises(EdgeError, match=r"^m was compiled for target "
                     r"iree:llvm-cpu:arm64-apple-darwin \(aarch64\); this host is x86_64$"):
    targets_lib.check_runnable({"target": "iree:llvm-cpu:arm64-apple-darwin"}, "m")
  monkeypatch.setattr(targets_lib.platform, "machine", lambda: "arm64")
  assert targets_lib.host_cpu()["arch"] == "aarch64"
  targets_lib.check_runnable({"target": "iree:llvm-cpu:aarch64-linux-gnu"}, "m")
  targets_lib.check_runnable({"target": "iree:host", "host_cpu": {"arch": "aarch64"}}, "m")


def test_cuda_targets_of_three_digit_compute_capabilities_parse():
  """sm_100 / sm_120 (and arch-specific sm_90a) are CUDA targets; four digits are not."""
  for text, sm in (("iree:cuda:sm_100", "sm_100"), ("iree:cuda:SM_120", "sm_120"),
                   ("iree:cuda:sm_90a", "sm_90a")):
    target = parse_target(text)
    assert (target.text, target.sm, target.compile_flags()) == (
        f"iree:cuda:{sm}", sm, [f"--iree-cuda-target={sm}"])
  for bad in ("iree:cuda:sm_1000", "iree:cuda:sm_8"):
    with pytest.raises(EdgeError, match="is not a CUDA architecture such as sm_87"):
      parse_target(bad)


def test_a_cross_target_without_a_cpu_compiles_for_the_generic_cpu_of_its_triple():
  """'iree:llvm-cpu:<triple>' names no CPU: the module must not use this host's instructions
  (target-cpu=host would put x86 features into an aarch64 module) but the triple's baseline."""
  target = parse_target("iree:llvm-cpu:aarch64-linux-gnu")
  assert (target.triple, target.cpu, target.arch) == ("aarch64-linux-gnu", None, "aarch64")
  assert target.compile_flags() == (["--iree-llvmcpu-target-triple=aarch64-linux-gnu",
                                     "--iree-llvmcpu-target-cpu=generic"]
                                    + list(targets_lib.CPU_TUNING))
  with pytest.raises(EdgeError, match="unknown target"):     # an empty CPU name
    parse_target("iree:llvm-cpu:aarch64-linux-gnu:")


def test_a_second_stack_overflow_within_the_raised_limit_drops_the_fusion_not_loops():
  """After the stack limit was raised, another dispatch over IREE's default but within
  STACK_LIMIT must drop the matmul fusion: adding the raised limit again retried the same
  compile (the same failure) until the retries ran out."""
  latency = parse_target("iree:host").compile_flags("latency")
  raised = latency + [targets_lib.CPU_STACK]
  error = ("error: 'func.func' op exceeded stack allocation limit of 65536 bytes for function. "
           "Got 50368 bytes")
  flags, why = targets_lib.next_attempt(raised, error)
  assert flags == [f for f in raised if f not in targets_lib.CPU_FUSION]
  assert flags.count(targets_lib.CPU_STACK) == 1
  assert why == f"dropped {' '.join(targets_lib.CPU_FUSION)}"


def test_a_bfloat16_graph_is_refused_for_iree_targets_only():
  """bfloat16 is refused where an IREE target is asked for (naming the first), and allowed for
  a jax-only export."""
  targets_lib.check_compute_dtype(parse_targets(["jax"]), "bfloat16", "hint")
  targets_lib.check_compute_dtype(parse_targets(["jax", "iree:host"]), "float32", "hint")
  with pytest.raises(ValueError, match=r"^IREE targets compile float32 graphs only \(a bfloat16 "
                     r"dot_general does not legalize for iree:vulkan\); use jax$"):
    targets_lib.check_compute_dtype(parse_targets(["jax", "iree:vulkan", "iree:host"]),
                                    "bfloat16", "use jax")


def test_a_runtime_without_the_targets_driver_is_named_as_such(monkeypatch):
  """An IREE runtime built without the cuda driver is named as that, not as a missing device
  (which sends the user looking for a GPU rather than another iree-base-runtime)."""
  import iree.runtime as ireert  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(ireert, "query_available_drivers", lambda: ["local-sync", "local-task"])
  monkeypatch.setattr(ireert, "get_device", lambda driver: object())
  with pytest.raises(EdgeError, match=r"^m targets iree:cuda:sm_87, but this IREE runtime has "
                     r"no 'cuda' driver$"):
    targets_lib.check_runnable({"target": "iree:cuda:sm_87", "driver": "cuda"}, "m")


def _packed_weights_entry(tmp_path):
  """A weights entry (mode 'args') of two packed float32 leaves 'a' [2, 3] and 'b' [5]."""
  blob, leaves = edge_rt.pack_weights([np.ones((2, 3), np.float32), np.zeros(5, np.float32)],
                                      ["a", "b"])
  (tmp_path / "w.bin").write_bytes(blob)
  return {"mode": "args", "file": "w.bin", "sha256": deploy.file_sha256(str(tmp_path / "w.bin")),
          "leaves": leaves}


def test_a_weight_leaf_relabelled_to_another_dtype_of_the_same_size_is_refused(tmp_path):
  """float32 bytes read as int32 (same item size, same nbytes) are other numbers without a
  word: a leaf's dtype must be the float32 vitprune packs."""
  entry = _packed_weights_entry(tmp_path)
  entry["leaves"][0]["dtype"] = "int32"
  with pytest.raises(EdgeError, match=r"^kit k: weight leaf a is stored as 'int32'; vitprune "
                     r"packs float32 weights \(an edited record\?\)$"):
    edge_rt.read_weights(str(tmp_path), entry, "kit k")


def test_a_last_weight_leaf_grown_past_the_file_end_does_not_fit(tmp_path):
  """The last leaf's shape and nbytes edited to agree but reach past weights.bin: one error
  naming the leaf (numpy's reshape of the short slice was a traceback)."""
  entry = _packed_weights_entry(tmp_path)
  entry["leaves"][1].update(shape=[6], nbytes=24)
  with pytest.raises(EdgeError, match=r"^kit k: weight leaf b does not fit .*w\.bin$"):
    edge_rt.read_weights(str(tmp_path), entry, "kit k")


def test_a_runner_refuses_a_batch_that_does_not_split_into_its_shards():
  """Runner.put_batch names the batch and the shards (numpy's 'array split does not result in
  an equal division' named neither), and refuses more parts than the runner runs."""
  runner = edge_rt.Runner("local-sync", 2)
  assert [p.to_host().shape for p in runner.put_batch(np.zeros((4, 3), np.float32), 2)] == [
      (2, 3), (2, 3)]
  with pytest.raises(ValueError, match=r"^a batch of 3 does not split into 2 equal shards \(this "
                     r"runner runs at most 2\)$"):
    runner.put_batch(np.zeros((3, 3), np.float32), 2)
  with pytest.raises(ValueError, match=r"^a batch of 4 does not split into 4 equal shards"):
    runner.put_batch(np.zeros((4, 3), np.float32), 4)


def test_a_module_file_replaced_by_a_folder_is_named_not_hashed(tmp_path):
  """A record's file that is a folder (or a link to /dev/zero, which hashed forever) is one
  error naming what is there, before any hashing."""
  root = tmp_path / "art"
  (root / "iree" / "x.vmfb").mkdir(parents=True)
  with pytest.raises(EdgeError, match=r"^w: iree/x\.vmfb in .*art is a directory \(replaced\?\)$"):
    edge_rt.checked_file(str(root), {"file": "iree/x.vmfb", "sha256": "0" * 64}, "w")


def _board_copy(artifact, tmp_path):
  """`artifact` as copied to a board: no manifest.json, and of its records only iree:host's."""
  board = tmp_path / "board"
  shutil.copytree(artifact, board)
  os.unlink(board / "manifest.json")
  for f in (board / edge_rt.EDGE_DIR).glob("*.json"):
    if f.name != "iree_host.json":
      f.unlink()
  return board


def test_a_board_copy_of_a_record_without_an_output_kind_is_a_classifier(artifact, tmp_path,
                                                                         monkeypatch):
  """A record written before output kinds, copied to a board without its manifest (nothing
  states a kind), is read as the classifier every such artifact was (its logits), not as a
  features model."""
  name_of = edge_rt.function_name       # (the module's function, named with the kind)
  monkeypatch.setattr(edge_rt, "function_name", lambda identity: name_of(
      {**identity, "output": {"kind": "logits", **identity["output"]}}))
  board = _board_copy(artifact, tmp_path)
  path = board / edge_rt.EDGE_DIR / "iree_host.json"
  record = json.loads(path.read_text())
  assert record["output"].pop("kind") == "logits"      # as that version wrote it
  path.write_text(json.dumps(record))
  loaded = edge_rt.load(str(board), "iree:host")
  assert (loaded.output_kind, loaded.num_outputs) == ("logits", CFG.num_classes)


def _minimal_kit(tmp_path, **changes):
  """A kit folder whose kit.json `read_kit` accepts (one point; no module compiled), with
  `changes` made to its manifest."""
  point = {"component": "model", "batch_size": 1, "tokens": 17, "schedule": None,
           "input": {"shape": [1, 32, 32, 3], "dtype": "float32"}, "args": [0],
           "compile_s": 1.0, "module": {"file": "modules/m.vmfb", "sha256": "0" * 64}}
  doc = {"format": kit_lib.KIT_FORMAT, "version": kit_lib.KIT_VERSION, "target": "iree:host",
         "driver": "local-task", "model": "test_tiny_vit", "config": {}, "dtype": "float32",
         "mode": "model", "weights": {}, "points": [point], **changes}
  (tmp_path / "kit").mkdir()
  (tmp_path / "kit" / kit_lib.KIT_MANIFEST).write_text(json.dumps(doc))
  return str(tmp_path / "kit"), doc


def test_a_kit_of_another_version_or_no_points_or_a_point_of_no_tokens_is_refused(tmp_path):
  """read_kit refuses what a board profile could not hold: a kit of a version this vitprune
  does not read, one listing no points, and a point of 0 tokens."""
  path, doc = _minimal_kit(tmp_path)
  assert kit_lib.read_kit(path)["points"] == doc["points"]
  manifest = pathlib.Path(path) / kit_lib.KIT_MANIFEST
  for edit, message in (
      (lambda d: d.update(version=2), r"kit\.json: not a vitprune-edge-kit version 1 manifest$"),
      (lambda d: d.update(points=[]), r"kit\.json lists no points$"),
      (lambda d: d["points"][0].update(tokens=0), r"kit\.json: points\[0\]: tokens must be an "
                                                  r"int >= 1$")):
    bad = json.loads(json.dumps(doc))
    edit(bad)
    manifest.write_text(json.dumps(bad))
    with pytest.raises(EdgeError, match=message):
      kit_lib.read_kit(path)


def test_a_cpu_board_profile_names_the_cpu_in_its_device_kind(monkeypatch):
  """Profiles merge by device kind: a CPU kit's names the target and this CPU's model (two
  boards' timings of one target were one curve otherwise); a GPU kit's, the target."""
  monkeypatch.setattr(targets_lib, "host_cpu", lambda: {"arch": "aarch64", "features": [],
                                                        "model": "Cortex-A78AE"})
  monkeypatch.setattr(kit_lib, "host_cpu", targets_lib.host_cpu)
  kit = {"target": "iree:llvm-cpu:aarch64-linux-gnu:cortex-a78ae", "model": "m", "config": {},
         "driver": "local-task", "dtype": "float32", "mode": "model"}
  profile_of = kit_lib._kit_profile  # pylint: disable=protected-access
  profile = profile_of(kit, protocol.TimingConfig())
  assert (profile.device_kind, profile.platform) == (
      "iree:llvm-cpu:aarch64-linux-gnu:cortex-a78ae Cortex-A78AE", "iree-local-task")
  gpu = dict(kit, target="iree:cuda:sm_87", driver="cuda")
  assert profile_of(gpu, protocol.TimingConfig()).device_kind == "iree:cuda:sm_87"


def test_a_kit_for_another_architecture_is_refused_before_loading(tmp_path, monkeypatch):
  """A kit cross-compiled for aarch64 given to an x86_64 host is refused by its target in one
  line, before any module is read."""
  monkeypatch.setattr(targets_lib.platform, "machine", lambda: "x86_64")
  path, _ = _minimal_kit(tmp_path, target="iree:llvm-cpu:aarch64-linux-gnu:cortex-a78ae")
  with pytest.raises(EdgeError, match=r"^kit .*kit \(iree:llvm-cpu:aarch64-linux-gnu:"
                     r"cortex-a78ae\) was compiled for target .* \(aarch64\); this host is "
                     r"x86_64$"):
    kit_lib._kit_plans(path, None)  # pylint: disable=protected-access


def test_lower_refuses_a_batch_below_1_and_an_unknown_weights_mode(params):
  """Both are refused before anything is exported, naming the value given."""
  for bad in (0, -1, 1.5, True, None):
    with pytest.raises(iree_build.IreeBuildError,
                       match=re.escape(f"IREE targets need a fixed batch size >= 1, got {bad!r}")):
      iree_build.lower(CFG, params, batch_size=bad)
  with pytest.raises(iree_build.IreeBuildError,
                     match=r"^weights must be 'args' or 'baked', got 'const'$"):
    iree_build.lower(CFG, params, weights="const")


def test_rename_main_needs_exactly_one_public_main():
  head = "func.func public @main(%arg0: tensor<1xf32>) -> tensor<1xf32> {"
  one = f"module @m {{\n  {head}\n  }}\n  func.func private @helper() {{\n  }}\n}}"
  renamed = iree_build.rename_main(one, "vitprune_abc")
  assert renamed == one.replace("@main(", "@vitprune_abc(") and "@main(" not in renamed
  for text, found in ((one.replace(head, ""), 0), (one + "\n" + head, 2)):
    with pytest.raises(iree_build.IreeBuildError,
                       match=re.escape(f"expected one 'func.func public @main(' in the "
                                       f"exported module, found {found}")):
      iree_build.rename_main(text, "vitprune_abc")


def test_only_cpu_records_name_a_compile_profile(artifact):
  """A GPU module has no CPU compile profile: its record says None, a CPU module's record the
  profile its runtime plan chose (a board checks the flags against it)."""
  recs = {r["target"]: r for r in edge_rt.read_records(artifact)}
  for target in ("iree:cuda:sm_87", "iree:vulkan"):
    assert recs[target]["compiler"]["profile"] is None
    assert recs[target]["runtime"]["profile"] is None
  for target in ("iree:host", "iree:llvm-cpu:aarch64-linux-gnu:cortex-a78ae"):
    rec = recs[target]
    assert rec["compiler"]["profile"] == rec["runtime"]["profile"] in targets_lib.CPU_PROFILES


def test_compile_many_refuses_fewer_than_one_thread():
  host = parse_target("iree:host")
  for bad in (0, -1):
    with pytest.raises(iree_build.IreeBuildError, match=rf"^threads must be >= 1, got {bad}$"):
      iree_build.compile_many({"a": ("module {}", host)}, threads=bad)


def test_a_kit_for_a_target_that_is_not_iree_is_refused_before_any_work(tmp_path, params):
  with pytest.raises(iree_build.IreeBuildError, match=r"^a kit needs an IREE target, got 'jax'$"):
    iree_build.build_kit(str(tmp_path / "kit"), CFG, params, target="jax", grid=(9,))
  assert os.listdir(tmp_path) == []


def _fake_compile(fallback):
  """A `compile_module` that compiles nothing: its module is the function's name."""
  def compile_module(mlir, target, *, profile="throughput", cache_dir=None):
    (name,) = re.findall(r"func\.func public @(\w+)\(", mlir)
    return name.encode(), {"iree_version": "0", "input_type": "stablehlo",
                           "target_backends": [target.backend], "flags": ["--f"],
                           "profile": profile, "fallback": fallback, "cache_key": "k",
                           "compile_s": 0.5, "cached": True}
  return compile_module


def test_a_kit_point_records_its_modules_compile_fallback_and_digest(tmp_path, params,
                                                                    monkeypatch):
  """Each point records what its compile gave up (`fallback`), flags, cached and the sha256
  of the module file written for it."""
  monkeypatch.setattr(iree_build, "compile_module", _fake_compile("no data tiling after: x"))
  kit_dir = iree_build.build_kit(str(tmp_path / "kit"), CFG, params, target="iree:host",
                                 grid=(9,), reducer=make_reducer("random"), threads=1)
  with open(os.path.join(kit_dir, "kit.json")) as f:
    (point,) = json.load(f)["points"]
  assert (point["fallback"], point["flags"], point["cached"], point["compile_s"]) == (
      "no data tiling after: x", ["--f"], True, 0.5)
  with open(os.path.join(kit_dir, *point["module"]["file"].split("/")), "rb") as f:
    blob = f.read()
  assert blob == point["function"].encode()
  assert point["module"]["sha256"] == hashlib.sha256(blob).hexdigest()


def test_write_targets_records_what_the_module_was_built_from(tmp_path, params, monkeypatch):
  """The record keeps the compute precision, the reducer's entry, the weights' source digest
  and training data, and the class names it was given; a reducer without its entry is refused
  before any lowering."""
  monkeypatch.setattr(iree_build, "compile_module", _fake_compile(None))
  sched, red = parse_schedule(CFG, "keep@1:9"), make_reducer("pomt")
  with pytest.raises(ValueError, match=r"^write_targets needs reducer_entry"):
    iree_build.write_targets(str(tmp_path), CFG, params, ["iree:host"], schedule=sched,
                             reducer=red)
  assert os.listdir(tmp_path) == []
  entry, training = {"name": "pomt", "options": {}}, {"dataset": "digits", "split": "train"}
  names = [f"c{i}" for i in range(10)]
  assert iree_build.write_targets(
      str(tmp_path), CFG, params, ["iree:host"], schedule=sched, reducer=red,
      precision="default", reducer_entry=entry, source_sha256="ab" * 32, training=training,
      class_names=names, cores=1) == ["jax", "iree:host"]
  with open(tmp_path / "iree" / f"{parse_target('iree:host').slug}.json") as f:
    record = json.load(f)
  assert record["compute"] == {"dtype": "float32", "precision": "default"}
  assert record["reducer"] == entry and record["class_names"] == names
  assert record["weights"]["source_sha256"] == "ab" * 32
  assert record["weights"]["training"] == training
  assert record["weights"]["mode"] == "args"


def test_strip_locations_drops_location_lines_and_suffixes_only():
  """The compile cache keys a module by its text without source locations, which name the
  Python call site: the same graph exported from two call sites is one cache entry."""
  lines = ["module @jit_f {",
           "  func.func public @main(%arg0: tensor<2xf32>) -> tensor<2xf32> {",
           "    %0 = stablehlo.add %arg0, %arg0 : tensor<2xf32>",
           "    return %0 : tensor<2xf32>", "  }", "}"]
  for line in (3, 7):
    located = [lines[0], lines[1] + f" loc(#loc{line})", lines[2] + " loc(#loc2)", lines[3],
               lines[4] + " loc(#loc)", lines[5], "#loc = loc(unknown)",
               f'#loc2 = loc("a.py":{line}:1)', f'#loc{line} = loc("a.py":{line}:5)']
    assert iree_build.strip_locations("\n".join(located)) == "\n".join(lines)


def test_a_kit_points_args_index_the_kits_weight_leaves_the_module_takes(tmp_path, params,
                                                                        monkeypatch):
  """A module that takes fewer leaves than the kit holds names them by their index among the
  kit's leaves (a board passes those), not by its own argument positions."""
  lower = iree_build.lower

  def lower_without_first_leaf(*args, **kwargs):
    low = lower(*args, **kwargs)
    return dataclasses.replace(low, weight_index=low.weight_index[1:],
                               weight_names=low.weight_names[1:])
  monkeypatch.setattr(iree_build, "lower", lower_without_first_leaf)
  monkeypatch.setattr(iree_build, "compile_module", _fake_compile(None))
  kit_dir = iree_build.build_kit(str(tmp_path / "kit"), CFG, params, target="iree:host",
                                 grid=(9,), reducer=make_reducer("random"), threads=1)
  with open(os.path.join(kit_dir, "kit.json")) as f:
    kit = json.load(f)
  (point,) = kit["points"]
  names = [leaf["name"] for leaf in kit["weights"]["leaves"]]
  assert point["args"] == list(range(1, len(names)))
  assert [names[i] for i in point["args"]] == [
      jax.tree_util.keystr(k) for k, _ in jax.tree.flatten_with_path(params)[0]][1:]


def test_the_board_run_prints_each_images_softmax_probability_and_the_latency_per_image(
    artifact, tmp_path):
  """`vitprune.edge run` on ten labelled digits (one per class): each row's probability is the
  largest softmax probability of that image's logits (not 1.0 for every image), the rows and
  the accuracy are those of the labels, and the latency line prints the results' median, IQR
  and samples, and the median over the batch per image (a mutation audit: none was checked)."""
  from vitprune.digits import write_digits_imagefolder  # pylint: disable=g-import-not-at-top
  imgs = write_digits_imagefolder(tmp_path / "imgs", split="test", limit=10)
  out = tmp_path / "res.json"
  r = run_edge("run", f"--artifact={artifact}", f"--images={imgs}", "--min_run_time=0.01",
               f"--output={out}", "--num_workers=2")
  assert r.returncode == 0, r.stderr[-2000:]
  res = json.loads(out.read_text())
  edge = edge_rt.load(artifact)
  ds = data_lib.ImageFolder(imgs, num_classes=10)
  logits = np.concatenate([edge(x)[idx >= 0] for x, _, idx in data_lib.iterate_batches(
      ds, edge.preprocessing, edge.batch_size)]).astype(np.float64)
  z = np.exp(logits - logits.max(-1, keepdims=True))
  probs = (z / z.sum(-1, keepdims=True)).max(-1)
  rows = res["predictions"]
  assert [row["file"] for row in rows] == list(ds.files) and res["num_images"] == 10
  assert [row["pred"] for row in rows] == np.argmax(logits, -1).tolist()
  np.testing.assert_allclose([row["prob"] for row in rows], probs, rtol=1e-5)
  assert max(probs) < 0.99                            # (the untrained model: no 1.0 anywhere)
  assert [row["label"] for row in rows] == ds.labels.tolist()
  right = sum(row["pred"] == row["label"] for row in rows)
  assert res["accuracy"] == right / 10
  lines = r.stdout.splitlines()
  assert lines[:10] == [data_lib.prediction_line(row) for row in rows]
  assert f"accuracy {right / 10:.4f} ({right}/10; 95% interval " in r.stdout
  lat = res["latency"]
  assert lat["batch_size"] == 2 and lat["num_samples"] >= 5
  assert lat["iqr_s"] == pytest.approx(lat["q75_s"] - lat["q25_s"])
  ms = lat["median_s"] * 1e3
  assert (f"latency batch 2: median {ms:.3f} ms (IQR {lat['iqr_s'] * 1e3:.3f} ms, "
          f"{lat['num_samples']} samples), {ms / 2:.3f} ms/image") in lines


def test_each_board_command_names_the_flags_it_needs(artifact, tmp_path):
  """`run` without --images (or --artifact), `bench` without --artifact and `profile` without
  --out (or --kit) are one line naming the flags, not a traceback's type (a mutation audit)."""
  for args, want in (((f"--artifact={artifact}",), "run needs --artifact and --images"),
                     ((f"--images={tmp_path}",), "run needs --artifact and --images")):
    r = run_edge("run", *args)
    assert (r.returncode, r.stdout, r.stderr) == (1, "", f"error: {want}\n")
  r = run_edge("bench", "--min_run_time=0.01")
  assert (r.returncode, r.stderr) == (1, "error: bench needs --artifact\n")
  for args in ((f"--kit={tmp_path}",), (f"--out={tmp_path / 'p.json'}",)):
    r = run_edge("profile", *args)
    assert (r.returncode, r.stderr) == (1, "error: profile needs --kit and --out\n")


def test_edge_kit_counts_its_compiles_and_passes_its_flags_on(tmp_path):
  """Mutation audit of experiments/edge_kit.py: one progress line per module of every batch
  size, a rebuild served from --cache_dir, and --cpu_cores reaches the kit."""
  args = ["--model=test_tiny_vit", "--tokens=17", "--batch_sizes=1,2", "--cache_dir=cache",
          "--out=kit"]
  code, out, err = run_cli_in_process(tmp_path, "edge_kit", args + ["--cpu_cores=1"])
  assert code == 0 and out == f"wrote {tmp_path / 'kit'}\n", err
  # (each line names its graph: '[1/2] compiled (6.6 s)' named none; in the order they finish)
  lines = err.splitlines()
  assert [l[:6] for l in lines] == ["[1/2] ", "[2/2] "], err
  assert sorted(re.fullmatch(r"\[\d/2\] compiled (model b\d n17) \(\d+\.\d s\)", l)[1]
                for l in lines) == ["model b1 n17", "model b2 n17"], err
  kit = json.loads((tmp_path / "kit" / "kit.json").read_text())
  assert [(p["batch_size"], p["runtime"]["shards"]) for p in kit["points"]] == [(1, 1), (2, 1)]
  code, out, err = run_cli_in_process(tmp_path, "edge_kit",
                                      args + ["--cpu_cores=1", "--overwrite"])
  assert code == 0 and sorted(err.splitlines()) in (
      ["[1/2] compiled model b1 n17 (cached)", "[2/2] compiled model b2 n17 (cached)"],
      ["[1/2] compiled model b2 n17 (cached)", "[2/2] compiled model b1 n17 (cached)"]), err


def test_the_board_latency_line_says_a_padded_batch():
  """`run` on a folder smaller than the module's batch times a batch padded with zero images:
  the per-image time is over the images classified (as run_deployed says it); `bench` times a
  full batch."""
  code = (
      f"import sys\nsys.path.insert(0, {ROOT!r})\n"
      "import vitprune.edge.__main__ as m\n"
      "lat = {'batch_size': 4, 'median_s': 2e-3, 'iqr_s': 0.0, 'num_samples': 5}\n"
      "m.print_latency(lat, 1)\nm.print_latency(lat)\n")
  r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
  assert r.stdout.splitlines() == [
      "latency batch 4: median 2.000 ms (IQR 0.000 ms, 5 samples), 2.000 ms/image classified "
      "(the batch held 3 zero images of padding)",
      "latency batch 4: median 2.000 ms (IQR 0.000 ms, 5 samples), 0.500 ms/image"], r.stderr


def test_a_bad_artifact_or_kit_names_the_flag_it_came_through(tmp_path):
  """A missing, wrong-kind or incomplete --artifact / --kit was refused naming the path alone
  (`error: .../none is not an artifact directory`, `error: kit: .../kit.json is missing`), as
  the experiments CLIs no longer do (a probe); the flag is named at the read of the artifact or
  kit itself, so a host lacking the IREE runtime is not blamed on the flag (see
  test_a_board_without_the_iree_runtime_says_what_to_install)."""
  empty = tmp_path / "empty"
  empty.mkdir()
  (tmp_path / "art" / edge_rt.EDGE_DIR).mkdir(parents=True)
  (tmp_path / "art" / "manifest.json").write_text("{}")
  none = tmp_path / "none"
  for args, want in (
      (("bench", f"--artifact={none}"), f"--artifact={none} is not an artifact directory"),
      (("run", f"--artifact={empty}", f"--images={empty}"),
       f"--artifact={empty} holds no IREE target (no iree/*.json); export it with python -m "
       "experiments.deploy --target=iree:host"),
      (("bench", f"--artifact={tmp_path / 'art'}"),
       f"--artifact: {tmp_path}/art/manifest.json: format None is not 'vitprune-deploy'"),
      (("profile", f"--kit={empty}", f"--out={tmp_path / 'p.json'}"),
       f"--kit: {empty}/kit.json is missing"),         # (not "--kit: kit: ...")
      (("profile", f"--kit={none}", f"--out={tmp_path / 'p.json'}"),
       f"--kit={none} is not a kit directory")):
    r = run_edge(*args)
    assert (r.returncode, r.stdout, r.stderr) == (1, "", f"error: {want}\n"), args
  assert sorted(os.listdir(tmp_path)) == ["art", "empty"]


def test_an_images_folder_without_images_names_its_flag(artifact, tmp_path, capsys):
  """`vitprune.edge run` and `run_deployed` refused an --images folder holding no image file
  naming the folder alone ('no image files ... directly in unlabelled dataset root'), not the
  flag it came through (a probe)."""
  from experiments import common, run_deployed  # pylint: disable=g-import-not-at-top
  folder = tmp_path / "notes"
  folder.mkdir()
  (folder / "notes.txt").write_text("someone's notes\n")
  want = (f"error: --images: no image files (extensions {', '.join(data_lib.IMG_EXTENSIONS)}) "
          f"directly in unlabelled dataset root '{folder}'\n")
  r = run_edge("run", f"--artifact={artifact}", f"--images={folder}")
  assert (r.returncode, r.stdout, r.stderr) == (1, "", want)
  with pytest.raises(SystemExit) as e:
    common.run_in_process(run_deployed.main, run_deployed.define_flags,
                          [f"--artifact={artifact}", f"--images={folder}", "--repeats=3"])
  assert e.value.code == 1 and capsys.readouterr().err == want


def test_the_board_cli_expands_a_leading_tilde(tmp_path):
  """The board CLI expands a '~' the shell left alone (`--artifact=~/art`) as the experiments
  CLIs do, and leaves one that names no user's home as it is, as the shell does."""
  env = dict(os.environ, HOME=str(tmp_path))
  runs = [subprocess.run([sys.executable, "-c", NO_JAX, "vitprune.edge", "bench", artifact],
                         cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
          for artifact in ("--artifact=~/art", "--artifact=~nosuchuser_vitprune/art")]
  assert [(r.returncode, r.stderr) for r in runs] == [
      (1, f"error: --artifact={tmp_path / 'art'} is not an artifact directory\n"),
      (1, f"error: --artifact={ROOT}/~nosuchuser_vitprune/art is not an artifact directory\n")]


def test_the_board_classifies_one_image_file(artifact, tmp_path):
  """`vitprune.edge run --images=one.png` classifies that image (it was "dataset root ... is not
  a directory"), as run_deployed does."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  Image.fromarray(np.zeros((40, 36, 3), np.uint8)).save(tmp_path / "one.png")
  r = run_edge("run", f"--artifact={artifact}", f"--images={tmp_path / 'one.png'}",
               f"--output={tmp_path / 'r.json'}")
  assert r.returncode == 0, r.stderr[-2000:]
  res = json.loads((tmp_path / "r.json").read_text())
  assert (res["images"], res["num_images"], [p["file"] for p in res["predictions"]]) == (
      str(tmp_path / "one.png"), 1, ["one.png"])
  assert r.stdout.splitlines()[0].startswith("one.png\t")


@pytest.mark.parametrize("shards, batch, module, message", [
    (2, 3, None, r"^w: shards 2 does not split the batch of 3 into equal parts$"),
    (0, 4, None, r"^w: shards 0 does not split the batch of 4 into equal parts$"),
    (True, 4, None, r"^w: shards True does not split the batch of 4 into equal parts$"),
    (2, 4, {"batch_size": 1}, r"^w: a module for batch 1 in 2 shards cannot take the batch of 4$"),
    (2, 4, {"batch_size": 0}, r"^w: a module for batch 0 in 2 shards cannot take the batch of 4$"),
])
def test_check_shards_names_each_way_a_record_cannot_split_its_batch(shards, batch, module,
                                                                     message):
  """A mutation audit: each check of `check_shards` on its own (the split of the batch, shards
  >= 1, the module's compiled batch times the shards): without one, a record of 0 shards was a
  ZeroDivisionError, and a module compiled for another part size met IREE's shape error."""
  with pytest.raises(EdgeError, match=message):
    edge_rt.check_shards(shards, batch, "w", module)
  assert edge_rt.check_shards(2, 4, "w", {"batch_size": 2}) == 2
  assert edge_rt.check_shards(1, 3, "w") == 1


def test_one_non_finite_output_of_a_row_refuses_it_and_the_first_row_is_named():
  """A mutation audit of `check_finite_outputs`: a row with one NaN among finite logits is
  refused (not only all-NaN rows: its argmax was read without a word), the count is of the rows
  refused, the first of them is named, and the peak is of their images alone."""
  images = np.stack([np.full((2, 2, 1), v, np.float32) for v in (7.0, -50.0, 3.0)])
  outputs = np.array([[1.0, 2.0], [np.nan, 0.5], [0.1, np.inf]], np.float32)
  with pytest.raises(FloatingPointError, match=r"^the model's outputs are NaN/inf for 2 of 3 "
                     r"images \(first: batch row 1\), whose values reach 50: are they "):
    edge_rt.check_finite_outputs(outputs, images)
  finite = outputs[:1]
  assert edge_rt.check_finite_outputs(finite, images[:1]) is finite


def test_a_module_of_another_artifact_counts_the_other_fields_that_differ(artifact, tmp_path):
  """A mutation audit: where two shared fields differ, the message names the first and counts
  the rest, so a user fixing the one named is told more remain."""
  mixed = tmp_path / "mixed"
  shutil.copytree(artifact, mixed)
  man = json.loads((mixed / "manifest.json").read_text())
  man.update(class_names=list("abcdefghij"))
  man["preprocessing"].update(crop_pct=0.5)
  _consistent_manifest(man)
  (mixed / "manifest.json").write_text(json.dumps(man))
  with pytest.raises(EdgeError, match=r"module's record is not of this artifact: its class_names "
                     r".* differs from the manifest's \['a', .*\] \(and 1 more field\(s\)\): "
                     r"files mixed from two artifacts\? rebuild it with experiments.deploy$"):
    edge_rt.load(str(mixed), "iree:host")


def test_the_first_difference_of_objects_differing_only_by_a_null_key_is_the_objects():
  """A mutation audit of `_first_difference`: objects that differ only by a key one holds as
  null and the other lacks have no differing key to narrow to; they are shown whole (narrowing
  to the 'first' of no keys was an IndexError instead of the mismatch message)."""
  first_difference = edge_rt._first_difference  # pylint: disable=protected-access
  assert first_difference("compute", {"a": None}, {}) == ("compute", {"a": None}, {})
  assert first_difference("p", {"a": 1, "b": {"c": 2}}, {"a": 1, "b": {"c": 3}}) == (
      "p b c", 2, 3)
  assert first_difference("p", {"a": 1, "b": 2}, {"a": 0, "b": 0}) == (
      "p a, b", {"a": 1, "b": 2}, {"a": 0, "b": 0})


def test_the_board_model_names_the_image_shape_its_module_takes(artifact, images):
  """A mutation audit of `EdgeModel._check`: images of another batch or size are one
  ValueError naming both shapes before anything reaches IREE (whose shape diagnostics or the
  shard split's message named neither)."""
  m = edge_rt.load(artifact, "iree:host")
  assert m.input_shape == (2, 32, 32, 3)
  for shape in ((3, 32, 32, 3), (2, 16, 16, 3), (2, 32, 32)):
    with pytest.raises(ValueError, match=r"^iree:host module expects images \[2, 32, 32, 3\] "
                       rf"\(NHWC float32\), got \[{', '.join(map(str, shape))}\]$"):
      m(np.zeros(shape, np.float32))
  assert m(images[:2]).shape == (2, CFG.num_classes)


def test_a_board_copy_of_two_records_of_two_artifacts_is_refused(artifact, tmp_path):
  """A mutation audit of `_check_one_artifact`: with exactly two records (a board's own target
  and one copied in from another artifact), the second is compared with the first (the check
  of four records passed even when it skipped the second)."""
  board = _board_copy(artifact, tmp_path)
  rec = json.loads((board / edge_rt.EDGE_DIR / "iree_host.json").read_text())
  other = dict(rec, target="iree:llvm-cpu:aarch64-linux-gnu", class_names=list("abcdefghij"))
  (board / edge_rt.EDGE_DIR / "iree_zz_other.json").write_text(json.dumps(other))
  with pytest.raises(EdgeError, match=r"the iree:llvm-cpu:aarch64-linux-gnu module's record "
                     r"\(iree/iree_zz_other.json\) and the iree:host one's "
                     r"\(iree/iree_host.json\) are of two artifacts: their class_names differ"):
    edge_rt.load(str(board), "iree:host")


def test_the_file_check_of_records_skips_baked_weights_but_not_their_module(tmp_path):
  """A mutation audit of `check_record_files`: a record of baked weights (no weights file; the
  module holds them) passes the jax path's file check, whose module is still hashed (checking
  the absent weights file refused every baked record as 'bad file entry None')."""
  (tmp_path / "iree").mkdir()
  (tmp_path / "iree" / "m.vmfb").write_bytes(b"module")
  rec = {"target": "iree:host", "driver": "local-task", "function": "main",
         "_file": "iree/iree_host.json", "weights": {"mode": "baked"},
         "module": {"file": "iree/m.vmfb", "sha256": hashlib.sha256(b"module").hexdigest()}}
  assert edge_rt.check_record_files(str(tmp_path), [rec]) is None
  rec["module"]["sha256"] = "0" * 64
  with pytest.raises(EdgeError, match=r"^\S+iree_host\.json: iree/m\.vmfb has sha256 "
                     r"[0-9a-f]{16}\.\.\., the record says 0{16}\.\.\. \(file corrupted or "
                     r"replaced\)$"):
    edge_rt.check_record_files(str(tmp_path), [rec])


def test_the_cpu_profile_and_stack_limit_boundaries_and_a_latency_record_without_its_peel():
  """Mutation audit: a graph of exactly TASK_MIN_GFLOP is a throughput one; a dispatch of
  exactly STACK_LIMIT bytes fits the raised limit (one byte more drops the fusion); latency
  flags that kept the fusion but lost the peel strategy are not the latency profile's."""
  assert targets_lib.cpu_profile(targets_lib.TASK_MIN_GFLOP) == "throughput"
  assert targets_lib.cpu_profile(targets_lib.TASK_MIN_GFLOP - 1e-6) == "latency"
  latency = parse_target("iree:host").compile_flags("latency")
  error = ("error: 'func.func' op exceeded stack allocation limit of 32768 bytes for function. "
           "Got {} bytes")
  assert targets_lib.next_attempt(latency, error.format(targets_lib.STACK_LIMIT)) == (
      latency + [targets_lib.CPU_STACK], f"raised the stack limit to {targets_lib.STACK_LIMIT} "
      "bytes")
  assert targets_lib.next_attempt(latency, error.format(targets_lib.STACK_LIMIT + 1)) == (
      [f for f in latency if f not in targets_lib.CPU_FUSION],
      f"dropped {' '.join(targets_lib.CPU_FUSION)}")
  unpeeled = [f for f in latency if f not in targets_lib.CPU_PEEL]
  assert set(targets_lib.CPU_FUSION) <= set(unpeeled)
  assert targets_lib.profile_flags_problem("latency", unpeeled) == (
      "compile profile 'latency', but its flags lack the latency profile's "
      "--iree-llvmcpu-vector-pproc-strategy=peel")


def test_an_iree_host_module_is_checked_against_the_arch_it_records_and_one_target_suffices(
    monkeypatch):
  """Mutation audit: an iree:host module compiled on an aarch64 host is refused on an x86_64
  one by the arch its record states (this host's own arch was compared with itself), and one
  without that arch is refused as an edited record; a single IREE target refuses bfloat16."""
  monkeypatch.setattr(targets_lib.platform, "machine", lambda: "x86_64")
  with pytest.raises(EdgeError, match=r"^m was compiled for target iree:host \(aarch64\); this "
                     r"host is x86_64$"):
    targets_lib.check_runnable({"target": "iree:host", "host_cpu": {"arch": "aarch64"}}, "m")
  with pytest.raises(EdgeError, match=r"^m was compiled for target iree:host but does not "
                     r"record the host CPU it was compiled on \(host_cpu\.arch\)"):
    targets_lib.check_runnable({"target": "iree:host"}, "m")
  with pytest.raises(ValueError, match=r"^IREE targets compile float32 graphs only \(a bfloat16 "
                     r"dot_general does not legalize for iree:host\); hint$"):
    targets_lib.check_compute_dtype(parse_targets(["iree:host"]), "bfloat16", "hint")


def test_a_kit_without_a_dtype_or_of_a_batch_0_point_is_refused(tmp_path):
  """Mutation audit: kit.json without its dtype (read by the profile: a KeyError) is refused by
  name, and a point whose input batch is 0 by read_kit."""
  path, doc = _minimal_kit(tmp_path)
  manifest = pathlib.Path(path) / kit_lib.KIT_MANIFEST
  manifest.write_text(json.dumps({k: v for k, v in doc.items() if k != "dtype"}))
  with pytest.raises(EdgeError, match=r"kit\.json lacks \['dtype'\]$"):
    kit_lib.read_kit(path)
  bad = json.loads(json.dumps(doc))
  bad["points"][0]["input"]["shape"][0] = 0
  manifest.write_text(json.dumps(bad))
  with pytest.raises(EdgeError, match=r"kit\.json: points\[0\]: input\.shape must be 4 ints >= "
                     r"0, the batch >= 1$"):
    kit_lib.read_kit(path)


def test_kit_plans_keep_each_points_profile_and_an_old_points_shards(tmp_path):
  """Mutation audit: the board profile's per-batch compile profiles come from each point's own
  runtime plan (a latency batch-1 point was recorded under the kit's throughput profile), and a
  point written before runtime plans runs in the shards it states."""
  host = parse_target("iree:host")
  here = targets_lib.host_cpu()
  path, doc = _minimal_kit(tmp_path, host_cpu={"arch": here["arch"], "features": []},
                           compiler={"profile": "throughput", "flags": host.compile_flags()})
  one = dict(doc["points"][0], flags=host.compile_flags("latency"),
             runtime={"profile": "latency", "driver": "local-sync", "shards": 1})
  two = dict(doc["points"][0], batch_size=2, input={"shape": [2, 32, 32, 3], "dtype": "float32"},
             module={"file": "modules/b2.vmfb", "sha256": "0" * 64}, flags=host.compile_flags(),
             runtime={"profile": "throughput", "driver": "local-task", "shards": 1})
  old = dict(doc["points"][0], batch_size=4, input={"shape": [4, 32, 32, 3], "dtype": "float32"},
             module={"file": "modules/b4.vmfb", "sha256": "0" * 64}, shards=2)
  (pathlib.Path(path) / kit_lib.KIT_MANIFEST).write_text(json.dumps(
      dict(doc, points=[one, two, old])))
  kit, plans, _ = kit_lib._kit_plans(path, None)  # pylint: disable=protected-access
  assert plans == [("local-sync", 1), ("local-task", 1), ("local-task", 2)]
  assert kit["driver"] == "local-sync+local-task"
  assert kit["shards"] == {"1": [1], "2": [1], "4": [2]}
  assert kit["profiles"] == {"1": ["latency"], "2": ["throughput"], "4": ["throughput"]}


def test_a_vulkan_board_profile_names_the_target_alone_in_its_device_kind():
  """Mutation audit: only CPU kits add the host CPU's model to the device kind (a GPU's timings
  do not depend on the host CPU)."""
  kit = {"target": "iree:vulkan", "model": "m", "config": {}, "driver": "vulkan",
         "dtype": "float32", "mode": "model"}
  profile = kit_lib._kit_profile(kit, protocol.TimingConfig())  # pylint: disable=protected-access
  assert (profile.device_kind, profile.platform) == ("iree:vulkan", "iree-vulkan")


def test_the_edge_entry_names_the_cpu_model_and_a_compiler_entry_must_be_an_object(
    tmp_path, monkeypatch):
  """Mutation audit: a board profile's edge host_cpu is the CPU's model (two CPUs of one
  architecture are two setups), and a kit whose compiler entry is not an object is refused by
  read_kit (it was an AttributeError in _kit_plans)."""
  monkeypatch.setattr(kit_lib, "host_cpu", lambda: {"arch": "aarch64", "features": [],
                                                    "model": "Cortex-A78AE"})
  fields = kit_lib.edge_fields({"target": "iree:host", "compiler": None, "shards": {"1": [1]},
                                "profiles": {"1": ["latency"]}})
  assert fields["edge"]["host_cpu"] == "Cortex-A78AE"
  path, _ = _minimal_kit(tmp_path, compiler="edited")
  with pytest.raises(EdgeError, match=r"kit\.json: compiler\.flags are none of its points' "
                     r"flags: an edited kit\.json\? rebuild it with experiments\.edge_kit$"):
    kit_lib.read_kit(path)
