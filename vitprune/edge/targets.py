"""Deployment targets (`--target`): parsing, IREE compiler flags, runtime drivers, host checks.

Target texts:
  jax                              the `jax.export` artifact (forward.jax_export + params/)
  iree:host                        IREE llvm-cpu for this machine's CPU (`target-cpu=host`)
  iree:llvm-cpu:<triple>[:<cpu>]   IREE llvm-cpu cross-compiled, e.g. aarch64-linux-gnu:cortex-a78ae
  iree:cuda:<sm_XX>                IREE CUDA for one compute capability, e.g. sm_87 (Orin)
  iree:vulkan                      IREE Vulkan SPIR-V (the compiler's default Vulkan target)

The CPU targets use data tiling and microkernels (`--iree-opt-data-tiling
--iree-llvmcpu-enable-ukernels=all`): IREE's default CPU code generation is several times slower
than XLA on ViT matmuls. A CPU module is built for one of two profiles, chosen from the graph's
estimated work (`cpu_profile`, measured in benchmarks/RESULTS.md, "The edge path"):
  latency     (< TASK_MIN_GFLOP per call): runs on the `local-sync` driver (the caller's thread;
              no task-system hand-offs), compiled with the transposes fused into the matmuls
              (`--iree-opt-generalize-matmul`) and peeled vector loops for odd token counts.
  throughput  (larger graphs): runs on `local-task` (one worker per core), default codegen.
On a multi-core host a batch is split instead when that keeps each part small (`cpu_plan`):
`shards` equal parts of the batch, each a `local-sync` call in its own thread (one device, one
copy of the weights: `vitprune.edge.runtime.Runner`), compiled for the latency profile at batch
B / shards (IREE's task system splits ~1-100 ms graphs over cores worse than independent calls
do; benchmarks/RESULTS.md, "The edge path").
A compile that fails is retried with less (`next_attempt`); the record lists what was used.
Importing this module needs neither jax nor IREE.
"""
from __future__ import annotations

import collections
import dataclasses
import os
import platform
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple


class EdgeError(ValueError):
  """An edge artifact, kit or target is invalid, tampered with, or cannot run on this host."""


CPU_TUNING = ("--iree-opt-data-tiling", "--iree-llvmcpu-enable-ukernels=all")
CPU_FUSION = ("--iree-opt-generalize-matmul",)
CPU_PEEL = ("--iree-llvmcpu-vector-pproc-strategy=peel",)
CPU_LATENCY = CPU_FUSION + CPU_PEEL
# IREE's 32 KiB per-dispatch stack limit is a fail-safe; local-task workers have 128 KiB stacks.
STACK_LIMIT = 65536
CPU_STACK = f"--iree-llvmcpu-stack-allocation-limit={STACK_LIMIT}"
CPU_PROFILES = ("latency", "throughput")
CPU_DRIVERS = {"latency": "local-sync", "throughput": "local-task"}
# The IREE runtime drivers that run each backend's modules (the first is the default).
BACKEND_DRIVERS = {"llvm-cpu": ("local-task", "local-sync"), "cuda": ("cuda",),
                   "vulkan-spirv": ("vulkan",)}
# Between vit_digits at batch 1 (0.03 GFLOP: local-sync 1.18x JAX, local-task 1.69x) and at batch 8
# (0.26: local-task 1.26x, local-sync 1.61x): the first idle run of benchmarks.edge_speed with both
# drivers on the 2-core CPU (benchmarks/RESULTS.md, "The edge path": its auto-driver column
# "before").
TASK_MIN_GFLOP = 0.1
# Sharded runs measured against the unsharded driver, 2-core CPU, idle (per-shard GFLOP): vit_digits
# batch 8 (0.13) 0.85-0.94x JAX vs 1.27-1.32x, batch 32 (0.52) 0.96x vs 1.13x, batch 128 (2.1)
# 0.98x vs 1.23x; DeiT-S batch 2 (9.2) and 8 (36.8) no gain (1.09-1.21x vs 1.10-1.19x).
SHARD_MAX_GFLOP = 4.0
_ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64", "armv8": "aarch64"}
_FORMS = ("jax", "iree:host", "iree:llvm-cpu:<triple>[:<cpu>]", "iree:cuda:<sm_XX>",
          "iree:vulkan")


def iree_runtime():
  """The `iree.runtime` module; EdgeError naming the package when it cannot be imported (a
  board without `requirements-edge.txt` installed got a traceback ending in ImportError)."""
  try:
    import iree.runtime as ireert  # pylint: disable=g-import-not-at-top  (optional: to run)
  except ImportError as e:
    raise EdgeError(f"the IREE runtime cannot be imported ({e}): install it on this machine "
                    "with pip install -r requirements-edge.txt (iree-base-runtime>=3.13,<4)"
                    ) from None
  return ireert


