#!/usr/bin/env bash
# The README's `npm ci && npm test` on a fresh machine: a minimal Debian 12 root (debootstrap) with
# nothing but this machine's Node and npm, its CA certificates and its global npm config, and a clean
# clone of HEAD. Two cases, each in its own copy of the root:
#   root  as root, with apt: the test command installs redis-server and chromium; every suite runs.
#   user  as a non-root user: nothing can be installed; the two suites that need them are skipped,
#         one line each, and the command exits 0.
#   ci    (only when asked for) .ci/run as root: CI mode, where a missing service would fail.
# Usage: scripts/fresh-machine-check.sh [root|user|ci|both]   (npm run test:fresh-machine -- user)
# Needs root on a Linux host (debootstrap, chroot, mount). Slow: not part of npm test or CI.
# FRESH_DIR (/tmp/ekf-fresh-machine) holds the roots; the Debian base is kept there for the next run
# (FRESH_REBUILD=1 builds it again). FRESH_TIMEOUT (1200 s) bounds each case's command. A case's root
# (1 to 2.5 GB) is removed when it passes (FRESH_KEEP=1 keeps it), kept for a look when it fails.
set -euo pipefail

project=$(cd "$(dirname "$0")/.." && pwd)
cases=${1:-both}
work=${FRESH_DIR:-/tmp/ekf-fresh-machine}
limit=${FRESH_TIMEOUT:-1200}
mirror=${FRESH_MIRROR:-http://deb.debian.org/debian}
suite=bookworm

say() { printf '\n=== %s\n' "$*"; }
die() {
  printf 'fresh-machine-check: %s\n' "$*" >&2
  exit 1
}

case $cases in root | user | ci) selected=("$cases") ;; both) selected=(root user) ;; *) die "unknown case '$cases' (root, user, ci or both)" ;; esac
[ "$(uname -s)" = Linux ] || die "needs a Linux host"
[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot and mount)"
sha=$(git -C "$project" rev-parse HEAD)
git -C "$project" diff --quiet HEAD -- || echo "note: uncommitted changes are not checked, only HEAD ($sha)"

# npm run puts the project's node_modules/.bin first (node 22 from the node dev dependency): the
# machine's own node and npm are what a new user has.
PATH=$(printf '%s' "$PATH" | tr ':' '\n' | grep -v '/node_modules/' | paste -sd: -)
# Where this machine's node and npm live (a Debian package here: /usr/bin/node, /usr/lib/node_modules/npm).
node_bin=$(readlink -f "$(command -v node)")
npm_links=("$(command -v npm)" "$(command -v npx)")
npm_dir=$(cd "$(dirname "$(readlink -f "${npm_links[0]}")")/.." && pwd)
npm_globalconfig=$(npm config get globalconfig)
[ "$("$node_bin" --version | cut -d. -f1)" = v20 ] || echo "note: the machine's node is $("$node_bin" --version), not 20"

mkdir -p "$work"
if [ -n "${FRESH_REBUILD:-}" ] || [ ! -d "$work/base" ]; then
  command -v debootstrap >/dev/null || {
    say "installing debootstrap (apt-get)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  }
  say "debootstrap --variant=minbase $suite from $mirror"
  rm -rf "$work/base" "$work/base.partial"
  debootstrap --variant=minbase "$suite" "$work/base.partial" "$mirror" >"$work/debootstrap.log" 2>&1 ||
    die "debootstrap failed, see $work/debootstrap.log"
  # The suites a Debian 12 install has (debootstrap writes the first only).
  printf 'deb %s %s main\n' "$mirror" "$suite" "$mirror" "$suite-updates" "${mirror%/debian}/debian-security" "$suite-security" \
    >"$work/base.partial/etc/apt/sources.list"
  mv "$work/base.partial" "$work/base"
fi

mounted=()
unmount_all() {
  local i
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount "${mounted[i]}" 2>/dev/null || umount -l "${mounted[i]}" || true; done
  mounted=()
}
trap unmount_all EXIT
trap 'exit 130' INT TERM

mount_into() { # mount_into ROOT: what node, npm and chromium need of /proc, /dev and /sys
  local root=$1
  mount -t proc proc "$root/proc"
  mounted+=("$root/proc")
  mount -t sysfs -o ro sysfs "$root/sys" 2>/dev/null || mount --bind -o ro /sys "$root/sys"
  mounted+=("$root/sys")
  mount -t devpts -o newinstance,ptmxmode=0666 devpts "$root/dev/pts"
  mounted+=("$root/dev/pts")
  mount -t tmpfs -o mode=1777,size=512m tmpfs "$root/dev/shm"
  mounted+=("$root/dev/shm")
}

# Never rm -rf a root with something still mounted in it (/proc, /sys, /dev/pts).
remove_root() { # remove_root ROOT
  if grep -q " $1/" /proc/mounts; then die "$1 still has mounts: not removed"; fi
  rm -rf "$1"
}

# Processes whose root is inside ROOT (started there by this script's command), by PID.
processes_in() { # processes_in ROOT
  local p
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/root" 2>/dev/null)" = "$1" ] && echo "${p#/proc/} $(tr '\0' ' ' <"$p/cmdline" 2>/dev/null | cut -c1-100)"
  done
  return 0
}

