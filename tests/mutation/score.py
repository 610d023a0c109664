"""Print one area's mutation score from mutmut's results in the current (scratch) directory.

Usage (run.sh calls it): python score.py AREA WALL_SECONDS [NAME_GLOB ...]
Timeouts count as killed (the mutant made the tests hang, which a user would notice); mutants
no listed test reaches count as survivors, since nothing would catch them. Each survivor is
printed with its diff so it can be killed by a test or listed as equivalent in README.md.
"""

import fnmatch
import subprocess
import sys
from collections import Counter

KILLED = {"killed", "timeout", "segfault", "caught by type check"}
NOT_RUN = {"skipped", "not checked", "check was interrupted by user"}


def main(area, wall, *globs):
    globs = [g for g in globs if g != "*"] or ["*"]
    mutmut = [sys.executable, "-m", "mutmut"]
    listing = subprocess.run(
        mutmut + ["results", "--all", "true"], capture_output=True, text=True, check=True
    ).stdout
    statuses = {}
    for line in listing.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if name and any(fnmatch.fnmatchcase(name, g) for g in globs):
            statuses[name] = status
    counts = Counter(statuses.values())
    judged = [n for n, s in statuses.items() if s not in NOT_RUN]
    killed = sum(1 for n in judged if statuses[n] in KILLED)
    score = 100.0 * killed / len(judged) if judged else 0.0
    detail = ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))
    print(
        f"area {area}: {killed}/{len(judged)} mutants killed = {score:.1f}% ({detail}); "
        f"wall time {wall} s"
    )
    from mutmut.mutation.diff_apply import find_mutant, get_diff_for_mutant

    for name in sorted(n for n in judged if statuses[n] not in KILLED):
        diff = get_diff_for_mutant(name, path=find_mutant(name).path)
        changed = [
            line
            for line in diff.splitlines()
            if line[:1] in "+-" and not line.startswith(("+++", "---"))
        ]
        print(f"  {statuses[name]}: {name}")
        for line in changed:
            print(f"      {line.strip()}")


if __name__ == "__main__":
    main(*sys.argv[1:])
