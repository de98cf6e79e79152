"""One benchmark, two revisions, side by side: the training step of a git revision (default:
the commit before the seams refactor) against the working tree, in alternating rounds.

    python benchmarks/bench_revisions.py [--base REV] [--rounds 3] [-- ARGS for bench_train_step.py]

Each round runs ``benchmarks/bench_train_step.py`` once from each tree (a temporary git
worktree of REV, with its own ``src`` first on PYTHONPATH), alternating which goes first, and
reads its JSON. The median over rounds of each mode's seconds per step is reported for both,
with their ratio (working tree / base): 1.00 means no change.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parent.parent


def _run(tree: Path, extra: list[str], out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    cmd = [sys.executable, str(tree / "benchmarks" / "bench_train_step.py"), "--json", str(out), *extra]
    subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="b30a696", help="git revision to compare against")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="arguments for bench_train_step.py (after --)")
    args = parser.parse_args()
    extra = [a for a in args.extra if a != "--"]
    results: dict[str, list[dict]] = {"base": [], "tree": []}
    with tempfile.TemporaryDirectory() as tmp:
        base_tree = Path(tmp) / "base"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base_tree), args.base],
            check=True,
            capture_output=True,
        )
        try:
            trees = {"base": base_tree, "tree": ROOT}
            for index in range(args.rounds):
                order = ["base", "tree"] if index % 2 == 0 else ["tree", "base"]
                for name in order:
                    results[name].append(_run(trees[name], extra, Path(tmp) / f"{name}{index}.json"))
                    print(f"round {index + 1}/{args.rounds}: {name} done", file=sys.stderr)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base_tree)], check=False)
    modes = list(results["tree"][0]["seconds"])
    print(f"bench_train_step.py {' '.join(extra) or '(defaults)'}; {args.rounds} alternating rounds, median ms/step")
    print(f"{'mode':<10} {args.base:>10} {'tree':>10} {'tree/base':>10}")
    for mode in modes:
        base = median(r["seconds"][mode] for r in results["base"]) * 1000
        tree = median(r["seconds"][mode] for r in results["tree"]) * 1000
        print(f"{mode:<10} {base:>10.1f} {tree:>10.1f} {tree / base:>10.3f}")


if __name__ == "__main__":
    main()
