#!/usr/bin/env bash
# Mutation testing of one area (tests/mutation/areas.txt) with mutmut, in a scratch copy of the
# tree, running only the tests the area lists (mutmut runs, per mutant, only those of them that
# reach the mutated function). Prints the score and the wall time; leaves the worktree alone.
#
#   tests/mutation/run.sh AREA [REV]      AREA: a line of areas.txt (or "all")
#                                         REV: a commit to measure (default: the working tree)
# Environment: MUTATION_JOBS (parallel mutants, default 2), MUTATION_KEEP=1 keeps the scratch
# copy (its path is printed) for `mutmut show NAME` / `mutmut results` there; MUTATION_NAMES
# runs only the mutants named (globs), e.g. an earlier run's survivors after tests were added;
# MUTATION_TESTS replaces the area's tests (a subset runs faster; its score is then a lower bound).
set -euo pipefail -o noglob  # the mutant name globs are for mutmut, not the shell
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
area="${1:?usage: tests/mutation/run.sh AREA [REV]  (areas: $(grep -v '^#' "$here/areas.txt" | cut -d'|' -f1 | xargs))}"
rev="${2:-}"
python="${MUTATION_PYTHON:-$repo/.venv/bin/python}"
if ! "$python" -c 'import mutmut' 2>/dev/null; then
    echo "mutmut is not installed: $python -m pip install -r requirements-mutation.txt" >&2
    exit 2
fi
if [ "$area" = all ]; then
    for one in $(grep -v '^#' "$here/areas.txt" | cut -d'|' -f1 | xargs); do
        "$0" "$one" $rev
    done
    exit 0
fi
line="$(grep -v '^#' "$here/areas.txt" | awk -F'|' -v a="$area" '{line = $0; gsub(/ /, "", $1)} $1 == a {print line}' || true)"
if [ -z "$line" ]; then
    echo "unknown area '$area'; the areas are: $(grep -v '^#' "$here/areas.txt" | cut -d'|' -f1 | xargs)" >&2
    exit 2
fi
files="$(echo "$line" | cut -d'|' -f2)"
names="${MUTATION_NAMES:-$(echo "$line" | cut -d'|' -f3)}"
tests="${MUTATION_TESTS:-$(echo "$line" | cut -d'|' -f4)}"
options="$(echo "$line" | cut -d'|' -f5)"

scratch="$(mktemp -d "${TMPDIR:-/tmp}/mutation-$area.XXXXXX")"
if [ -z "${MUTATION_KEEP:-}" ]; then trap 'rm -rf "$scratch"' EXIT; else echo "scratch copy: $scratch"; fi
if [ -n "$rev" ]; then
    git -C "$repo" archive "$rev" | tar -x -C "$scratch"
else
    (cd "$repo" && git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$scratch" 2>/dev/null || true)
fi
cp -r "$repo/data/." "$scratch/data/" 2>/dev/null || true  # the built CTF files, if any

present_files=() present_tests=()
for f in $files; do [ -e "$scratch/$f" ] && present_files+=("$f"); done
for t in $tests; do  # pytest options (--deselect=...) pass through; missing test files drop out
    if [[ "$t" == -* ]] || [ -e "$scratch/${t%%::*}" ]; then present_tests+=("$t"); fi
done
if [ ${#present_files[@]} -eq 0 ]; then echo "area $area: none of its files exist ($files)" >&2; exit 2; fi
{
    echo "[mutmut]"
    echo "source_paths="
    printf '    %s\n' quickstart ConvNet_MNIST.py
    echo "only_mutate="
    printf '    %s\n' "${present_files[@]}"
    echo "also_copy="
    (cd "$scratch" && set +f && printf '    %s\n' *)  # the whole tree: tests read files beside the code
    echo "pytest_add_cli_args_test_selection="
    printf '    %s\n' "${present_tests[@]}"
    for option in $options; do echo "$option"; done
    echo "pytest_add_cli_args="
    printf "    %s\n" -p no:cacheprovider
} > "$scratch/setup.cfg"

echo "area $area: mutating ${present_files[*]}"
echo "  with ${present_tests[*]}"
cd "$scratch"
start=$(date +%s)
run_names="$names"; [ "$(echo $names)" = "*" ] && run_names=""
"$python" -m mutmut run --max-children "${MUTATION_JOBS:-2}" $run_names > mutmut.log 2>&1 || {
    tail -30 mutmut.log; exit 1; }
wall=$(( $(date +%s) - start ))
"$python" "$here/score.py" "$area" "$wall" $names