def normalize_arch(arch: str) -> str:
  arch = arch.strip().lower()
  return _ARCH_ALIASES.get(arch, arch)


@dataclasses.dataclass(frozen=True)
class Target:
  """One parsed target. `backend`: 'jax' | 'llvm-cpu' | 'cuda' | 'vulkan-spirv'."""
  text: str
  backend: str
  triple: Optional[str] = None   # llvm-cpu cross-compilation
  cpu: Optional[str] = None      # llvm-cpu: 'host' or an LLVM CPU name
  sm: Optional[str] = None       # cuda: 'sm_87'

  @property
  def is_iree(self) -> bool:
    return self.backend != "jax"

  @property
  def slug(self) -> str:
    """A file-name-safe name: 'iree_host', 'iree_cuda_sm_87', ..."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", self.text.replace(":", "_"))

  @property
  def drivers(self) -> Tuple[str, ...]:
    """The IREE runtime drivers that can run this target's modules (the first is the default)."""
    return BACKEND_DRIVERS[self.backend]

  @property
  def driver(self) -> str:
    """The default IREE runtime driver of this target (llvm-cpu: see `cpu_profile`)."""
    return self.drivers[0]

  @property
  def arch(self) -> Optional[str]:
    """CPU architecture of an llvm-cpu target (host: this machine's), else None."""
    if self.backend != "llvm-cpu":
      return None
    return normalize_arch(self.triple.split("-")[0] if self.triple else platform.machine())

  def compile_flags(self, profile: str = "throughput") -> List[str]:
    """`iree-compile` flags besides the input type and the target backend (llvm-cpu: for
    `profile` 'latency' or 'throughput')."""
    if self.backend == "llvm-cpu":
      if profile not in CPU_PROFILES:
        raise EdgeError(f"unknown CPU profile {profile!r}; expected one of "
                        f"{', '.join(CPU_PROFILES)}")
      flags = [f"--iree-llvmcpu-target-triple={self.triple}"] if self.triple else []
      flags.append(f"--iree-llvmcpu-target-cpu={self.cpu or 'generic'}")
      return flags + list(CPU_TUNING) + (list(CPU_LATENCY) if profile == "latency" else [])
    if self.backend == "cuda":
      return [f"--iree-cuda-target={self.sm}"]
    return []


def parse_target(text: str) -> Target:
  """'iree:cuda:sm_87' -> Target; raises EdgeError naming the accepted forms."""
  raw = str(text).strip()
  parts = raw.lower().split(":")
  bad = EdgeError(f"unknown target {raw!r}; expected one of {', '.join(_FORMS)}"
                  + (" (one target here, not a list)" if "," in raw else ""))
  if parts == ["jax"]:
    return Target("jax", "jax")
  if len(parts) < 2 or parts[0] != "iree":
    raise bad
  kind, rest = parts[1], raw.split(":")[2:]
  if kind == "host" and not rest:
    return Target("iree:host", "llvm-cpu", cpu="host")
  if kind == "llvm-cpu" and len(rest) in (1, 2) and all(rest):
    if not re.fullmatch(r"[A-Za-z0-9_.]+(-[A-Za-z0-9_.]+){1,4}", rest[0]):
      raise EdgeError(f"target {raw!r}: {rest[0]!r} is not an LLVM target triple such as "
                      "aarch64-linux-gnu")
    # (the prefix in one spelling, as the others are: a board's profile names its target so)
    cpu = rest[1] if len(rest) == 2 else None
    return Target(":".join(["iree:llvm-cpu", *rest]), "llvm-cpu", triple=rest[0], cpu=cpu)
  if kind == "cuda" and len(rest) == 1:
    if not re.fullmatch(r"sm_[0-9]{2,3}[a-z]?", rest[0].lower()):
      raise EdgeError(f"target {raw!r}: {rest[0]!r} is not a CUDA architecture such as sm_87")
    return Target(f"iree:cuda:{rest[0].lower()}", "cuda", sm=rest[0].lower())
  if kind == "vulkan" and not rest:
    return Target("iree:vulkan", "vulkan-spirv")
  raise bad


def check_compute_dtype(targets: Sequence[Target], dtype: str, hint: str) -> None:
  """ValueError (ending in `hint`) when an IREE target is asked for a bfloat16 graph: its
  dot_general with the bfloat16 precision algorithm does not legalize (llvm-cpu, cuda and vulkan
  alike, IREE 3.x), found after the export and a compile attempt per target."""
  iree = [t.text for t in targets if t.is_iree]
  if dtype == "bfloat16" and iree:
    raise ValueError(f"IREE targets compile float32 graphs only (a bfloat16 dot_general does "
                     f"not legalize for {iree[0]}); {hint}")


