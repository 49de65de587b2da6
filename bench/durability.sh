#!/usr/bin/env bash
# What durable uploads cost: STOR throughput with `durable_writes` on and off, in one
# run, on a tmpfs (where fsync costs nothing) and on a directory of a real disk (default
# /var/tmp). Big uploads show the cost of the final fsync; 1 MiB uploads the cost per
# file (two fsyncs, one of the file and one of its folder, before each 226).
#
#   bench/durability.sh [--disk DIR] [--big-mib 256] [--big-count 5] [--small-count 100]
#
# Needs root (it mounts a tmpfs, removed at the end). wharf listens on 127.0.0.1 only,
# is started afresh for each case and stopped by its PID; every step has a time limit.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
DISK=/var/tmp
BIG_MIB=256
BIG_COUNT=5
SMALL_COUNT=100
while [[ $# -gt 0 ]]; do
    case $1 in
    --disk) DISK=$2; shift 2 ;;
    --big-mib) BIG_MIB=$2; shift 2 ;;
    --big-count) BIG_COUNT=$2; shift 2 ;;
    --small-count) SMALL_COUNT=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
[[ $(id -u) == 0 ]] || { echo "run as root (it mounts a tmpfs)" >&2; exit 1; }

if [[ -z ${WHARF_BIN:-} ]]; then
    (cd "$REPO" && cargo build --release -q -p wharf-server -p wharf-bench)
fi
WHARF=${WHARF_BIN:-$REPO/target/release/wharf}
LOAD=$REPO/target/release/wharf-load

WORK=$(mktemp -d /tmp/wharf-durability.XXXXXX)
DISKDIR=$(mktemp -d "$DISK/wharf-durability.XXXXXX")
PID=""
cleanup() {
    [[ -n $PID ]] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
    mountpoint -q "$WORK/tmpfs" && umount "$WORK/tmpfs"
    rm -rf "$WORK" "$DISKDIR"
}
trap cleanup EXIT
mkdir -p "$WORK/tmpfs"
mount -t tmpfs -o size=$((BIG_MIB * 2 + 256))m tmpfs "$WORK/tmpfs"
HASH=$(echo bench-pass | "$WHARF" passwd)

# start ROOT DURABLE: wharf on 127.0.0.1:PORT serving ROOT; sets PID and PORT.
start() {
    cat >"$WORK/wharf.toml" <<EOF
[server]
listen = ["127.0.0.1:0"]
passive_ports = "0-0"
shutdown_grace = 2
[site]
root = "$1"
durable_writes = $2
[[users]]
name = "bench"
password_hash = "$HASH"
EOF
    "$WHARF" --config "$WORK/wharf.toml" >"$WORK/out" 2>"$WORK/err" &
    PID=$!
    for _ in $(seq 100); do
        PORT=$(grep -o 'ftp://127.0.0.1:[0-9]*' "$WORK/out" | head -1 | sed 's/.*://') || true
        [[ -n $PORT ]] && return 0
        sleep 0.1
    done
    echo "wharf did not start: $(cat "$WORK/err")" >&2
    exit 1
}

stop() {
    kill "$PID"
    wait "$PID" || true
    PID=""
}

# load SIZE_MIB COUNT: median MB/s of STOR (wharf-load stor-big).
load() {
    timeout 600 "$LOAD" stor-big --host 127.0.0.1 --port "$PORT" --user bench \
        --pass bench-pass --server-pid "$PID" --size-mib "$1" --count "$2" |
        python3 -c 'import json,sys; r=json.loads(sys.stdin.readline()); print(r["mb_per_s"] if r.get("ok") else "error: %s" % r.get("error"))'
}

echo "| where | durable_writes | STOR ${BIG_MIB} MiB, MB/s (median of $BIG_COUNT) | STOR 1 MiB, MB/s (median of $SMALL_COUNT) | 1 MiB uploads/s |"
echo "|---|---|---|---|---|"
for where in tmpfs disk; do
    case $where in
    tmpfs) root=$WORK/tmpfs; name="tmpfs" ;;
    disk) root=$DISKDIR; name="$DISK ($(findmnt -no FSTYPE -T "$DISK"))" ;;
    esac
    for durable in true false; do
        start "$root" "$durable"
        big=$(load "$BIG_MIB" "$BIG_COUNT")
        small=$(load 1 "$SMALL_COUNT")
        stop
        per=$(python3 -c "print(f'{float(\"$small\") / 1.048576:.0f}')" 2>/dev/null || echo "-")
        printf '| %s | %s | %.0f | %.0f | %s |\n' "$name" "$durable" "$big" "$small" "$per"
    done
done
