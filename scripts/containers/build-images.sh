#!/usr/bin/env bash
# Build, under podman and without Docker Hub, the images docker-compose.yml runs:
#
#   localhost/pfednas-base:bookworm   Debian bookworm (debootstrap, offline from the apt mirror)
#   flwr/superlink:1.41.0             local stand-ins for Flower's images (flwr.Containerfile):
#   flwr/supernode:1.41.0               same entrypoints, user app (uid 49999), /python/venv
#   flwr/superexec:1.41.0-py3.11-bookworm
#   pfednas:latest                    the project's Dockerfile on the superexec stand-in
#
#   scripts/containers/build-images.sh            # builds what is missing
#   scripts/containers/build-images.sh --rebuild  # builds everything again, no layer cache
#   scripts/containers/build-images.sh --platform linux/arm64   # the same set for arm64
#
# Another platform than the machine's builds the same images from the same files, each
# tag ending in -<arch> (localhost/pfednas:latest-arm64, docker.io/flwr/supernode:1.41.0-arm64,
# ...), and runs their build steps under QEMU user emulation: qemu-user-static's binfmt
# handler, registered with the F flag so that containers use it (installed and enabled
# here when missing; needs root). Debian's arm64 packages and PyPI's aarch64 wheels.
#
# The base and the Flower stand-ins are built once; pfednas:latest goes through
# `podman build` every time: its layer cache makes that seconds when nothing changed,
# and a changed source rebuilds from the COPY steps on (PyTorch's layer stays).
#
# Installs podman, runc and debootstrap with apt-get when they are missing (needs root).
# pip inside the builds uses the host's own pip settings (index, local wheel folders, CA
# bundle; see pip_build_config.py): nothing of them stays in an image. PyTorch comes from
# that index (PyPI's build: the CPU index download.pytorch.org is not assumed reachable).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$HERE/containers.conf}"

FLWR_VERSION="${FLWR_VERSION:-1.41.0}"
FLWR_IMAGE_VARIANT="py3.11-bookworm"
BASE_IMAGE="localhost/pfednas-base:bookworm"
PFEDNAS_IMAGE="localhost/pfednas:${PFEDNAS_TAG:-latest}"
# docker.io names: the compose file's short names resolve to them, locally, as under Docker.
FLWR_IMAGES=(superlink supernode superexec)
STANDIN_LABEL="org.opencontainers.image.description=pfednas local stand-in for Flower's image"
REBUILD=0
NO_CACHE=()
PLATFORM=""
say() { echo "[containers] $*"; }
usage() { echo "usage: $0 [--rebuild] [--platform linux/amd64|linux/arm64]" >&2; exit 2; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --rebuild) REBUILD=1; NO_CACHE=(--no-cache) ;;
    --platform) [[ $# -ge 2 ]] || usage; PLATFORM="$2"; shift ;;
    *) usage ;;
  esac
  shift
done

# The machine's own architecture in Debian's and OCI's spelling (amd64, arm64).
host_arch() {
  case "$(uname -m)" in x86_64) echo amd64 ;; aarch64) echo arm64 ;; *) uname -m ;; esac
}
ARCH="$(host_arch)"
if [[ -n "$PLATFORM" ]]; then
  case "$PLATFORM" in
    linux/amd64) ARCH=amd64 ;;
    linux/arm64) ARCH=arm64 ;;
    *) say "no image for platform $PLATFORM: linux/amd64 and linux/arm64 are the ones built" >&2
       exit 2 ;;
  esac
fi
# Every tag of a foreign platform ends in -<arch>; the machine's own keep their names.
SUFFIX=""
[[ "$ARCH" == "$(host_arch)" ]] || SUFFIX="-$ARCH"
PLATFORM_ARGS=(--platform "linux/$ARCH")
# Bookworm's QEMU (7.2) shows an emulated process this machine's own /proc/cpuinfo, on
# which PyTorch's CPU detection (cpuinfo) crashes at import: the steps that import it see
# an arm64 core's (arm64-cpuinfo, a Cortex-A76) instead. A native build needs nothing.
EMULATION_MOUNTS=()
[[ -z "$SUFFIX" || "$ARCH" != arm64 ]] \
  || EMULATION_MOUNTS=(-v "$HERE/arm64-cpuinfo:/proc/cpuinfo:ro")
