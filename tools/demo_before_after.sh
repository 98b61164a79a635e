#!/usr/bin/env bash
# Did a change alter the demo's results? Runs the demo (config/config.yaml, all 20 directions, every
# figure) from a clean copy of BASE (a commit) and of the working tree, then compares the two results
# folders bit for bit with tools/compare_results.py (timings and logs excepted).
#
#     tools/demo_before_after.sh BASE [OUT]      e.g. tools/demo_before_after.sh main /tmp/before-after
#
# Exit status: compare_results.py's (0: every file equal). About twice the demo's time (2 x ~60 s idle).
set -euo pipefail
base=${1:?usage: tools/demo_before_after.sh BASE [OUT]}
out=${2:-$(mktemp -d)}
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out/before" "$out/after"
git -C "$root" archive "$base" | tar -x -C "$out/before"
# the working tree as it is (tracked and untracked files git does not ignore)
(cd "$root" && git ls-files -co --exclude-standard -z | tar --null -T - -cf -) | tar -x -C "$out/after"
for side in before after; do
    (cd "$out/$side" && PYTHONPATH="$out/$side/workflow/scripts" python -m snakemake --cores 1 --resources gpu=1 \
        --quiet rules > "$out/$side.log" 2>&1) || { echo "the demo failed in $out/$side (log: $out/$side.log)"; exit 2; }
done
python "$root/tools/compare_results.py" "$out/before/results" "$out/after/results" --exclude 'logs/*' \
    --ignore-key seconds --ignore-key new_tokens_per_s --ignore-key tokens_per_second
