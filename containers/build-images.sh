#!/usr/bin/env bash
# Build the job images (`make images`): images/lensjobs-fit-<version>-<key>.sif and
# images/lensjobs-infer-<version>-<key>.sif, with links images/lensjobs-fit.sif and
# images/lensjobs-infer.sif to the newest, which `lensjobs submit` takes by default.
#
#   containers/build-images.sh [fit|infer|all]      (as root, on Debian)
#
# <key> is a hash of what goes into the image (its definition file, this script, the fit
# image for infer, pyproject.toml and the lensjobs package): an image whose key exists is not
# built again, and a changed image gets a new file name, as OSDF's caches need.
#
# Offline, from the package registries: pip collects lensjobs and its dependencies as wheels
# here (with this machine's pip configuration), then Apptainer builds from the definition
# files (Debian bookworm by debootstrap + those wheels) inside the personal pool's root as
# its unprivileged user with --fakeroot; this machine withholds a capability that
# Apptainer needs as root.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${LENSJOBS_IMAGE_DIR:-$REPO/images}
POOL="$REPO/containers/minicondor/pool.sh"
POOL_DIR=${LENSJOBS_POOL_DIR:-/var/tmp/lensjobs-pool}
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
MIRROR=${LENSJOBS_DEBIAN_MIRROR:-http://deb.debian.org/debian}

log() { printf 'images: %s\n' "$*" >&2; }

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$REPO/pyproject.toml")
commit=$(git -C "$REPO" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
if [ -n "$(git -C "$REPO" status --porcelain -- lensjobs pyproject.toml containers 2>/dev/null)" ]; then
  commit="$commit-modified"
fi

key_of() {  # key_of KIND: hash of everything that goes into that image
  local kind=$1
  {
    cd "$REPO"
    git ls-files -co --exclude-standard -- "containers/$kind/lensjobs-$kind.def" \
      containers/build-images.sh \
      pyproject.toml lensjobs | grep -v '__pycache__' | sort | xargs sha256sum
    if [ "$kind" = infer ]; then key_of fit; fi
  } | sha256sum | cut -c1-12
}

build() {  # build KIND EXTRA
  local kind=$1 extra=$2 key name work started
  key=$(key_of "$kind")
  name="lensjobs-$kind-$version-$key.sif"
  mkdir -p "$OUT"
  if [ -f "$OUT/$name" ]; then
    log "$name is up to date"
    ln -sfn "$name" "$OUT/lensjobs-$kind.sif"
    return
  fi
  started=$(date +%s)
  "$POOL" root
  work="$POOL_DIR/share/image-build-$kind-$$"
  rm -rf "$work"
  mkdir -p "$work"
  trap 'rm -rf "$work"' EXIT
  log "collecting the wheels of lensjobs$extra"
  "$PYTHON" -m pip wheel --quiet --disable-pip-version-check -w "$work/wheels" "$REPO$extra" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
  local args=(--build-arg "wheels=$work/wheels" --build-arg "version=$version"
    --build-arg "commit=$commit")
  if [ "$kind" = infer ]; then
    cp "$(readlink -f "$OUT/lensjobs-fit.sif")" "$work/fit.sif"
    args+=(--build-arg "fit=$work/fit.sif")
  else
    args+=(--build-arg "mirror=$MIRROR")
  fi
  chmod -R a+rwX "$work"
  log "building $name (apptainer build --fakeroot, in the pool's root)"
  "$POOL" enter su lensjobs -c "cd $work && apptainer build --fakeroot ${args[*]} \
    $work/$name $REPO/containers/$kind/lensjobs-$kind.def" >"$work/build.log" 2>&1 || {
    tail -n 20 "$work/build.log" >&2
    log "building $name failed"
    exit 1
  }
  mv "$work/$name" "$OUT/$name.partial"
  mv "$OUT/$name.partial" "$OUT/$name"
  ln -sfn "$name" "$OUT/lensjobs-$kind.sif"
  rm -rf "$work"
  trap - EXIT
  log "built $OUT/$name ($(du -m "$OUT/$name" | cut -f1) MB) in $(($(date +%s) - started)) s"
}

case "${1:-all}" in
  fit) build fit "" ;;
  infer | all)  # the infer image starts from the fit image
    build fit ""
    build infer "[infer]"
    ;;
  *) echo "usage: $0 [fit|infer|all]" >&2; exit 2 ;;
esac
