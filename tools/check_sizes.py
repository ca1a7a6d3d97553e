"""Lint: no module of the product code (pid_core/, nodes/) is longer than 350 lines.

    python tools/check_sizes.py        # exit 1 and list the offenders
"""

from __future__ import annotations

import sys
from pathlib import Path

LIMIT = 350
ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    long = [(p, n) for p in sorted([*ROOT.glob("pid_core/**/*.py"), *ROOT.glob("nodes/**/*.py")])
            if (n := len(p.read_text().splitlines())) > LIMIT]
    for p, n in long:
        print(f"{p.relative_to(ROOT)}: {n} lines (limit {LIMIT}); split it by responsibility")
    return 1 if long else 0


if __name__ == "__main__":
    sys.exit(main())
