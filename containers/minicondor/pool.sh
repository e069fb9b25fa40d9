#!/usr/bin/env bash
# A real personal HTCondor pool for local runs and tests, on a Debian machine, as root.
#
#   containers/minicondor/pool.sh up        # build (once) and start the pool
#   containers/minicondor/pool.sh run CMD   # run CMD inside the pool's root as its user
#   containers/minicondor/pool.sh root      # build the root only (make images uses it)
#   containers/minicondor/pool.sh down      # stop the pool and remove every mount
#   LENSJOBS_POOL_CPUS=8 containers/minicondor/pool.sh up   # advertise 8 CPUs (benchmarks)
#
# Debian 12 has no HTCondor package, so the pool lives in a Debian 13 (trixie) root made by
# debootstrap, with Apptainer from sid (see ../shared/HTCONDOR_POOL.md). Jobs run only from
# container images, as the pool's non-root user: nothing of this machine reaches them.
# The access-point side (lensjobs submit, DAGMan's POST scripts, the FINAL node) needs the
# installed lensjobs, so the host's Python prefix and this repository (with its .venv) are
# bind-mounted read-only at the same paths inside the root, and $POOL_DIR/share read-write
# at the same path for run directories. The root is entered with pivot_root in a private
# mount namespace: Apptainer refuses to run inside a plain chroot.
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
# What the root holds; a root built from an older recipe is built again.
ROOT_RECIPE="trixie htcondor apptainer(sid) squashfuse debootstrap exit_37.sif v3"
MASTER_PID=$ROOT/home/$POOL_USER/condor/run/master.pid

log() { printf 'minicondor: %s\n' "$*" >&2; }

# Run a command with the root as / (pivot_root in a private mount namespace), in a clean
# environment as a fresh login on an access point has: variables of the caller
# (CONDOR_CONFIG=/dev/null, which importing the htcondor2 wheel sets, for one) stay out.
# Mounts made here vanish with the namespace; the bind mounts of mount_all() come along.
enter() {
  unshare -m --propagation private bash -euc '
    root=$1; shift
    mount --rbind "$root" "$root"
    mount -t proc proc "$root/proc"
    mount --rbind /dev "$root/dev"
    mount -t sysfs sysfs "$root/sys"
    # Apptainer builds want /tmp to be a mount point; the root'"'"'s own /tmp bound onto itself
    # keeps paths bound below it (a checkout in /tmp) visible.
    mount --rbind "$root/tmp" "$root/tmp"
    # Apptainer mounts images with squashfuse as the pool user: a FUSE node open to all, as
    # stock Debian has it, for this namespace only (this machine keeps its own at 0600).
    mkdir -p "$root/run/lensjobs-fuse"
    mount -t tmpfs -o size=64k,mode=755 fuse "$root/run/lensjobs-fuse"
    mknod -m 666 "$root/run/lensjobs-fuse/fuse" c 10 229
    mount --bind "$root/run/lensjobs-fuse/fuse" "$root/dev/fuse"
    cd "$root"
    mkdir -p .oldroot
    pivot_root . .oldroot
    umount -l /.oldroot
    cd /
    exec /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      LANG=C.UTF-8 "$@"' enter "$ROOT" "$@"
}

