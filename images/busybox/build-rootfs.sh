#!/bin/sh
# Build a minimal busybox rootfs at OUTDIR from Debian's busybox-static package.
# Usage: images/busybox/build-rootfs.sh OUTDIR
# Rebuilds from scratch every run and swaps the result into place, so a crash
# can never leave a half-built tree at OUTDIR. Needs root (files owned by uid 0).
set -eu
umask 022

die() { echo "busybox/build-rootfs.sh: error: $*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: $0 OUTDIR"
[ "$(id -u)" -eq 0 ] || die "must run as root (the rootfs must be owned by real uid 0)"
out=${1%/}
parent=$(dirname "$out")
mkdir -p "$parent" || die "cannot create $parent"

# Build beside OUTDIR (same filesystem) so the final mv is a rename.
tmp=$(mktemp -d "$out.tmp.XXXXXX") || die "cannot create temp dir beside $out"
dl=$(mktemp -d "$out.dl.XXXXXX") || die "cannot create download dir beside $out"
trap 'rm -rf --one-file-system "$tmp" "$dl"' EXIT
trap 'exit 1' INT TERM HUP

# Fetch the .deb rather than installing it, so the host stays untouched.
# _apt must own the dir or apt falls back to unsandboxed download with a warning.
chown _apt "$dl" 2>/dev/null || true
if (cd "$dl" && apt-get download -q busybox-static >&2) && deb=$(ls "$dl"/busybox-static_*.deb 2>/dev/null); then
    dpkg-deb -x "$deb" "$tmp" || die "dpkg-deb -x failed on $deb"
elif [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; then
    # Offline fallback: only a static host busybox works without libc in the rootfs.
    echo "busybox/build-rootfs.sh: apt-get download failed, copying host /bin/busybox" >&2
    mkdir -p "$tmp/bin" && cp /bin/busybox "$tmp/bin/busybox"
else
    die "cannot get busybox-static: apt-get download failed and no static /bin/busybox on host"
fi
bb=$tmp/bin/busybox
[ -x "$bb" ] || die "no bin/busybox in the package"

mkdir -p "$tmp/bin" "$tmp/sbin" "$tmp/usr/bin" "$tmp/usr/sbin"
# Every applet in /bin so PATH-less callers and "/bin/foo" both work; plus the
# canonical FHS location from --list-full, which some scripts hard-code.
for a in $("$bb" --list); do
    [ "$a" = busybox ] || ln -sf /bin/busybox "$tmp/bin/$a"
done
for p in $("$bb" --list-full); do
    case $p in */*) ;; *) continue ;; esac  # skip top-level /linuxrc (initrd only)
    [ -e "$tmp/$p" ] || [ -L "$tmp/$p" ] || ln -s /bin/busybox "$tmp/$p"
done
[ -L "$tmp/bin/sh" ] || die "busybox has no sh applet"

mkdir -p "$tmp/etc" "$tmp/proc" "$tmp/dev" "$tmp/sys" "$tmp/run" "$tmp/var/tmp" \
         "$tmp/tmp" "$tmp/root" "$tmp/home/user"
chmod 1777 "$tmp/tmp" "$tmp/var/tmp"
chmod 0700 "$tmp/root"
chown 1000:1000 "$tmp/home/user"
chmod 0755 "$tmp"  # mktemp made it 0700

cat >"$tmp/etc/passwd" <<'PW'
root:x:0:0:root:/root:/bin/sh
user:x:1000:1000:user:/home/user:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PW
cat >"$tmp/etc/group" <<'GR'
root:x:0:
tty:x:5:
user:x:1000:
nogroup:x:65534:
GR
# Empty on purpose: the sandbox bind-mounts or writes its own at start.
: >"$tmp/etc/hostname"
: >"$tmp/etc/hosts"

# Swap in. Between the two renames OUTDIR is briefly absent, never partial.
if [ -e "$out" ]; then
    old=$(mktemp -d "$out.old.XXXXXX")
    mv -T "$out" "$old/x" || die "cannot move old $out aside"
    mv -T "$tmp" "$out" || { mv -T "$old/x" "$out"; die "cannot rename into $out"; }
    rm -rf --one-file-system "$old"
else
    mv -T "$tmp" "$out" || die "cannot rename into $out"
fi
echo "busybox rootfs ready at $out"
