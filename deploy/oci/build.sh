#!/usr/bin/env bash
# fedsilo's OCI image without a container registry: a Debian minbase root filesystem made
# by debootstrap from Debian's own packages (the machine's configured Debian mirror), plus
# the one `fedsilo` binary and a non-root user, committed to an OCI image with buildah.
#
#   deploy/oci/build.sh [--binary PATH] [--tag NAME] [--archive FILE.tar] [--rootfs-cache DIR]
#
#   --binary        the fedsilo binary to put in the image (default target/release/fedsilo;
#                   it links only glibc — libc, libm, libgcc_s — which minbase carries)
#   --tag           the image name in buildah's local storage (default localhost/fedsilo:oci)
#   --archive       also write the image as an OCI archive (`buildah push … oci-archive:`),
#                   loadable with `podman load -i` or `skopeo copy oci-archive:…`
#   --rootfs-cache  where the debootstrapped root filesystem is kept and reused (default
#                   target/oci-rootfs); delete it to take newer Debian packages
#
# Environment: FEDSILO_DEBIAN_SUITE (default: this machine's VERSION_CODENAME, else bookworm),
# FEDSILO_DEBIAN_MIRROR (default: the first Debian URI in /etc/apt/sources*, else
# http://deb.debian.org/debian).
#
# Needs root (debootstrap, buildah's storage), debootstrap and buildah
# (`apt-get install debootstrap buildah`). The image: Debian minbase + ca-certificates,
# /usr/local/bin/fedsilo, user fedsilo (uid/gid 10001) with home /var/lib/fedsilo, run as
# 10001:10001, entrypoint fedsilo, ports 50051 (gRPC) and 9443 (operations listener) —
# the same contract as deploy/Dockerfile. Prints the image id on its last line.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
binary="$repo/target/release/fedsilo"
tag="localhost/fedsilo:oci"
archive=""
cache="$repo/target/oci-rootfs"
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary="$2"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    --archive) archive="$2"; shift 2 ;;
    --rootfs-cache) cache="$2"; shift 2 ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
die() { echo "build.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (debootstrap and buildah's storage)"
command -v debootstrap >/dev/null || die "no debootstrap (apt-get install debootstrap)"
command -v buildah >/dev/null || die "no buildah (apt-get install buildah)"
[ -x "$binary" ] || die "no fedsilo binary at $binary (cargo build --release --bin fedsilo)"

suite="${FEDSILO_DEBIAN_SUITE:-}"
if [ -z "$suite" ]; then
  suite="$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")"
  suite="${suite:-bookworm}"
fi
mirror="${FEDSILO_DEBIAN_MIRROR:-}"
if [ -z "$mirror" ]; then
  mirror="$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null \
    | sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\/debian\)$/\1/p' | head -n1)"
fi
if [ -z "$mirror" ]; then
  mirror="$(sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]*\/debian\)[[:space:]].*/\2/p' \
    /etc/apt/sources.list 2>/dev/null | head -n1)"
fi
mirror="${mirror:-http://deb.debian.org/debian}"

# 1. The root filesystem, made once and reused (the marker is written last, so an
#    interrupted debootstrap is never taken for a finished one).
rootfs="$cache/$suite"
if [ ! -e "$rootfs/.fedsilo-rootfs-complete" ]; then
  echo "build.sh: debootstrap --variant=minbase $suite from $mirror into $rootfs" >&2
  rm -rf "$rootfs.building"
  mkdir -p "$cache"
  debootstrap --variant=minbase --include=ca-certificates "$suite" "$rootfs.building" "$mirror" >&2
  # What an image does not need: downloaded packages, apt lists, documentation.
  rm -rf "$rootfs.building"/var/cache/apt/archives/*.deb "$rootfs.building"/var/lib/apt/lists/* \
    "$rootfs.building"/usr/share/doc/* "$rootfs.building"/usr/share/man/* \
    "$rootfs.building"/usr/share/info/* "$rootfs.building"/usr/share/locale/*
  # The non-root user, made by the image's own useradd.
  chroot "$rootfs.building" useradd --uid 10001 --user-group --home-dir /var/lib/fedsilo \
    --create-home --shell /usr/sbin/nologin fedsilo
  printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' \
    > "$rootfs.building/etc/hosts"
  touch "$rootfs.building/.fedsilo-rootfs-complete"
  rm -rf "$rootfs"
  mv "$rootfs.building" "$rootfs"
else
  echo "build.sh: reusing $rootfs" >&2
fi

# 2. The image: scratch + the root filesystem + the binary, configured and committed.
ctr="$(buildah from scratch)"
trap 'buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
mnt="$(buildah mount "$ctr")"
cp -a "$rootfs/." "$mnt/"
rm -f "$mnt/.fedsilo-rootfs-complete"
install -m 0755 "$binary" "$mnt/usr/local/bin/fedsilo"
buildah umount "$ctr" >/dev/null
buildah config \
  --user 10001:10001 \
  --workingdir /var/lib/fedsilo \
  --entrypoint '["/usr/local/bin/fedsilo"]' \
  --cmd '--help' \
  --port 50051 --port 9443 \
  --label org.opencontainers.image.title=fedsilo \
  --label org.opencontainers.image.description="fedsilo on Debian $suite minbase (debootstrap), no registry" \
  "$ctr"
id="$(buildah commit --quiet --rm "$ctr" "$tag")"
trap - EXIT
if [ -n "$archive" ]; then
  buildah push --quiet "$tag" "oci-archive:$archive:$tag" >&2
  echo "build.sh: wrote $archive" >&2
fi
echo "build.sh: committed $tag" >&2
echo "$id"