# Into a copy of the base: node and npm as this machine has them, nothing else; the CA certificates it
# trusts (the registries are reached through them) and the global npm config that points npm at them
# (cafile), with /usr/local/share/ca-certificates, from which an apt-installed ca-certificates rebuilds
# the bundle; resolv.conf; and a clean clone of HEAD in HOME, owned by OWNER (uid:gid).
prepare() { # prepare ROOT HOME OWNER
  local root=$1 home=$2 owner=$3
  local link
  mkdir -p "$root$(dirname "$node_bin")" "$root$(dirname "$npm_dir")"
  cp -a "$node_bin" "$root$node_bin"
  cp -a "$npm_dir" "$root$npm_dir"
  for link in "${npm_links[@]}"; do cp -a "$link" "$root$link"; done
  mkdir -p "$root/usr/local/share/ca-certificates" "$root/etc/ssl/certs"
  cp -a /usr/local/share/ca-certificates/. "$root/usr/local/share/ca-certificates/"
  cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  if [ -f "$npm_globalconfig" ]; then
    mkdir -p "$root$(dirname "$npm_globalconfig")"
    cp "$npm_globalconfig" "$root$npm_globalconfig"
  fi
  cp -L /etc/resolv.conf "$root/etc/resolv.conf"
  mkdir -p "$root$home"
  git clone -q --no-checkout --no-hardlinks "$project" "$root$home/project"
  git -C "$root$home/project" -c advice.detachedHead=false checkout -q --detach "$sha"
  chown -R "$owner" "$root$home"
}

summaries=()
failures=0
run_case() { # run_case root|user
  local name=$1 root="$work/$1" home user spec log rc start seconds
  say "case '$name': preparing $root (Debian $suite, node $("$node_bin" --version), npm $(npm --version), project $sha)"
  remove_root "$root"
  cp -a "$work/base" "$root"
  if [ "$name" != user ]; then
    user=root home=/root spec=0:0
  else
    user=tester home=/home/tester
    chroot "$root" useradd --create-home --shell /bin/bash "$user"
    spec="$(chroot "$root" id -u "$user"):$(chroot "$root" id -g "$user")"
  fi
  prepare "$root" "$home" "$spec"
  mount_into "$root"
  log="$work/$name.log"
  local command='npm ci && npm test'
  [ "$name" = ci ] && command=.ci/run
  say "case '$name': $command as $user, at most $limit s (log: $log)"
  start=$(date +%s)
  set +e
  timeout --kill-after=30 "$limit" chroot --userspec="$spec" "$root" /usr/bin/env -i HOME="$home" USER="$user" LOGNAME="$user" \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 TERM=dumb \
    /bin/bash -c "cd ~/project && $command" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  set -e
  seconds=$(($(date +%s) - start))
  local left
  left=$(processes_in "$root")
  if [ -n "$left" ]; then
    echo "left running in the root:"
    echo "$left"
    # Started by this case's command inside its own root: stopped by PID.
    echo "$left" | while read -r pid _; do kill -9 "$pid" 2>/dev/null || true; done
  fi
  unmount_all

  local tests skipped_lines installed problems=()
  tests=$(grep -E '^Tests: ' "$log" | sed 's/^Tests: *//' | paste -sd';' - | sed 's/;/; then /g')
  skipped_lines=$(grep -cE '^SKIPPED ' "$log" || true)
  installed=$(grep -c 'Test services: installing redis-server chromium with apt-get' "$log" || true)
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then problems+=("did not end within $limit s"); elif [ "$rc" != 0 ]; then problems+=("exit $rc"); fi
  [ -z "$left" ] || problems+=("processes left behind")
  if grep -qE '^FAILED ' "$log"; then problems+=("a suite failed for a missing service"); fi
  if [ "$name" != user ]; then
    [ "$installed" = 1 ] || problems+=("no install line")
    [ "$skipped_lines" = 0 ] || problems+=("$skipped_lines suites skipped")
    if grep -qE '^Tests: .*skipped' "$log"; then problems+=("tests skipped"); fi
  else
    [ "$installed" = 0 ] || problems+=("tried to install")
    grep -qE '^SKIPPED __tests__/redis-store\.test\.ts ' "$log" || problems+=("no SKIPPED line for redis-store")
    grep -qE '^SKIPPED __tests__/status-page\.test\.ts ' "$log" || problems+=("no SKIPPED line for status-page")
  fi
  local verdict=PASS
  if [ ${#problems[@]} -gt 0 ]; then
    verdict="FAIL (${problems[*]}; the root is kept: $root)"
    failures=$((failures + 1))
  elif [ -z "${FRESH_KEEP:-}" ]; then
    remove_root "$root"
  fi
  summaries+=("case '$name': $verdict in ${seconds} s ($command); tests: ${tests:-none}; SKIPPED lines: $skipped_lines")
}

for name in "${selected[@]}"; do run_case "$name"; done
say "fresh-machine check of $sha"
printf '%s\n' "${summaries[@]}"
[ "$failures" = 0 ]
