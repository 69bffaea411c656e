"""Runs every benchmark in bench/ in turn; each prints its workload, figures and ratios."""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


# Helpers, not benchmarks.
HELPERS = {"run_all.py", "common.py", "identity_data.py"}


def main() -> int:
    """Runs each `bench/*.py` script except this one and the helpers; non-zero if any failed."""
    scripts = sorted(p for p in HERE.glob("*.py") if p.name not in HELPERS)
    failed = 0
    for script in scripts:
        print(f"\n=== {script.name} ===", flush=True)
        failed += subprocess.run([sys.executable, str(script)], check=False).returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
