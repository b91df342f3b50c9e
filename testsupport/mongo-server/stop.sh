#!/usr/bin/env bash
# stop.sh DEST_DIR
#
# Stops the server that start.sh DEST_DIR started (pid in DEST_DIR/server.pid):
# SIGTERM, wait up to 10 s, then SIGKILL. Exits 0 if nothing was running.
set -euo pipefail

log() { printf 'stop.sh: %s\n' "$*" >&2; }

[[ $# -eq 1 && -n "$1" ]] || { echo "usage: $0 DEST_DIR" >&2; exit 2; }
[[ -d "$1" ]] || { log "no such directory $1, nothing to stop"; exit 0; }
DEST="$(cd "$1" && pwd)"
PIDFILE="$DEST/server.pid"

[[ -f "$PIDFILE" ]] || { log "no $PIDFILE, nothing to stop"; exit 0; }
pid="$(cat "$PIDFILE" 2>/dev/null || true)"
rm_pidfile() { rm -f "$PIDFILE" "$DEST/server.port"; }
# Running = exists and is not a zombie. A server whose start.sh has exited is
# reparented to PID 1, which may reap it only a while after it exits.
is_running() { # pid
  kill -0 "$1" 2>/dev/null || return 1
  local st
  st="$(sed -e 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" || return 0
  [[ "$st" != Z && "$st" != X ]]
}

if ! [[ "$pid" =~ ^[0-9]+$ ]] || ! is_running "$pid"; then
  log "server (pid ${pid:-?}) is not running"; rm_pidfile; exit 0
fi
# Only signal the process if it really is this DEST's server.mjs.
if [[ -r "/proc/$pid/cmdline" ]] && ! tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$DEST/server.mjs"; then
  log "pid $pid is not $DEST/server.mjs, leaving it alone"; rm_pidfile; exit 0
fi

kill -TERM "$pid" 2>/dev/null || true
for _ in $(seq 100); do
  is_running "$pid" || { log "stopped pid $pid"; rm_pidfile; exit 0; }
  sleep 0.1
done
log "pid $pid did not stop after SIGTERM, sending SIGKILL"
kill -KILL "$pid" 2>/dev/null || true
rm_pidfile
