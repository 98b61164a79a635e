#!/usr/bin/env bash
# Install a single-node SLURM (Debian's slurm-wlm) plus munge for the
# `slurm`-marked tests (tests/slurm_cluster.py). Idempotent: exits 0 at once
# when everything is already there. Must run as root on Debian/Ubuntu.
# On failure prints ONE line to stderr and exits non-zero; callers may
# tolerate that (the slurm tests then skip themselves).
set -u

need_bins="slurmctld slurmd sbatch squeue sinfo scontrol srun munged munge"

all_present() {
    local b
    for b in $need_bins; do
        command -v "$b" >/dev/null 2>&1 || [ -x "/usr/sbin/$b" ] || return 1
    done
    return 0
}

if all_present; then
    exit 0
fi

fail() { echo "install-slurm.sh: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || fail "must run as root (no slurm binaries found, cannot apt-get install)"
command -v apt-get >/dev/null 2>&1 || fail "apt-get not available; install slurm-wlm and munge by hand"

export DEBIAN_FRONTEND=noninteractive
log=$(mktemp /tmp/install-slurm.XXXXXX.log)
{
    apt-get update -qq &&
    apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        slurm-wlm munge
} >"$log" 2>&1 || fail "apt-get install slurm-wlm munge failed (log: $log): $(tail -n 1 "$log")"

all_present || fail "packages installed but binaries still missing (log: $log)"
rm -f "$log"
exit 0
