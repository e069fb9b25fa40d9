#!/usr/bin/env bash
# A real personal HTCondor pool for local runs and tests, on a Debian machine, as root.
#
#   containers/minicondor/pool.sh up       # build (once) and start the pool
#   containers/minicondor/pool.sh run CMD  # run CMD inside the pool's root as its user
#   containers/minicondor/pool.sh down     # stop the pool and remove every mount
#
# Debian 12 has no HTCondor package, so the pool lives in a Debian 13 (trixie) root made by
# debootstrap (see ../shared/HTCONDOR_POOL.md). The host's Python prefix and this repository
# (with its .venv) are bind-mounted at the same paths inside, read-only, so jobs use the
# project's environment; $POOL_DIR/share is mounted read-write at the same path for runs.
# Idempotent: 'up' on a running pool does nothing, 'down' on a stopped one only cleans up.
set -euo pipefail

POOL_DIR=${LENSJOBS_POOL_DIR:-/var/tmp/lensjobs-pool}
ROOT=$POOL_DIR/root
SHARE=$POOL_DIR/share
POOL_USER=lensjobs
MIRROR=${LENSJOBS_DEBIAN_MIRROR:-http://deb.debian.org/debian}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
PYTHON_PREFIX=$(python3 -c 'import sys; print(sys.base_prefix)')
HERE=$(cd "$(dirname "$0")" && pwd)

log() { printf 'minicondor: %s\n' "$*" >&2; }

# A clean environment, as a fresh login on an access point has: variables of the caller
# (CONDOR_CONFIG=/dev/null, which importing the htcondor2 wheel sets, for one) stay out.
in_root() {
  chroot "$ROOT" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
    su "$POOL_USER" -c "$*"
}

bind() {  # bind SRC at the same path inside the root; MODE ro|rw
  local src=$1 mode=$2
  mkdir -p "$ROOT$src"
  mountpoint -q "$ROOT$src" && return
  mount --bind "$src" "$ROOT$src"
  [ "$mode" = ro ] && mount -o remount,ro,bind "$ROOT$src"
  return 0
}

unmount_all() {  # everything mounted under the root, deepest first
  [ -d "$ROOT" ] || return 0
  awk -v root="$ROOT" '$2 == root || index($2, root "/") == 1 {print $2}' /proc/mounts \
    | sort -r | while read -r point; do umount -l "$point"; done
}

build_root() {
  if [ -x "$ROOT/usr/sbin/condor_master" ] && [ -f "$POOL_DIR/.built" ]; then return; fi
  log "building a Debian trixie root with HTCondor in $ROOT (about a minute)"
  unmount_all
  rm -rf "$ROOT" "$POOL_DIR/.built"
  command -v debootstrap >/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  }
  debootstrap --variant=minbase trixie "$ROOT" "$MIRROR" >"$POOL_DIR/debootstrap.log" 2>&1
  mount -t proc proc "$ROOT/proc"
  mount --bind /dev "$ROOT/dev"
  cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
  chroot "$ROOT" bash -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends htcondor' >"$POOL_DIR/apt.log" 2>&1
  chroot "$ROOT" useradd -m -s /bin/bash "$POOL_USER"
  touch "$POOL_DIR/.built"
}

configure() {
  grep -q "^127.0.0.1 $(hostname)\$" "$ROOT/etc/hosts" || echo "127.0.0.1 $(hostname)" >>"$ROOT/etc/hosts"
  cp "$HERE/lensjobs-pool.conf" "$ROOT/etc/condor/config.d/99-lensjobs.conf"
  chroot "$ROOT" su "$POOL_USER" -c 'mkdir -p ~/condor/log ~/condor/spool ~/condor/execute ~/condor/lock ~/condor/run'
  chmod 755 "$ROOT/root"  # the host Python may live under /root
}

mount_all() {
  mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
  mountpoint -q "$ROOT/dev" || mount --bind /dev "$ROOT/dev"
  # Python's multiprocessing locks need a writable /dev/shm (a separate mount on the host).
  mountpoint -q "$ROOT/dev/shm" || mount -t tmpfs -o mode=1777 shm "$ROOT/dev/shm"
  mkdir -p "$SHARE" && chmod 1777 "$SHARE"
  bind "$PYTHON_PREFIX" ro
  bind "$REPO" ro
  bind "$SHARE" rw
}

# Live daemons only: exited ones can linger as zombies where PID 1 does not reap them.
running() { pgrep -x -r R,S,D condor_master >/dev/null 2>&1; }

up() {
  mkdir -p "$POOL_DIR"
  build_root
  mount_all
  configure
  if ! running; then
    in_root condor_master
  fi
  for _ in $(seq 60); do
    if in_root 'condor_status -af Name' 2>/dev/null | grep -q .; then
      log "pool up: $(in_root 'condor_status -af Name' | head -1); share: $SHARE"
      return
    fi
    sleep 2
  done
  log "the pool's slot did not appear within 120 s; see $ROOT/home/$POOL_USER/condor/log"
  exit 1
}

down() {
  # SIGTERM asks condor_master for a graceful shutdown of all its daemons.
  pkill -TERM -x condor_master 2>/dev/null || true
  for _ in $(seq 30); do running || break; sleep 1; done
  pkill -KILL -r R,S,D -f '^condor_' 2>/dev/null || true
  unmount_all
  log "pool down, mounts removed"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  run) shift; in_root "$*" ;;
  status) in_root 'condor_status; condor_q' ;;
  *) echo "usage: $0 up|down|status|run CMD" >&2; exit 2 ;;
esac