def parse_targets(items: Sequence[str]) -> Tuple[Target, ...]:
  """Repeated / comma-separated target texts -> unique Targets in order (default: jax)."""
  texts = [t for item in (items or ()) for t in str(item).split(",") if t.strip()]
  out: List[Target] = []
  for t in texts or ["jax"]:
    target = parse_target(t)
    if target in out:
      raise EdgeError(f"target {target.text!r} given twice")
    same = [o for o in out if o.is_iree and target.is_iree and o.slug == target.slug]
    if same:            # one file name for two modules: one would be dropped
      raise EdgeError(f"targets {same[0].text!r} and {target.text!r} would share the module "
                      f"file iree/{target.slug}.vmfb; give one of them")
    out.append(target)
  return tuple(out)


def targets_mismatch(listed: Sequence[str], found: Sequence[str]) -> Optional[str]:
  """Why an artifact's manifest "targets" (`listed`, "jax" first) disagree with the IREE module
  records its iree/ folder holds (their "target" fields, `found`), or None when they agree. An
  edited manifest (or a partial copy) made run_deployed and vitprune.edge state targets the
  artifact does not have, or run a module it does not list; two records of one target (a copied
  record) ran whichever sorted first."""
  listed_twice = sorted(t for t, n in collections.Counter(listed).items() if n > 1)
  if listed_twice:
    return (f"the manifest lists {', '.join(listed_twice)} more than once (targets "
            f"{list(listed)}): an edited manifest? rebuild it with experiments.deploy")
  twice = sorted(t for t, n in collections.Counter(found).items() if n > 1)
  if twice:
    return (f"iree/ holds more than one module record for {', '.join(twice)}: a copied "
            "record? rebuild it with experiments.deploy")
  listed_iree, found = sorted(set(listed) - {"jax"}), sorted(set(found))
  if listed_iree == found:
    return None
  extra, missing = sorted(set(found) - set(listed_iree)), sorted(set(listed_iree) - set(found))
  parts = ([f"lists {', '.join(missing)}, for which iree/ holds no module record"]
           if missing else []) + (
      [f"does not list {', '.join(extra)}, for which iree/ holds a module record"]
      if extra else [])
  return (f"the manifest (targets {list(listed)}) {' and '.join(parts)}: an edited manifest or "
          "a partial copy? rebuild it with experiments.deploy")


# ----------------------------------------------------------------------------- profiles, drivers


def cpu_profile(gflop: float) -> str:
  """'latency' below `TASK_MIN_GFLOP` estimated GFLOP per call, else 'throughput'."""
  return "latency" if gflop < TASK_MIN_GFLOP else "throughput"


def shards_for(batch_size: int, at_most: int) -> int:
  """The largest divisor of `batch_size` that is <= `at_most` (>= 1): how many equal shards a
  batch splits into on `at_most` cores."""
  return max(s for s in range(1, max(1, min(int(at_most), int(batch_size))) + 1)
             if batch_size % s == 0)


def cpu_plan(gflop: float, batch_size: int, cores: int) -> Tuple[str, int]:
  """(profile, shards) of a CPU module doing `gflop` per call at `batch_size` on `cores` cores:
  `shards` > 1 (`shards_for(batch_size, cores)`) when each shard then does less than
  `SHARD_MAX_GFLOP`; such shards use the latency profile. Otherwise one shard, `cpu_profile`."""
  shards = shards_for(batch_size, cores)
  if shards > 1 and gflop / shards < SHARD_MAX_GFLOP:
    return "latency", shards
  return cpu_profile(gflop), 1


def describe_runtime(driver: str, shards: int = 1) -> str:
  """'local-task', or 'local-sync x2 shards' for a batch run in 2 shards."""
  return driver + (f" x{shards} shards" if shards > 1 else "")


