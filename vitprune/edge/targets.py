"""Deployment targets (`--target`): parsing, IREE compiler flags, runtime drivers, host checks.

Target texts:
  jax                              the `jax.export` artifact (forward.jax_export + params/)
  iree:host                        IREE llvm-cpu for this machine's CPU (`target-cpu=host`)
  iree:llvm-cpu:<triple>[:<cpu>]   IREE llvm-cpu cross-compiled, e.g. aarch64-linux-gnu:cortex-a78ae
  iree:cuda:<sm_XX>                IREE CUDA for one compute capability, e.g. sm_87 (Orin)
  iree:vulkan                      IREE Vulkan SPIR-V (the compiler's default Vulkan target)

The CPU targets use data tiling and microkernels (`--iree-opt-data-tiling
--iree-llvmcpu-enable-ukernels=all`): IREE's default CPU code generation is several times slower
than XLA on ViT matmuls. Importing this module needs neither jax nor IREE.
"""
from __future__ import annotations

import dataclasses
import platform
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple


class EdgeError(ValueError):
  """An edge artifact, kit or target is invalid, tampered with, or cannot run on this host."""


CPU_TUNING = ("--iree-opt-data-tiling", "--iree-llvmcpu-enable-ukernels=all")
_ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64", "armv8": "aarch64"}
_FORMS = ("jax", "iree:host", "iree:llvm-cpu:<triple>[:<cpu>]", "iree:cuda:<sm_XX>",
          "iree:vulkan")


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
  def driver(self) -> str:
    """The IREE runtime driver that runs this target's modules."""
    return {"llvm-cpu": "local-task", "cuda": "cuda", "vulkan-spirv": "vulkan"}[self.backend]

  @property
  def arch(self) -> Optional[str]:
    """CPU architecture of an llvm-cpu target (host: this machine's), else None."""
    if self.backend != "llvm-cpu":
      return None
    return normalize_arch(self.triple.split("-")[0] if self.triple else platform.machine())

  def compile_flags(self) -> List[str]:
    """`iree-compile` flags besides the input type and the target backend."""
    if self.backend == "llvm-cpu":
      flags = [f"--iree-llvmcpu-target-triple={self.triple}"] if self.triple else []
      flags.append(f"--iree-llvmcpu-target-cpu={self.cpu or 'generic'}")
      return flags + list(CPU_TUNING)
    if self.backend == "cuda":
      return [f"--iree-cuda-target={self.sm}"]
    return []


def parse_target(text: str) -> Target:
  """'iree:cuda:sm_87' -> Target; raises EdgeError naming the accepted forms."""
  raw = str(text).strip()
  parts = raw.lower().split(":")
  bad = EdgeError(f"unknown target {raw!r}; expected one of {', '.join(_FORMS)}")
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
    cpu = rest[1] if len(rest) == 2 else None
    return Target(raw, "llvm-cpu", triple=rest[0], cpu=cpu)
  if kind == "cuda" and len(rest) == 1:
    if not re.fullmatch(r"sm_[0-9]{2,3}[a-z]?", rest[0].lower()):
      raise EdgeError(f"target {raw!r}: {rest[0]!r} is not a CUDA architecture such as sm_87")
    return Target(f"iree:cuda:{rest[0].lower()}", "cuda", sm=rest[0].lower())
  if kind == "vulkan" and not rest:
    return Target("iree:vulkan", "vulkan-spirv")
  raise bad


def parse_targets(items: Sequence[str]) -> Tuple[Target, ...]:
  """Repeated / comma-separated target texts -> unique Targets in order (default: jax)."""
  texts = [t for item in (items or ()) for t in str(item).split(",") if t.strip()]
  out: List[Target] = []
  for t in texts or ["jax"]:
    target = parse_target(t)
    if target in out:
      raise EdgeError(f"target {target.text!r} given twice")
    out.append(target)
  return tuple(out)


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
    want = target.arch if target.triple else record.get("host_cpu", {}).get("arch")
    if want != here["arch"]:
      raise EdgeError(f"{where} was compiled for target {target.text} ({want}); this host is "
                      f"{here['arch']}")
    if target.cpu == "host":
      missing = sorted(set(record.get("host_cpu", {}).get("features", ())) -
                       set(here["features"]))
      if missing:
        raise EdgeError(f"{where} was compiled with --target=iree:host on a CPU with features "
                        f"this CPU lacks ({', '.join(missing[:8])}); recompile on this machine")
    return
  import iree.runtime as ireert  # pylint: disable=g-import-not-at-top  (optional: needed to run)
  if target.driver not in ireert.query_available_drivers():
    raise EdgeError(f"{where} targets {target.text}, but this IREE runtime has no "
                    f"{target.driver!r} driver")
  try:
    ireert.get_device(target.driver)
  except Exception as e:  # the runtime raises RuntimeError/ValueError variants
    raise EdgeError(f"{where} targets {target.text}, but no {target.driver} device is "
                    f"available here ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
                    ) from None

