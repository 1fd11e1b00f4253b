#!/bin/sh
# Build a Debian bookworm minbase rootfs at OUTDIR with mmdebstrap.
# Usage: [EXTRA_PACKAGES="python3 ..."] images/debian/build-rootfs.sh OUTDIR
# Rebuilds from scratch every run and swaps the result into place, so a crash
# can never leave a half-built tree at OUTDIR. Needs root: --mode=root gives
# real uid-0 ownership, which the sandbox's idmapped mounts expect.
set -eu
umask 022

die() { echo "debian/build-rootfs.sh: error: $*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: $0 OUTDIR"
[ "$(id -u)" -eq 0 ] || die "must run as root (the rootfs must be owned by real uid 0)"
out=${1%/}
parent=$(dirname "$out")
mkdir -p "$parent" || die "cannot create $parent"

if ! command -v mmdebstrap >/dev/null 2>&1; then
    # CI starts from a fresh machine.
    apt-get install -y -q mmdebstrap >&2 || die "cannot install mmdebstrap"
fi

# Reuse the host's deb822 sources: they are what is known to reach an archive
# here (and the image keeps them for later apt-get). Without them mmdebstrap
# falls back to deb.debian.org + bookworm-updates + bookworm-security.
mirror=
[ -f /etc/apt/sources.list.d/debian.sources ] && mirror=/etc/apt/sources.list.d/debian.sources

# mmdebstrap wants a comma list; tolerate stray spaces.
include=$(echo "${EXTRA_PACKAGES:-}" | tr -s ' \t' ',,' | sed 's/^,//; s/,$//')

# Build beside OUTDIR (same filesystem) so the final mv is a rename.
tmp=$(mktemp -d "$out.tmp.XXXXXX") || die "cannot create temp dir beside $out"
# --one-file-system: never descend into a /proc or /dev mount a killed build left.
trap 'rm -rf --one-file-system "$tmp"' EXIT
trap 'exit 1' INT TERM HUP
# mktemp's 0700 would stop apt's unprivileged _apt user writing lists/partial.
chmod 0755 "$tmp"

# Check-Valid-Until off: mmdebstrap ignores the host's apt.conf.d, which turns
# it off because the mirror may be a pinned snapshot and bookworm-security's
# Release expires within a week. The option also lands in the image's apt.conf.
# Hook 1: mmdebstrap already drops lists/cache; be explicit since size matters.
# Hook 2: mmdebstrap copies the host's hostname/resolv.conf (with host modes);
# the image must not carry them, the sandbox supplies its own.
mmdebstrap --variant=minbase --mode=root \
    --aptopt='Acquire::Check-Valid-Until "false"' \
    ${include:+--include="$include"} \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/var/cache/apt/archives/*.deb' \
    --customize-hook='cd "$1"/etc && rm -f hostname hosts resolv.conf && : >hostname && : >hosts && : >resolv.conf && chmod 644 hostname hosts resolv.conf' \
    bookworm "$tmp" $mirror >&2 \
    || die "mmdebstrap failed (see messages above)"
[ -x "$tmp/bin/sh" ] || die "mmdebstrap produced no /bin/sh"

# Swap in. Between the two renames OUTDIR is briefly absent, never partial.
if [ -e "$out" ]; then
    old=$(mktemp -d "$out.old.XXXXXX")
    mv -T "$out" "$old/x" || die "cannot move old $out aside"
    mv -T "$tmp" "$out" || { mv -T "$old/x" "$out"; die "cannot rename into $out"; }
    rm -rf --one-file-system "$old"
else
    mv -T "$tmp" "$out" || die "cannot rename into $out"
fi
echo "debian rootfs ready at $out"
