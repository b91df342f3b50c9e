#!/usr/bin/env bash
# start.sh DEST_DIR PORT
#
# Installs CongoDB into DEST_DIR if needed (install.sh), starts
# DEST_DIR/server.mjs in the background on 127.0.0.1:PORT (PORT 0 = pick a
# free one), waits until it listens (at most CONGODB_START_TIMEOUT s, default
# 30), writes DEST_DIR/server.pid and DEST_DIR/server.port, prints
# "listening HOST:PORT" on stdout and exits 0.
# On failure it prints the server's output on stderr and exits non-zero.
#
# Env: CONGODB_HOST (default 127.0.0.1), CONGODB_START_TIMEOUT (default 30).
# Server output goes to DEST_DIR/server.out (stdout) and DEST_DIR/server.log
# (stderr). Stop it with stop.sh DEST_DIR, or kill "$(cat DEST_DIR/server.pid)".
set -euo pipefail

log() { printf 'start.sh: %s\n' "$*" >&2; }
die() { printf 'start.sh: ERROR: %s\n' "$*" >&2; exit 1; }

[[ $# -eq 2 && -n "$1" && -n "$2" ]] || { echo "usage: $0 DEST_DIR PORT" >&2; exit 2; }
[[ "$2" =~ ^[0-9]+$ ]] && (( 10#$2 <= 65535 )) || die "bad port: $2"

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PORT=$((10#$2))
HOST="${CONGODB_HOST:-127.0.0.1}"
TIMEOUT="${CONGODB_START_TIMEOUT:-30}"

"$SCRIPT_DIR/install.sh" "$1" || die "install.sh $1 failed"
DEST="$(cd "$1" && pwd)"
PIDFILE="$DEST/server.pid"
OUT="$DEST/server.out"
ERR="$DEST/server.log"

tcp_answers() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# Running = exists and is not a zombie. A server whose start.sh has exited is
# reparented to PID 1, which may reap it only a while after it exits.
is_running() { # pid
  kill -0 "$1" 2>/dev/null || return 1
  local st
  st="$(sed -e 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" || return 0
  [[ "$st" != Z && "$st" != X ]]
}

is_our_server() { # pid
  [[ -r "/proc/$1/cmdline" ]] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -qF "$DEST/server.mjs"
}

if [[ -f "$PIDFILE" ]]; then
  old="$(cat "$PIDFILE" 2>/dev/null || true)"
  if [[ "$old" =~ ^[0-9]+$ ]] && is_running "$old" && is_our_server "$old"; then
    die "a server from $DEST is already running (pid $old, $(cat "$DEST/server.port" 2>/dev/null || echo '?')); stop it first: $SCRIPT_DIR/stop.sh $DEST"
  fi
  rm -f "$PIDFILE" "$DEST/server.port"
fi

if (( PORT != 0 )) && tcp_answers "$HOST" "$PORT"; then
  die "something already listens on $HOST:$PORT"
fi

: >"$OUT"
: >"$ERR"
log "starting node $DEST/server.mjs --port $PORT --host $HOST"
nohup node "$DEST/server.mjs" --port "$PORT" --host "$HOST" </dev/null >"$OUT" 2>"$ERR" &
pid=$!

fail() {
  log "$1"
  if kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid" 2>/dev/null || true; fi
  { echo '--- server stdout ---'; cat "$OUT"; echo '--- server stderr ---'; cat "$ERR"; } >&2
  exit 1
}

deadline=$((SECONDS + TIMEOUT))
line=''
while :; do
  line="$(grep -m1 '^listening ' "$OUT" 2>/dev/null || true)"
  [[ -n "$line" ]] && break
  if ! is_running "$pid"; then
    rc=0; wait "$pid" 2>/dev/null || rc=$?
    fail "server exited before listening (exit status $rc)"
  fi
  # Fallback: the port answers and it is our process that is still alive
  # (the port was checked free before the start).
  if (( PORT != 0 )) && tcp_answers "$HOST" "$PORT" && is_running "$pid"; then
    line="listening $HOST:$PORT"
    break
  fi
  (( SECONDS < deadline )) || fail "server did not listen within ${TIMEOUT}s"
  sleep 0.1
done

real_port="${line##*:}"
printf '%s\n' "$pid" >"$PIDFILE.tmp" && mv -f "$PIDFILE.tmp" "$PIDFILE"
printf '%s\n' "$real_port" >"$DEST/server.port.tmp" && mv -f "$DEST/server.port.tmp" "$DEST/server.port"
log "server pid $pid listening on $HOST:$real_port (pid in $PIDFILE)"
printf '%s\n' "$line"