in_root() { enter su "$POOL_USER" -c "$*"; }

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
  if [ -x "$ROOT/usr/bin/apptainer" ] && [ "$(cat "$POOL_DIR/.built" 2>/dev/null)" = "$ROOT_RECIPE" ]; then
    return
  fi
  log "building a Debian trixie root with HTCondor and Apptainer in $ROOT (about a minute)"
  unmount_all
  rm -rf "$ROOT" "$POOL_DIR/.built"
  command -v debootstrap >/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  }
  debootstrap --variant=minbase trixie "$ROOT" "$MIRROR" >"$POOL_DIR/debootstrap.log" 2>&1
  cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
  echo "127.0.0.1 $(hostname)" >>"$ROOT/etc/hosts"
  # Trixie has no Apptainer; sid does. A low pin keeps everything else from trixie.
  echo "deb $MIRROR sid main" >"$ROOT/etc/apt/sources.list.d/sid.list"
  printf 'Package: *\nPin: release n=sid\nPin-Priority: 100\n' >"$ROOT/etc/apt/preferences.d/sid"
  # The mirror's sid Release file is past its Valid-Until date.
  enter bash -c 'apt-get -o Acquire::Check-Valid-Until=false update -qq \
    && export DEBIAN_FRONTEND=noninteractive \
    && apt-get install -y -qq --no-install-recommends htcondor debootstrap ca-certificates \
    && apt-get install -y -qq --no-install-recommends -t sid apptainer squashfuse' \
    >"$POOL_DIR/apt.log" 2>&1 || { log "installing packages failed; see $POOL_DIR/apt.log"; exit 1; }
  # The startd advertises HasSIF only once `apptainer exec -C exit_37.sif /exit_37` exits 37;
  # Debian's htcondor ships the test's sandbox but not that image.
  enter apptainer -s build /usr/libexec/condor/exit_37.sif /usr/libexec/condor/singularity_test_sandbox
  # useradd also gives the user subordinate ids: Apptainer's --fakeroot builds need them.
  enter useradd -m -s /bin/bash "$POOL_USER"
  echo "$ROOT_RECIPE" >"$POOL_DIR/.built"
}

configure() {
  grep -q " $(hostname)\$" "$ROOT/etc/hosts" || echo "127.0.0.1 $(hostname)" >>"$ROOT/etc/hosts"
  cp "$HERE/lensjobs-pool.conf" "$ROOT/etc/condor/config.d/99-lensjobs.conf"
  # Workflow benchmarks whose jobs mostly wait (start-up, transfers) may advertise more
  # CPUs than the machine has; tests use the default.
  if [ -n "${LENSJOBS_POOL_CPUS:-}" ]; then
    [[ "$LENSJOBS_POOL_CPUS" =~ ^[1-9][0-9]*$ ]] || { log "LENSJOBS_POOL_CPUS must be a positive integer"; exit 2; }
    echo "NUM_CPUS = $LENSJOBS_POOL_CPUS" >>"$ROOT/etc/condor/config.d/99-lensjobs.conf"
  fi
  in_root 'mkdir -p ~/condor/log ~/condor/spool ~/condor/execute ~/condor/lock ~/condor/run'
  chmod 755 "$ROOT/root"  # the host Python may live under /root
}

mount_all() {
  mkdir -p "$SHARE" && chmod 1777 "$SHARE"
  bind "$PYTHON_PREFIX" ro
  bind "$REPO" ro
  bind "$SHARE" rw
}

# The pid in condor_master's pid file, if that process still lives (exited daemons can
# linger as zombies where PID 1 does not reap them, so zombies count as gone).
master_pid() {
  local pid
  pid=$(cat "$MASTER_PID" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
  [ "$(awk '{print $3}' "/proc/$pid/stat")" != Z ]  && echo "$pid"
}

descendants() {  # every live process below PID, by parent links
  local pid=$1 child
  for child in $(awk -v p="$pid" '$4 == p {print $1}' /proc/[0-9]*/stat 2>/dev/null); do
    echo "$child"
    descendants "$child"
  done
}

up() {
  mkdir -p "$POOL_DIR"
  build_root
  mount_all
  configure
  if ! master_pid >/dev/null; then
    in_root "condor_master -pidfile $MASTER_PID_IN_ROOT"
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
  local pid
  if pid=$(master_pid); then
    # SIGTERM asks condor_master for a graceful shutdown of all its daemons.
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 30); do master_pid >/dev/null || break; sleep 1; done
    # A master still alive then is killed with what it started; one that exited took its
    # daemons with it, and its old pids may belong to others by now.
    if master_pid >/dev/null; then
      for p in $(descendants "$pid") "$pid"; do kill -KILL "$p" 2>/dev/null || true; done
    fi
  fi
  rm -f "$MASTER_PID"
  unmount_all
  log "pool down, mounts removed"
}

MASTER_PID_IN_ROOT=${MASTER_PID#"$ROOT"}

case "${1:-}" in
  up) up ;;
  down) down ;;
  root) mkdir -p "$POOL_DIR"; build_root; mount_all ;;
  run) shift; in_root "$*" ;;
  enter) shift; enter "$@" ;;
  status) in_root 'condor_status; condor_q' ;;
  *) echo "usage: $0 up|down|root|status|run CMD|enter CMD..." >&2; exit 2 ;;
esac
