#!/usr/bin/env bash
# Packaging checks, run by .ci/run after the test suite (as root, on Debian 12, without systemd as
# PID 1):
#   units    systemd-analyze verify and security (the exposure score may not rise), and the daemon
#            traced with strace: every system call it makes is inside the unit's SystemCallFilter,
#            no writable+executable memory (MemoryDenyWriteExecute), no socket family outside
#            RestrictAddressFamilies
#   deb      the .deb built once from the release binary; its contents; lintian without errors
#   install  `apt install ./lngpt-collector_*.deb` into a throwaway Debian root (debootstrap): files,
#            conffile, user, enabled units, the shipped config, the daemon socket-activated as the
#            service user, then remove (data kept) and purge (data gone)
#   image    a debian:bookworm-slim made with debootstrap, packaging/Containerfile built with
#            buildah (vfs, chroot isolation, --pull=never) from the same release binary, then run
# Usage: packaging/check.sh [units|deb|install|image ...]   (default: all, in that order)
# Everything temporary lives under one directory, deleted on exit.
# Time on 2 cores from nothing built: 639 s, of which the release build 498 and installing cargo-deb
# 67; with both done, about 1 to 3 minutes (debootstrap's download is most of it).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

# The figure `systemd-analyze security --offline=yes` gives lngpt-collector.service today (1.2, and 0.2
# for the one @resources call allowed, setpriority: the stream thread lowers its own priority).
MAX_EXPOSURE=1.4
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
target_dir=${CARGO_TARGET_DIR:-target}
bin="$repo/$target_dir/release/lngpt-collector"