BASE_IMAGE="${BASE_IMAGE}${SUFFIX}"
PFEDNAS_IMAGE="${PFEDNAS_IMAGE}${SUFFIX}"

flwr_tag() {  # the stand-in's name for one of FLWR_IMAGES
  if [[ "$1" == superexec ]]; then
    echo "docker.io/flwr/superexec:${FLWR_VERSION}-${FLWR_IMAGE_VARIANT}${SUFFIX}"
  else
    echo "docker.io/flwr/$1:${FLWR_VERSION}${SUFFIX}"
  fi
}

ensure_tools() {
  local missing=()
  command -v podman >/dev/null || missing+=(podman)
  command -v runc >/dev/null || missing+=(runc)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  if [[ -n "$SUFFIX" ]] && ! command -v "qemu-$(qemu_cpu)-static" >/dev/null; then
    missing+=(qemu-user-static binfmt-support)
  fi
  if [[ ${#missing[@]} -gt 0 ]]; then install_tools "${missing[@]}"; fi
  if [[ -n "$SUFFIX" ]]; then ensure_emulation; fi
}

qemu_cpu() { case "$ARCH" in arm64) echo aarch64 ;; amd64) echo x86_64 ;; esac; }

# QEMU's binfmt handler for $ARCH, enabled and with the F flag (the interpreter is opened
# at registration, so it also runs inside containers, which do not have it).
ensure_emulation() {
  local handler="/proc/sys/fs/binfmt_misc/qemu-$(qemu_cpu)"
  if [[ ! -e /proc/sys/fs/binfmt_misc/register ]]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null \
      || { say "cannot mount binfmt_misc (needs root): no emulation for linux/$ARCH" >&2; exit 1; }
  fi
  if [[ ! -e "$handler" ]] || ! grep -q '^enabled' "$handler"; then
    update-binfmts --enable "qemu-$(qemu_cpu)" >/dev/null 2>&1 || true
  fi
  grep -q '^enabled' "$handler" 2>/dev/null \
    || { say "no binfmt handler for $(qemu_cpu) (qemu-user-static): cannot build linux/$ARCH" >&2
         exit 1; }
  grep -q '^flags:.*F' "$handler" \
    || { say "$handler has no F flag: containers of linux/$ARCH could not start" >&2; exit 1; }
  say "linux/$ARCH runs here under QEMU user emulation ($handler)"
}

install_tools() {
  if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
    say "missing: $*; install them (Debian: apt-get install $*)" >&2
    exit 1
  fi
  say "installing $* with apt-get"
  DEBIAN_FRONTEND=noninteractive apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"
}

needs_build() { [[ $REBUILD -eq 1 ]] || ! podman image exists "$1"; }

debian_mirror() {  # the bookworm mirror apt already uses on this machine
  if [[ -n "${PFEDNAS_DEBIAN_MIRROR:-}" ]]; then echo "$PFEDNAS_DEBIAN_MIRROR"; return; fi
  local mirror
  mirror=$(sed -E 's/\[[^]]*\]//' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
    | awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }')
  if [[ -z "$mirror" ]]; then
    mirror=$(awk '/^URIs:/ { uri = $2 } /^Suites:/ { for (i = 2; i <= NF; i++)
      if ($i == "bookworm") { print uri; exit } }' /etc/apt/sources.list.d/*.sources 2>/dev/null)
  fi
  [[ -n "$mirror" ]] || { say "no bookworm mirror in apt's sources; set PFEDNAS_DEBIAN_MIRROR" >&2; exit 1; }
  echo "$mirror"
}

build_base() {
  needs_build "$BASE_IMAGE" || { say "$BASE_IMAGE exists"; return; }
  local rootfs mirror
  rootfs=$(mktemp -d /var/tmp/pfednas-rootfs.XXXXXX)
  mirror=$(debian_mirror)
  say "debootstrap bookworm ($ARCH) from $mirror"
  debootstrap --arch="$ARCH" --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || { tail -20 "$rootfs.log" >&2; exit 1; }
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb
  tar -C "$rootfs" -c . | podman import --arch "$ARCH" --change 'CMD ["/bin/bash"]' - \
    "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs" "$rootfs.log"
}

# podman build arguments that give RUN steps the host's pip settings.
pip_mounts() {
  local dir="$1" folder
  local python="$REPO/.venv/bin/python"
  [[ -x "$python" ]] || python=python3
  PIP_BUILD_ARGS=(-v "$dir/pip.conf:/etc/pip.conf:ro" -v "$dir/ca.crt:/etc/ssl/certs/pfednas-build-ca.crt:ro")
  while read -r folder; do
    PIP_BUILD_ARGS+=(-v "$folder:$folder:ro")
  done < <("$python" "$HERE/pip_build_config.py" "$dir")
}

build_flwr() {
  local name
  for name in "${FLWR_IMAGES[@]}"; do
    needs_build "$(flwr_tag "$name")" || { say "$(flwr_tag "$name") exists"; continue; }
    say "building $(flwr_tag "$name") (stand-in)"
    podman build --pull=never "${PLATFORM_ARGS[@]}" "${NO_CACHE[@]}" "${PIP_BUILD_ARGS[@]}" \
      --build-arg "BASE_IMAGE=$BASE_IMAGE" \
      --build-arg "FLWR_VERSION=$FLWR_VERSION" --label "$STANDIN_LABEL flwr/$name" \
      --target "$name" -t "$(flwr_tag "$name")" -f "$HERE/flwr.Containerfile" "$HERE"
  done
}

build_pfednas() {
  local previous
  previous=$(podman image inspect --format '{{.Id}}' "$PFEDNAS_IMAGE" 2>/dev/null || true)
  say "building $PFEDNAS_IMAGE from Dockerfile (PyTorch from the host's pip index)"
  podman build --pull=never "${PLATFORM_ARGS[@]}" "${NO_CACHE[@]}" "${PIP_BUILD_ARGS[@]}" \
    "${EMULATION_MOUNTS[@]}" --build-arg "FLWR_VERSION=$FLWR_VERSION" \
    --build-arg "FLWR_IMAGE_VARIANT=${FLWR_IMAGE_VARIANT}${SUFFIX}" --build-arg TORCH_INDEX_URL= \
    -t "$PFEDNAS_IMAGE" -f "$REPO/Dockerfile" "$REPO"
  # The image it replaced, now untagged: removed (not if a container still uses it).
  if [[ -n "$previous" && "$(podman image inspect --format '{{.Id}}' "$PFEDNAS_IMAGE")" != "$previous" ]]; then
    podman rmi "$previous" >/dev/null 2>&1 || true
  fi
}

PIP_DIR=""
main() {
  ensure_tools
  local start
  PIP_DIR=$(mktemp -d /tmp/pfednas-pip.XXXXXX)
  trap 'rm -rf "$PIP_DIR"' EXIT
  pip_mounts "$PIP_DIR"
  start=$SECONDS
  local step=$SECONDS
  build_base
  say "base: $((SECONDS - step)) s"; step=$SECONDS
  build_flwr
  say "Flower stand-ins: $((SECONDS - step)) s"; step=$SECONDS
  build_pfednas
  say "pfednas: $((SECONDS - step)) s"
  say "images ready in $((SECONDS - start)) s:"
  podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' \
    | grep -E "pfednas|flwr/" | sed 's/^/  /'
}

main "$@"