def usable_cores(cpu_max: str = "/sys/fs/cgroup/cpu.max") -> int:
  """CPU cores this process may run on: its CPU affinity, capped by a cgroup v2 CPU quota
  (`cpu_max`, e.g. a container started with --cpus=2 on a larger host)."""
  try:
    cores = len(os.sched_getaffinity(0))
  except (AttributeError, OSError):
    cores = os.cpu_count() or 1
  try:
    with open(cpu_max) as f:
      quota, period = f.read().split()[:2]
    if quota != "max":
      cores = min(cores, max(1, int(-(-int(quota) // int(period)))))
  except (OSError, ValueError):
    pass
  return cores


def default_driver(target: Target, profile: str) -> str:
  """The driver a module of `target` built for `profile` runs on unless told otherwise."""
  return CPU_DRIVERS[profile] if target.backend == "llvm-cpu" else target.driver


def check_driver(target: Target, driver: str) -> str:
  """`driver` if it can run `target`'s modules; raises EdgeError naming the accepted ones."""
  if driver not in target.drivers:
    raise EdgeError(f"IREE driver {driver!r} cannot run target {target.text}; expected one of "
                    f"{', '.join(target.drivers)}")
  return driver


# ----------------------------------------------------------------------------- compile retries


_STACK = re.compile(r"exceeded stack allocation limit of \d+ bytes for function\. "
                    r"Got (\d+) bytes")


def profile_flags_problem(profile: Any, flags: Any) -> str:
  """Why CPU modules said to be compiled for `profile` cannot have been, given the `flags` they
  were compiled with ('' when they can, or where a record names no profile or flags): the
  latency profile's peel strategy is in its flags whatever a fallback dropped (`next_attempt`
  never drops it), and in no throughput flags. The board profile keys curves by the compile
  profile, so a relabelled kit merged latency modules into a throughput curve."""
  if profile is None or not isinstance(flags, list):
    return ""
  if profile not in CPU_PROFILES:
    return f"unknown compile profile {profile!r}; expected one of {', '.join(CPU_PROFILES)}"
  peeled = all(f in flags for f in CPU_PEEL)
  if peeled != (profile == "latency"):
    return (f"compile profile {profile!r}, but its flags {'hold' if peeled else 'lack'} the "
            f"latency profile's {' '.join(CPU_PEEL)}")
  return ""


def next_attempt(flags: Sequence[str], error: str) -> Optional[Tuple[List[str], str]]:
  """After a CPU compile with `flags` failed with compiler output `error`: (the flags to try
  next, what changed), or None when nothing is left to drop.

  A dispatch over IREE's stack limit but within `STACK_LIMIT` gets the higher limit; a larger
  one drops the matmul fusion, then data tiling; any other error drops data tiling and
  microkernels first (IREE 3.13 cannot pad an i1 tensor with them), then the fusion."""
  flags = list(flags)
  stack = [int(n) for n in _STACK.findall(error)]
  if stack and max(stack) <= STACK_LIMIT and CPU_STACK not in flags:
    return flags + [CPU_STACK], f"raised the stack limit to {STACK_LIMIT} bytes"
  for group in ((CPU_FUSION, CPU_TUNING) if stack else (CPU_TUNING, CPU_FUSION)):
    if set(group) <= set(flags):
      return [f for f in flags if f not in group], f"dropped {' '.join(group)}"
  return None


# ----------------------------------------------------------------------------- this host


def host_cpu() -> Dict[str, Any]:
  """{'arch', 'model', 'features'}: this machine's CPU (features from /proc/cpuinfo on Linux)."""
  model, features = platform.processor() or "", []
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model", "hardware") and not model:
          model = value.strip()
        elif key in ("flags", "features") and not features:
          features = sorted(set(value.split()))
  except OSError:
    pass
  return {"arch": normalize_arch(platform.machine()), "model": model or "unknown",
          "features": features}


def check_runnable(record: Dict[str, Any], where: str) -> None:
  """Raises EdgeError unless this host can run a module compiled for `record['target']`."""
  target = parse_target(record["target"])
  if target.backend == "llvm-cpu":
    here = host_cpu()
    want = target.arch if target.triple else (record.get("host_cpu") or {}).get("arch")
    if want is None:        # (said "compiled for target iree:host (None)")
      raise EdgeError(f"{where} was compiled for target {target.text} but does not record the "
                      "host CPU it was compiled on (host_cpu.arch): an edited record? rebuild "
                      "it with experiments.deploy or experiments.edge_kit")
    if want != here["arch"]:
      raise EdgeError(f"{where} was compiled for target {target.text} ({want}); this host is "
                      f"{here['arch']}")
    if target.cpu == "host":
      missing = sorted(set((record.get("host_cpu") or {}).get("features", ())) -
                       set(here["features"]))
      if missing:
        raise EdgeError(f"{where} was compiled with --target=iree:host on a CPU with features "
                        f"this CPU lacks ({', '.join(missing[:8])}); recompile on this machine")
    return
  ireert = iree_runtime()
  driver = record.get("driver", target.driver)
  if driver not in ireert.query_available_drivers():
    raise EdgeError(f"{where} targets {target.text}, but this IREE runtime has no "
                    f"{driver!r} driver")
  try:
    ireert.get_device(driver)
  except Exception as e:  # the runtime raises RuntimeError/ValueError variants
    raise EdgeError(f"{where} targets {target.text}, but no {driver} device is "
                    f"available here ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
                    ) from None

