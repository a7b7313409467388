"""Run mutants outside mutmut's fork server: one pytest process per mutant.

mutmut 3's fork-server child sometimes crashes after a mutant's tests fail, and mutmut then
records "segfault" instead of a kill; it can also keep a result from before a test changed.
This runs each named mutant's covering test files (the files of the tests mutmut recorded for
its function in mutants/mutmut-stats.json, so tests added to those files since count too) with
MUTANT_UNDER_TEST set, and prints one line per mutant: NAME killed|survived|rcN.

    mutmut results | grep -E "survived|segfault" | sed 's/:.*//' > names.txt
    python tools/mutants_by_hand.py names.txt [--jobs 2] [--recorded-tests]

--recorded-tests runs only the tests mutmut recorded for the function (much faster where a covering
file holds slow tests; right when mutmut-stats.json is fresh, i.e. just after a `mutmut run`).

Copy changed test files into mutants/tests first (mutmut copies them only when it runs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", type=Path, help="file with one mutant name per line (mutmut's names)")
    parser.add_argument("--jobs", type=int, default=2, help="mutants run at once (default 2)")
    parser.add_argument("--recorded-tests", action="store_true", help="run only the tests mutmut recorded for the function, not their whole files")
    args = parser.parse_args()
    mutants = ROOT / "mutants"
    stats = json.loads((mutants / "mutmut-stats.json").read_text())["tests_by_mangled_function_name"]
    names = [line.split(":")[0].strip() for line in args.names.read_text().splitlines() if line.strip()]

    def run(name: str) -> str:
        function = name.rsplit("__mutmut_", 1)[0]
        recorded = sorted(set(stats.get(function, [])))
        files = recorded if args.recorded_tests else sorted({test.split("::")[0] for test in recorded})
        if not files:
            return f"{name} no-tests"
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:randomly", "-p", "no:cacheprovider", "-n", "0", "-m", "not slow and not gpu", *files],
            cwd=mutants, env=dict(os.environ, MUTANT_UNDER_TEST=name), capture_output=True, text=True,
        )
        return f"{name} {dict([(0, 'survived'), (1, 'killed')]).get(result.returncode, f'rc{result.returncode}')}"

    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        for line in pool.map(run, names):
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
