#!/usr/bin/env bash
# Runs inside the cgroup v2 VM (tools/v2vm/run-in-vm.sh -d SIZE): the
# guest's root is the host's, read-only over 9p, whose files cannot be
# idmapped (nor can tmpfs on the guest's 6.1 kernel), so the rootfs images
# are copied onto an ext4 file system made on the VM's scratch disk first.
#   in-guest.sh PYTHON PYTEST-ARGS...
set -euo pipefail
py=$1
shift
[ "${V2VM_GUEST:-}" = 1 ] || { echo "in-guest.sh: run me through tools/v2vm/run-in-vm.sh" >&2; exit 2; }
mkfs.ext4 -q -F /dev/vda
mkdir -p /mnt/sbx
mount /dev/vda /mnt/sbx
src=${SANDBOX_ROOTFS_DIR:-/var/lib/sandbox/rootfs}
mkdir -p /mnt/sbx/rootfs /mnt/sbx/home
for name in busybox debian; do
    [ -d "$src/$name" ] && cp -a "$src/$name" /mnt/sbx/rootfs/
done
export SANDBOX_ROOTFS_DIR=/mnt/sbx/rootfs SANDBOX_HOME=/mnt/sbx/home
exec "$py" -m pytest -p no:cacheprovider "$@"
