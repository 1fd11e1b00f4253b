#!/bin/sh
# What the host's mount table costs a start: cycle_cpu.py (full cycles back to
# back, and the machine's CPU per cycle) run from a private mount namespace
# (unshare -m) that holds N more mounts (tmpfs), against the same run from
# this namespace.  A sandbox's mount namespace is copied from the template
# (sandbox/_cext/launch_unsafe.c), so the two should match; before the
# template, each start copied every host mount and unmounted them again.
#   sh benchmarks/probes/host_mounts.sh [N=500] [S=6]     (root)
set -eu
N=${1:-500}
S=${2:-6}
PY=${PYTHON:-.venv/bin/python}
here=$(dirname "$0")
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
i=0
while [ "$i" -lt "$N" ]; do mkdir "$dir/$i"; i=$((i + 1)); done
echo "this namespace ($(wc -l < /proc/self/mountinfo) mounts):"
"$PY" "$here/cycle_cpu.py" "$S" noseccomp
unshare -m --propagation private sh -c '
    for d in "$1"/*; do mount -t tmpfs host-mounts-probe "$d"; done
    echo "a private namespace with $(wc -l < /proc/self/mountinfo) mounts:"
    "$2" "$3/cycle_cpu.py" "$4" noseccomp' sh "$dir" "$PY" "$here" "$S"
