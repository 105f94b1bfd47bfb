#!/usr/bin/env bash
# Server script time per task of oncetask-redis's own create, claim and swap
# scripts (lib.lua + body, assembled as src/scripts.rs does), read from
# INFO commandstats: 2000 tasks created 100 per call, claimed 100 per call,
# completed 100 per call (BENCHMARKS.md, "Redis claims by priority").
#
#   oncetask-redis/tools/script-time.sh [ROUNDS]          # default 5
#   REV=8cb046c oncetask-redis/tools/script-time.sh 10    # alternate with a git revision's scripts
#   PRI="5 0 -5" MODE=so oncetask-redis/tools/script-time.sh
#
# PRI: priorities cycled over the tasks (default "0": one band, the layout
# of a store without priorities). MODE: the claim's mode argument ("s" in
# priority order, "so" in the oldest order). REV: also time the scripts of
# that revision (read with `git show`), alternating with the working tree's;
# a revision before priority bands ignores PRI in its indexes and MODE "so".
# Uses ONCETASK_REDIS_URL (default redis://127.0.0.1:6379) and the throwaway
# prefix `oncetask_micro:`; resets the server's command statistics (CONFIG
# RESETSTAT): run it on a test server.
set -euo pipefail
ROUNDS="${1:-5}"
HERE="$(cd "$(dirname "$0")" && pwd)"
TREE="$HERE/../src/lua"
PRI="${PRI:-0}"
MODE="${MODE:-s}"
URL="${ONCETASK_REDIS_URL:-redis://127.0.0.1:6379}"
cli() { redis-cli -u "$URL" "$@"; }
cli ping >/dev/null || {
  echo "script-time: no Redis at $URL: start redis-server or set ONCETASK_REDIS_URL" >&2
  exit 1
}
WORK="$(mktemp -d)"
BASE='oncetask_micro:{e:x}:'
clear_keys() { cli --scan --pattern "oncetask_micro:*" | xargs -r -n 500 redis-cli -u "$URL" del >/dev/null; }
trap 'rm -rf "$WORK"; clear_keys' EXIT
if [ -n "${REV:-}" ]; then
  mkdir "$WORK/rev"
  for s in lib create claim swap; do
    git -C "$HERE" show "$REV:oncetask-redis/src/lua/$s.lua" >"$WORK/rev/$s.lua"
  done
fi
# Loads the scripts of Lua directory $1 under label $2 (SHA[<label>-<script>]).
declare -A SHA
load() {
  local s
  for s in create claim swap; do
    {
      cat "$1/lib.lua"
      printf '\nlocal function body()\n'
      cat "$1/$s.lua"
      printf '\nend\nlocal ok, result = pcall(body)\nflush()\n'
      printf 'if not ok then error(result, 0) end\nreturn result\n'
    } >"$WORK/$2-$s.lua"
    SHA[$2-$s]="$(cli script load "$(cat "$WORK/$2-$s.lua")")"
  done
}
read -r -a PRIS <<<"$PRI"
BODY='{"data":{"n":0},"errors":[],"recurrence":null,"parentRecurrenceId":null,"occurrenceTimestamp":null,"cancelledAt":null,"outcome":null}'
CREATED=1796610029409
CHEX=002001a24e4d7761
id_of() { printf 'b15d3a046db45-insert1-0-%06d' "$1"; }
# One create call of 100 tasks starting at $1: the fields encode_task writes.
create_args() {
  local first=$1 i id p n
  printf '%s\n' "$BASE" 100 '' x
  for ((i = first; i < first + 100; i++)); do
    id="$(id_of "$i")"
    p="${PRIS[$((i % ${#PRIS[@]}))]}"
    n=13
    if [ "$p" != 0 ]; then n=14; fi
    printf '%s\n' "$id" "g$i" "$n" fmt 1 id "$id" env x kind bench_noop kenc bench_noop \
      created "$CREATED" att 0 catt 0 canc 0 ver 1000 ord "0000000000000000$CHEX$id" \
      cord "$CHEX$id" body "$BODY"
    if [ "$p" != 0 ]; then printf '%s\n' pri "$p"; fi
  done
}
# One swap call completing the 100 tasks starting at $1 (version 1001 after the claim).
swap_args() {
  local first=$1 i id
  printf '%s\n' "$BASE" 100
  for ((i = first; i < first + 100; i++)); do
    id="$(id_of "$i")"
    printf '%s\n' "$id" 1001 0 6 ver 1002 dst completed ord "0000000000000000$CHEX$id" \
      errs '[]' done 1796610030000 out '"completed"' 4 lease token wait result
  done
}
READ="fmt bad rk wait lease done att catt ver canc ord id env kind created body token result errs out cat dst snz pri maxa prn"
usec() { cli info commandstats | tr -d '\r' | awk -F'[=,]' '/^cmdstat_evalsha:/ { print $4 } END {}'; }
failed() { cli info commandstats | tr -d '\r' | awk -F'[=,]' '/^cmdstat_evalsha:/ { print $10 }'; }
for ((f = 1; f <= 2000; f += 100)); do create_args $f >"$WORK/c$f"; swap_args $f >"$WORK/s$f"; done
# One measure of the scripts labelled $1.
measure() {
  local name="$1" c_us k_us s_us f left done_n
  clear_keys
  cli config resetstat >/dev/null
  for ((f = 1; f <= 2000; f += 100)); do
    xargs -d '\n' -a "$WORK/c$f" redis-cli -u "$URL" evalsha "${SHA[$name-create]}" 1 "${BASE}kinds" >/dev/null
  done
  c_us="$(usec)"
  cli config resetstat >/dev/null
  # shellcheck disable=SC2086
  for _ in $(seq 1 20); do
    cli evalsha "${SHA[$name-claim]}" 1 "${BASE}kinds" "$BASE" bench_noop 1796610029500 \
      1796610629500 tok "$MODE" 100 100 $READ >/dev/null
  done
  k_us="$(usec)"
  cli config resetstat >/dev/null
  for ((f = 1; f <= 2000; f += 100)); do
    xargs -d '\n' -a "$WORK/s$f" redis-cli -u "$URL" evalsha "${SHA[$name-swap]}" 1 "${BASE}kinds" >/dev/null
  done
  s_us="$(usec)"
  [ "$(failed)" = 0 ] || { echo "script-time: $name: failed script calls" >&2; exit 1; }
  done_n="$(cli hget "${BASE}cnt:bench_noop" completed)"
  [ "$done_n" = 2000 ] || { echo "script-time: $name: $done_n completed of 2000" >&2; exit 1; }
  left="$(cli --scan --pattern "oncetask_micro:*" | grep -E ':(wf|wl|kf|kh|pb)' || true)"
  [ -z "$left" ] || { echo "script-time: $name: claim indexes left: $left" >&2; exit 1; }
  awk -v n="$name" -v c="$c_us" -v k="$k_us" -v s="$s_us" 'BEGIN {
    printf "%-5s create %5.1f  claim %5.1f  swap %5.1f  us per task\n", n, c / 2000, k / 2000, s / 2000 }'
}
echo "script-time: $URL, 2000 tasks, calls of 100, priorities ($PRI), claim mode $MODE, $ROUNDS rounds"
load "$TREE" tree
[ -z "${REV:-}" ] || load "$WORK/rev" rev
for _ in $(seq 1 "$ROUNDS"); do
  [ -z "${REV:-}" ] || measure rev
  measure tree
done