passed=0
skipped=0
ok() { passed=$((passed + 1)); echo "ok: $*"; }
skip() { skipped=$((skipped + 1)); echo "SKIP: $*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
timed() {
  local label=$1 t0=$SECONDS
  shift
  echo "== $label"
  "$@"
  echo "== $label: $((SECONDS - t0)) s"
}

work=$(mktemp -d /var/tmp/lngpt-pkg-check.XXXXXX)
mounts=()
containers=()
cleanup() {
  set +e
  # Whatever a failed step left running (daemons, strace, the test's HTTP receiver): TERM first,
  # as strace passes no signal on while it traces and exits with its daemon.
  local j p
  for j in $(jobs -p); do
    for p in $(descendants "$j") "$j"; do kill -TERM "$p" 2>/dev/null; done
  done
  sleep 1
  for j in $(jobs -p); do
    for p in $(descendants "$j") "$j"; do kill -KILL "$p" 2>/dev/null; done
  done
  for c in "${containers[@]}"; do buildah_ rm "$c" >/dev/null 2>&1; done
  for m in "${mounts[@]}"; do umount -l "$m" 2>/dev/null; done
  if [ -d "$work/storage" ]; then
    buildah_ rmi --all --force >/dev/null 2>&1
    umount -l "$work/storage/vfs" 2>/dev/null
  fi
  # --one-file-system: never into anything still mounted in the throwaway root.
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT

# Every process below PID, children first or not: for signalling a process started through wrappers.
descendants() {
  local p
  for p in $(pgrep -P "$1"); do
    echo "$p"
    descendants "$p"
  done
}

# A TCP port free on loopback now (the daemon binds it a moment later: a tiny race, no more).
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

buildah_() { buildah --storage-driver vfs --root "$work/storage" --runroot "$work/run" "$@"; }

apt_install() {
  local missing=()
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

release_binary() {
  # Built once: the .deb and the image both take this binary.
  if [ ! -x "$bin" ] || [ -n "$(find src Cargo.toml Cargo.lock -newer "$bin" -print -quit)" ]; then
    cargo build --release --locked
  fi
}

# ---------------------------------------------------------------------------------------------
check_units() {
  apt_install systemd-analyze:systemd strace:strace python3:python3 pgrep:procps curl:curl
  local units=(systemd/lngpt-collector.service systemd/lngpt-collector.socket systemd/lngpt-collector-api.socket)
  # verify wants ExecStart='s binary where it says: point a copy at the release binary (the
  # installed units are verified as they are in the install step).
  local vdir="$work/verify" out
  mkdir -p "$vdir"
  for u in "${units[@]}"; do sed "s|/usr/bin/lngpt-collector|$bin|g" "$u" >"$vdir/${u##*/}"; done
  out=$(cd "$vdir" && systemd-analyze verify --man=no "${units[@]##*/}" 2>&1) || fail "systemd-analyze verify: $out"
  [ -z "$out" ] || fail "systemd-analyze verify complained: $out"
  ok "systemd-analyze verify: the three units"

  out=$(systemd-analyze security --offline=yes --no-pager systemd/lngpt-collector.service 2>&1) || true
  local score
  score=$(sed -n 's/.*Overall exposure level for lngpt-collector.service: \([0-9.]*\).*/\1/p' <<<"$out")
  [ -n "$score" ] || fail "no exposure level in: $out"
  python3 -c "import sys; sys.exit(0 if float('$score') <= $MAX_EXPOSURE else 1)" ||
    fail "exposure level rose to $score (at most $MAX_EXPOSURE): $(grep '✗' <<<"$out")"
  ok "systemd-analyze security --offline=yes: exposure $score (at most $MAX_EXPOSURE)"

  check_sandbox_fit
}

# The unit's SystemCallFilter=, MemoryDenyWriteExecute= and RestrictAddressFamilies= kill or cripple
# a daemon that needs more; systemd cannot apply them here, so strace shows what the daemon asks
# for while it serves: start, socket lines, a tailed file, SIGHUP, a webhook test, SIGTERM.
check_sandbox_fit() {
  local d="$work/sandbox"
  mkdir -p "$d/state" "$d/logs"
  python3 - "$d" <<'PY' &
import http.server, sys, threading
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
s = http.server.HTTPServer(("127.0.0.1", 0), H)
open(sys.argv[1] + "/port", "w").write(str(s.server_address[1]))
s.serve_forever()
PY
  local http_pid=$!
  for _ in $(seq 50); do [ -s "$d/port" ] && break; sleep 0.1; done
  local api_port
  api_port=$(free_port)
  cat >"$d/config.toml" <<EOF
state_dir = "$d/state"
[socket]
path = "$d/collector.sock"
[[file]]
path = "$d/logs/app.log"
[[webhook]]
name = "ops"
url = "http://127.0.0.1:$(cat "$d/port")/hook"
group_wait = "1s"
[api]
listen = "127.0.0.1:$api_port"
[log]
target = "stderr"
EOF
  echo '{"type":"log","level":"INFO","message":"from the file"}' >"$d/logs/app.log"
  # As an unprivileged user, as under User=: as root, SQLite would fchown its journal files to the
  # database's owner, a call the service (never root) does not make and the filter forbids.
  # setpriv execs strace, which is then the traced daemon's parent; strace ignores signals while
  # it traces a program, so they go to the daemon itself.
  chmod 0711 "$work"
  chown -R nobody:nogroup "$d"
  as_nobody() { setpriv --reuid=nobody --regid=nogroup --clear-groups "$@"; }
  setpriv --reuid=nobody --regid=nogroup --clear-groups strace -f -qq -o "$d/trace" "$bin" run --config "$d/config.toml" 2>"$d/daemon.log" &
  local tracer=$! daemon=
  for _ in $(seq 100); do [ -S "$d/collector.sock" ] && break; sleep 0.1; done
  daemon=$(pgrep -P "$tracer") || fail "no daemon under strace: $(tail -5 "$d/daemon.log")"
  printf '%s\n' '{"type":"cost","model":"gpt-4o","cost":0.01,"currency_symbol":"$"}' \
    '{"type":"performance","response_time":1.5,"status":"success","model":"gpt-4o"}' |
    as_nobody "$bin" send --socket "$d/collector.sock" >/dev/null
  echo '{"type":"log","level":"INFO","message":"appended"}' >>"$d/logs/app.log"
  # The HTTP API: a probe, a listing, an upload.
  local api="http://127.0.0.1:$api_port"
  curl -fsS "$api/healthz" >/dev/null || fail "GET /healthz: $(tail -5 "$d/daemon.log")"
  curl -fsS "$api/api/logs?per_page=5" >/dev/null || fail "GET /api/logs"
  echo '{"type":"log","level":"INFO","message":"over HTTP"}' |
    curl -fsS -H "Content-Type: application/json" --data-binary @- "$api/api/events" >/dev/null || fail "POST /api/events"
  kill -HUP "$daemon"
  sleep 1
  as_nobody strace -f -qq -o "$d/trace-alert" "$bin" alert test --config "$d/config.toml" >/dev/null
  kill -TERM "$daemon"
  wait "$tracer" || fail "the daemon under strace exited $?: $(tail -5 "$d/daemon.log")"
  kill "$http_pid" 2>/dev/null || true
  # ExecStartPre= runs in the same sandbox.
  as_nobody strace -f -qq -o "$d/trace-check" "$bin" check-config --quiet --config "$d/config.toml"

  # The unit's filter, expanded with systemd-analyze (groups nest).
  local filter
  filter=$(python3 - "$repo/systemd/lngpt-collector.service" <<'PY'
import subprocess, sys
def expand(group, seen=set()):
    out = subprocess.run(["systemd-analyze", "syscall-filter", "--no-pager", group],
                         capture_output=True, text=True, check=True).stdout
    names = set()
    for line in out.splitlines()[1:]:
        w = line.strip()
        if not w or w.startswith("#"):
            continue
        if w.startswith("@"):
            if w not in seen:
                seen.add(w); names |= expand(w, seen)
        else:
            names.add(w)
    return names
# As systemd reads them: the first line is the allow list, each later one adds to it or, with "~",
# takes from it, in order.
allowed = set()
for line in open(sys.argv[1]):
    if line.startswith("SystemCallFilter="):
        value = line.split("=", 1)[1].split()
        neg = value[0].startswith("~")
        if neg:
            value[0] = value[0][1:]
        for item in value:
            names = expand(item, set()) if item.startswith("@") else {item}
            if neg:
                allowed -= names
            else:
                allowed |= names
print(" ".join(sorted(allowed)))
PY
)
  python3 - "$filter" "$d/trace" "$d/trace-alert" "$d/trace-check" <<'PY' || fail "the daemon steps outside the unit's sandbox (above)"
import re, sys
allowed = set(sys.argv[1].split())
used, bad = set(), []
for path in sys.argv[2:]:
    for line in open(path):
        # "PID name(args) = ret" or "PID <... name resumed> ..."; signals and exits do not match.
        m = re.match(r"\d+\s+(?:<\.\.\. )?(\w+)", line)
        if not m:
            continue
        name = m.group(1)
        used.add(name)
        if name in ("mmap", "mprotect", "pkey_mprotect") and "PROT_WRITE" in line and "PROT_EXEC" in line:
            bad.append("writable and executable memory: " + line.strip())
        if name == "socket":
            fam = re.search(r"socket\((AF_\w+)", line)
            if fam and fam.group(1) not in ("AF_UNIX", "AF_INET", "AF_INET6"):
                bad.append("socket family outside RestrictAddressFamilies: " + line.strip())
outside = sorted(used - allowed)
for name in outside:
    bad.append("system call outside SystemCallFilter: " + name)
for b in bad:
    print(b)
print(f"{len(used)} distinct system calls, all inside the filter" if not bad else "", file=sys.stderr)
sys.exit(1 if bad else 0)
PY
  ok "strace: the daemon's system calls fit SystemCallFilter, MemoryDenyWriteExecute and RestrictAddressFamilies"
}

# ---------------------------------------------------------------------------------------------
deb_file() { ls -t "$repo/$target_dir"/debian/lngpt-collector_*.deb | head -n 1; }

check_deb() {
  apt_install lintian:lintian dpkg-shlibdeps:dpkg-dev objcopy:binutils
  packaging/build-deb.sh --no-build
  local deb
  deb=$(deb_file)
  local contents
  contents=$(dpkg-deb --contents "$deb" | awk '{print $6}')
  for path in ./usr/bin/lngpt-collector ./etc/lngpt-collector/config.toml \
    ./usr/lib/systemd/system/lngpt-collector.service ./usr/lib/systemd/system/lngpt-collector.socket \
    ./usr/lib/systemd/system/lngpt-collector-api.socket ./usr/lib/sysusers.d/lngpt-collector.conf \
    ./usr/share/man/man1/lngpt-collector.1.gz ./usr/share/man/man1/lngpt-collector-run.1.gz \
    ./usr/share/bash-completion/completions/lngpt-collector ./usr/share/zsh/vendor-completions/_lngpt-collector \
    ./usr/share/fish/vendor_completions.d/lngpt-collector.fish ./usr/share/doc/lngpt-collector/README.md \
    ./usr/share/doc/lngpt-collector/copyright ./usr/share/doc/lngpt-collector/examples/secrets.conf \
    ./usr/share/lngpt-collector/python/lngpt_collector/__init__.py \
    ./usr/share/lngpt-collector/python/pyproject.toml ./usr/share/lngpt-collector/python/_build/lngpt_build.py; do
    grep -qx "$path" <<<"$contents" || fail "$deb has no $path"
  done
  grep -q generate-docs <<<"$(zcat "$repo/$target_dir/release/docs/man/lngpt-collector.1.gz")" &&
    fail "the man page shows the hidden generate-docs"
  local info
  info=$(dpkg-deb --info "$deb")
  for want in " postinst" " prerm" " postrm" " conffiles" "Depends: .*libc6" "Depends: .*systemd | systemd-sysusers"; do
    grep -q -- "$want" <<<"$info" || fail "dpkg-deb --info has no '$want': $info"
  done
  ok "dpkg-deb: $(basename "$deb") holds the binary, units, sysusers, conffile, man pages, completions, docs, client and maintainer scripts"

  # Errors fail; warnings are printed. Tags that do not apply to this package:
  #   no-manual-page is not one; initial-upload-closes-no-bugs and the changelog tags are about
  #   Debian's own archive, which this package is not uploaded to.
  local out
  out=$(lintian --tag-display-limit 0 --suppress-tags no-changelog,debian-changelog-file-missing-or-wrong-name "$deb" 2>&1) || true
  [ -n "$out" ] && echo "$out"
  grep -q '^E:' <<<"$out" && fail "lintian reports errors"
  ok "lintian: no errors ($(grep -c '^W:' <<<"$out" || true) warnings)"
}

# ---------------------------------------------------------------------------------------------
# A minimal Debian 12 made by debootstrap, shared by the install test and the image's base.
# DEBIAN_BASE_TAR=/path/base.tar keeps it between runs (made if missing), to iterate faster.
debian_base() {
  [ -f "$work/base.tar" ] && return
  if [ -n "${DEBIAN_BASE_TAR:-}" ] && [ -f "$DEBIAN_BASE_TAR" ]; then
    cp "$DEBIAN_BASE_TAR" "$work/base.tar"
    return
  fi
  apt_install debootstrap:debootstrap
  debootstrap --variant=minbase bookworm "$work/base" "$DEBIAN_MIRROR" >"$work/debootstrap.log" 2>&1 ||
    fail "debootstrap: $(tail -5 "$work/debootstrap.log")"
  # As the official slim image: no package lists, no apt cache.
  rm -rf "$work/base/var/lib/apt/lists/"* "$work/base/var/cache/apt/"*.bin "$work/base/var/cache/apt/archives/"*.deb
  tar -C "$work/base" -cf "$work/base.tar" .
  rm -rf --one-file-system "$work/base"
  [ -z "${DEBIAN_BASE_TAR:-}" ] || cp "$work/base.tar" "$DEBIAN_BASE_TAR"
}

check_install() {
  debian_base
  local root="$work/root" deb
  deb=$(deb_file)
  mkdir "$root"
  tar -C "$root" -xf "$work/base.tar"
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  mount -t proc proc "$root/proc" && mounts+=("$root/proc")
  mount --bind /dev "$root/dev" && mounts+=("$root/dev")
  cp "$deb" "$root/tmp/"
  in_root() { chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive "$@"; }
  # No systemd runs here. The maintainer scripts act on units only when /run/systemd/system exists:
  # make it, and divert systemctl and deb-systemd-invoke to logging stand-ins (dpkg gives the
  # scripts its own PATH, so a stand-in earlier in PATH is not enough), so what the scripts would
  # start, restart and stop is seen. deb-systemd-helper, which enables the units, is the real one.
  mkdir -p "$root/run/systemd/system"
  for stub in systemctl deb-systemd-invoke; do
    # (dpkg-divert warns that renaming an Essential package's file is dangerous: not in a throwaway root.)
    in_root dpkg-divert --quiet --local --rename --add "/usr/bin/$stub" 2>/dev/null
    printf '#!/bin/sh\necho "%s $*" >>/var/log/systemd-calls\n' "$stub" >"$root/usr/bin/$stub"
    chmod 0755 "$root/usr/bin/$stub"
  done
  calls() { cat "$root/var/log/systemd-calls" 2>/dev/null; : >"$root/var/log/systemd-calls"; }
  in_root apt-get update -qq
  in_root apt-get install -y -qq --no-install-recommends "/tmp/$(basename "$deb")" >"$work/apt.log" 2>&1 ||
    fail "apt install ./$(basename "$deb"): $(tail -20 "$work/apt.log")"
  ok "apt install ./$(basename "$deb") into a fresh debootstrap root (dependencies from the mirror)"
  local log
  log=$(calls)
  grep -qx "deb-systemd-invoke start lngpt-collector.socket lngpt-collector.service" <<<"$log" ||
    fail "install did not start the socket and the service: $log"
  ok "postinst on install: starts lngpt-collector.socket and lngpt-collector.service"

  # An upgrade (the same version again: postinst configure <old version>): the service restarts,
  # the socket is neither stopped nor restarted, so clients wait in its backlog.
  in_root apt-get install -y -qq --reinstall "/tmp/$(basename "$deb")" >"$work/apt.log" 2>&1 ||
    fail "apt reinstall: $(tail -20 "$work/apt.log")"
  log=$(calls)
  grep -qx "deb-systemd-invoke try-restart lngpt-collector.service" <<<"$log" || fail "upgrade did not restart the service: $log"
  ! grep -E "(stop|restart|start) .*lngpt-collector\.socket" <<<"$log" || fail "upgrade touched the socket: $log"
  ok "postinst on upgrade: try-restart lngpt-collector.service only, the socket keeps listening"

  in_root dpkg-query -W -f='${Conffiles}\n' lngpt-collector | grep -q '/etc/lngpt-collector/config.toml' ||
    fail "config.toml is not a conffile"
  local passwd
  passwd=$(in_root getent passwd lngpt-collector) || fail "no user lngpt-collector"
  [[ "$passwd" == *":/var/lib/lngpt-collector:/usr/sbin/nologin" ]] || fail "user: $passwd"
  in_root getent group lngpt-collector >/dev/null || fail "no group lngpt-collector"
  # stat in the root: names from its /etc/passwd and /etc/group, not the host's.
  local mode
  mode=$(in_root stat -c '%a %U %G' /etc/lngpt-collector/config.toml)
  [ "$mode" = "640 root lngpt-collector" ] || fail "config.toml is $mode"
  [ -L "$root/etc/systemd/system/sockets.target.wants/lngpt-collector.socket" ] || fail "the socket is not enabled"
  [ -L "$root/etc/systemd/system/multi-user.target.wants/lngpt-collector.service" ] || fail "the service is not enabled"
  [ ! -e "$root/etc/systemd/system/sockets.target.wants/lngpt-collector-api.socket" ] || fail "the API socket is enabled"
  ok "installed: conffile, user and group (sysusers), config 0640 root:lngpt-collector, socket and service enabled, API socket not"

  # The unit as installed, against the files as installed.
  local out
  # --man=no: verify would run the host's man(1) for Documentation=, and a minbase root has none;
  # the man page's presence is checked in the deb step.
  out=$(systemd-analyze verify --man=no --root="$root" lngpt-collector.service lngpt-collector.socket lngpt-collector-api.socket 2>&1) ||
    fail "systemd-analyze verify in the root: $out"
  [ -z "$out" ] || fail "systemd-analyze verify in the root complained: $out"
  ok "systemd-analyze verify --root: the installed units against the installed binary"

  # What the service runs, as the service user, with the shipped config and a socket passed the
  # way lngpt-collector.socket passes it (FileDescriptorName=collector).
  in_root lngpt-collector check-config --quiet --config /etc/lngpt-collector/config.toml ||
    fail "check-config on the shipped config"
  # What StateDirectory= and RuntimeDirectory= would make.
  in_root install -d -m 0750 -o lngpt-collector -g lngpt-collector /var/lib/lngpt-collector
  in_root install -d -m 0755 -o lngpt-collector -g lngpt-collector /run/lngpt-collector
  # Both sockets, named as the two socket units name them; the API's on a free port (the chroot
  # shares the host's network).
  local api_port
  api_port=$(free_port)
  chroot "$root" setpriv --reuid=lngpt-collector --regid=lngpt-collector --init-groups \
    env -i PATH=/usr/bin:/bin \
    systemd-socket-activate -l /run/lngpt-collector/collector.sock -l "127.0.0.1:$api_port" --fdname=collector:api \
    /usr/bin/lngpt-collector run --config /etc/lngpt-collector/config.toml >"$work/service.log" 2>&1 &
  local activator=$!
  for _ in $(seq 100); do [ -S "$root/run/lngpt-collector/collector.sock" ] && break; sleep 0.1; done
  # The API's socket is already listening (systemd-socket-activate's); the answer proves the daemon
  # took it by its name instead of binding 127.0.0.1:8787 from the config.
  curl -fsS --retry 20 --retry-connrefused --retry-delay 0 --max-time 10 "http://127.0.0.1:$api_port/healthz" >/dev/null ||
    fail "GET /healthz on the passed API socket: $(tail -5 "$work/service.log")"
  out=$(echo '{"type":"log","level":"INFO","message":"installed"}' |
    in_root lngpt-collector send --config /etc/lngpt-collector/config.toml) || fail "send: $out $(cat "$work/service.log")"
  [ "$out" = "1 events accepted and stored, 0 lines rejected" ] || fail "send answered: $out"
  kill -TERM "$activator"
  wait "$activator" || fail "the socket-activated daemon exited $?: $(tail -5 "$work/service.log")"
  [ -s "$root/var/lib/lngpt-collector/collector.db" ] || fail "no store in /var/lib/lngpt-collector"
  [ "$(in_root stat -c '%U' /var/lib/lngpt-collector/collector.db)" = lngpt-collector ] || fail "store not owned by the user"
  ok "the shipped config serves: both sockets passed by name (collector, api), as lngpt-collector, a line stored in /var/lib/lngpt-collector, /healthz answered"

  calls >/dev/null
  in_root apt-get remove -y -qq lngpt-collector >"$work/apt.log" 2>&1 || fail "apt remove: $(tail "$work/apt.log")"
  log=$(calls)
  grep -q "deb-systemd-invoke stop lngpt-collector.service lngpt-collector.socket" <<<"$log" ||
    fail "remove did not stop the units: $log"
  [ -s "$root/var/lib/lngpt-collector/collector.db" ] || fail "remove deleted the data"
  [ -f "$root/etc/lngpt-collector/config.toml" ] || fail "remove deleted the conffile"
  [ ! -e "$root/usr/bin/lngpt-collector" ] || fail "remove left the binary"
  in_root apt-get purge -y -qq lngpt-collector >"$work/apt.log" 2>&1 || fail "apt purge: $(tail "$work/apt.log")"
  [ ! -e "$root/var/lib/lngpt-collector" ] || fail "purge left /var/lib/lngpt-collector"
  [ ! -e "$root/etc/lngpt-collector" ] || fail "purge left /etc/lngpt-collector"
  [ ! -e "$root/etc/systemd/system/sockets.target.wants/lngpt-collector.socket" ] || fail "purge left the socket enabled"
  in_root getent passwd lngpt-collector >/dev/null || fail "purge removed the system user"
  ok "remove stops the units, keeps data and conffile; purge deletes /var/lib/lngpt-collector, /etc/lngpt-collector and the unit links, keeps the user"

  for m in "${mounts[@]}"; do umount -l "$m"; done
  mounts=()
  rm -rf --one-file-system "$root"
}

# ---------------------------------------------------------------------------------------------
check_image() {
  apt_install buildah:buildah curl:curl
  debian_base
  # No registry here: the base image is the debootstrap root, committed under the name the
  # Containerfile pulls. The build stage runs on it too, with the release binary (PREBUILT=yes).
  local base ctr image=localhost/lngpt-collector:ci
  base=$(buildah_ from scratch)
  containers+=("$base")
  buildah_ add "$base" "$work/base.tar" / >/dev/null
  buildah_ config --cmd bash "$base"
  buildah_ commit -q "$base" docker.io/library/debian:bookworm-slim >/dev/null
  ok "base image docker.io/library/debian:bookworm-slim committed from debootstrap"

  buildah_ bud -q --pull=never --isolation chroot --format docker --layers=false \
    --build-arg RUST_IMAGE=docker.io/library/debian:bookworm-slim --build-arg PREBUILT=yes \
    -f packaging/Containerfile -t "$image" . >"$work/bud.log" 2>&1 || fail "buildah bud: $(tail -20 "$work/bud.log")"
  local config
  config=$(buildah_ inspect --type image "$image")
  for want in '"User": "lngpt-collector"' '/var/lib/lngpt-collector' '/run/lngpt-collector' 'healthz' \
    '"/usr/bin/lngpt-collector"'; do
    grep -q -- "$want" <<<"$config" || fail "the image's config has no $want"
  done
  ok "buildah bud packaging/Containerfile: user, volumes, healthcheck, entrypoint"

  ctr=$(buildah_ from "$image")
  containers+=("$ctr")
  local out
  out=$(buildah_ run --isolation chroot "$ctr" -- /usr/bin/lngpt-collector --version 2>&1)
  [[ "$out" == "lngpt-collector "* ]] || fail "--version in the image: $out"
  [ "$(buildah_ run --isolation chroot "$ctr" -- id -un)" = lngpt-collector ] || fail "the image does not run as lngpt-collector"
  buildah_ run --isolation chroot "$ctr" -- /usr/bin/lngpt-collector check-config --quiet \
    --config /etc/lngpt-collector/config.toml || fail "check-config in the image"
  ok "in the image, as lngpt-collector: --version ($out), check-config on the shipped config"

  # The daemon in the image, its socket directory bind-mounted, a line sent from outside.
  # (buildah run mounts its own per-container directory on every VOLUME except under /run, even
  # over a -v for the same path, so the state is looked for in the container, not bind-mounted.)
  local sock="$work/sock"
  mkdir -p "$sock"
  chown 10001:10001 "$sock"
  local port_8787=free
  if (exec 3<>/dev/tcp/127.0.0.1/8787) 2>/dev/null; then port_8787=busy; fi
  buildah_ run --isolation chroot -v "$sock:/run/lngpt-collector" \
    "$ctr" -- /usr/bin/lngpt-collector run --config /etc/lngpt-collector/config.toml >"$work/image.log" 2>&1 &
  local runner=$! daemon=
  for _ in $(seq 100); do [ -S "$sock/collector.sock" ] && break; sleep 0.1; done
  out=$(echo '{"type":"log","level":"INFO","message":"from outside the container"}' |
    "$bin" send --socket "$sock/collector.sock") || fail "send to the container: $out $(cat "$work/image.log")"
  [ "$out" = "1 events accepted and stored, 0 lines rejected" ] || fail "send answered: $out"
  # The budget API in the shared directory, as the app's container asks it (compose.yaml).
  for _ in $(seq 50); do [ -S "$sock/api.sock" ] && break; sleep 0.1; done
  out=$(curl -s --unix-socket "$sock/api.sock" http://localhost/api/budget) || fail "the API socket: $(tail -5 "$work/image.log")"
  grep -q '"allowed":true' <<<"$out" || fail "/api/budget over the shared socket answered: $out"
  ok "the image's API answers /api/budget on the Unix socket in the shared volume (the app container's budget gate)"

  # The image's own HEALTHCHECK command, run in the container: it asks the API (127.0.0.1:8787, the
  # host's loopback under chroot isolation) for /healthz. Another program on 8787 would answer instead.
  if [ "$port_8787" = busy ]; then
    skip "HEALTHCHECK: port 8787 was already taken on this machine before the daemon started, so it cannot be told apart"
  else
    local -a hc
    mapfile -d '' -t hc < <(python3 -c '
import json, sys
t = json.load(sys.stdin)["Docker"]["config"]["Healthcheck"]["Test"]
assert t[0] == "CMD", t
sys.stdout.write("\0".join(t[1:]) + "\0")' <<<"$config")
    [ ${#hc[@]} -gt 0 ] || fail "no HEALTHCHECK command in the image's config"
    buildah_ run --isolation chroot "$ctr" -- "${hc[@]}" || fail "the HEALTHCHECK (${hc[*]}) failed: $(tail -5 "$work/image.log")"
    ok "the image's HEALTHCHECK passes against the running daemon's GET /healthz"
  fi
  # SIGTERM to the daemon itself: buildah's chroot runner sits between it and $runner.
  daemon=$(for p in $(descendants "$runner"); do [ "$(cat "/proc/$p/comm" 2>/dev/null)" = lngpt-collector ] && echo "$p"; done)
  [ -n "$daemon" ] || fail "no daemon process under buildah run"
  kill -TERM $daemon
  wait "$runner" || fail "the daemon in the image exited $?: $(tail -5 "$work/image.log")"
  grep -q "1 documents stored" "$work/image.log" || fail "the daemon did not store the line: $(tail -5 "$work/image.log")"
  out=$(buildah_ run --isolation chroot "$ctr" -- stat -c '%U %s' /var/lib/lngpt-collector/collector.db 2>&1) ||
    fail "no store in the state volume: $out"
  [[ "$out" == "lngpt-collector "* ]] || fail "the store in the image: $out"
  ok "the daemon in the image stored a line sent through the bind-mounted socket directory, in its state volume, as lngpt-collector"
}

# ---------------------------------------------------------------------------------------------
[ "$(id -u)" = 0 ] || { echo "packaging/check.sh needs root (debootstrap, chroot, buildah)" >&2; exit 1; }
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(units deb install image)
t0=$SECONDS
timed "release binary" release_binary
for s in "${steps[@]}"; do
  case "$s" in
    units) timed "units" check_units ;;
    deb) timed "deb" check_deb ;;
    install) timed "install" check_install ;;
    image) timed "image" check_image ;;
    *) fail "unknown step $s" ;;
  esac
done
echo "packaging checks took $((SECONDS - t0)) s"
echo "packaging: $passed passed, 0 failed, $skipped skipped"
