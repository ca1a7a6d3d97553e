"""Lint: no module of the product code (pid_core/, nodes/) is longer than 350 lines, and no module
docstring is longer than 10 lines (what the module owns and where upstream's version lives;
history and rationale belong in commit messages or the README).

    python tools/check_sizes.py        # exit 1 and list the offenders
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

LIMIT = 350
DOC_LIMIT = 10
ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    bad = []
    for p in sorted([*ROOT.glob("pid_core/**/*.py"), *ROOT.glob("nodes/**/*.py")]):
        text = p.read_text()
        if (n := len(text.splitlines())) > LIMIT:
            bad.append(f"{p.relative_to(ROOT)}: {n} lines (limit {LIMIT}); split it by responsibility")
        body = ast.parse(text).body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            if (d := body[0].end_lineno - body[0].lineno + 1) > DOC_LIMIT:
                bad.append(f"{p.relative_to(ROOT)}: module docstring of {d} lines (limit {DOC_LIMIT})")
    for line in bad:
        print(line)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
