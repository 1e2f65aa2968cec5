"""The command lines, `python -m experiments.<name>` (see README.md); `benchmarks/` scripts use
the same entry point. Importing this package first makes a Ctrl-C during a CLI's imports end
the process at once (`console.exit_on_early_interrupt`; nothing is written yet)."""
from vitprune import console

console.exit_on_early_interrupt("experiments", "benchmarks")
