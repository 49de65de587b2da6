#!/usr/bin/env bash
# bench/cluster.sh — wharf behind HAProxy (deploy/haproxy.cfg, PROXY protocol v2) to two
# nodes, beside one node reached directly, in one run: sessions/s (login, PASV, RETR of
# 4 KiB, QUIT; anonymous) and RETR MB/s of one big file.
#
#   bench/cluster.sh [--duration S] [--size-mib N] [--runtime mio|smol] [--out DIR]
#
# Every process listens on loopback (nodes on 127.0.0.11 and 127.0.0.12, the balancer
# and the direct node on 127.0.0.1), is started here and stopped by its PID on exit.
# Needs haproxy; builds target/release/{wharf,wharf-load} unless WHARF_BIN/LOAD are set.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
DURATION=8 SIZE_MIB=256 RT=mio OUT=""
while [[ $# -gt 0 ]]; do
    case $1 in
    --duration) DURATION=$2; shift 2 ;;
    --size-mib) SIZE_MIB=$2; shift 2 ;;
    --runtime) RT=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    -h | --help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "cluster.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
command -v haproxy >/dev/null || { echo "cluster.sh: haproxy is not installed" >&2; exit 1; }
WHARF_BIN=${WHARF_BIN:-$REPO/target/release/wharf}
LOAD=${LOAD:-$REPO/target/release/wharf-load}
if [[ ! -x $WHARF_BIN || ! -x $LOAD ]]; then
    (cd "$REPO" && cargo build --release -q -p wharf-server -p wharf-bench)
fi
OUT=${OUT:-$(mktemp -d /tmp/wharf-cluster-bench.XXXXXX)}
mkdir -p "$OUT/site"
head -c $((SIZE_MIB * 1024 * 1024)) /dev/urandom >"$OUT/site/big.bin"
head -c 4096 /dev/urandom >"$OUT/site/small.bin"

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
NODE_PORT=$(free_port) DIRECT_PORT=$(free_port) LB_PORT=$(free_port)
PASV_A=21000-21999 PASV_B=22000-22999 PASV_D=23000-23999

# node NAME ADDR PORT PASV PROXY(yes|no)
node() {
    local dir=$OUT/$1
    mkdir -p "$dir"
    {
        printf '[server]\nruntime = "%s"\nshards = 0\nmax_connections = 100000\n' "$RT"
        printf 'listen = ["%s:%s"]\npassive_ports = "%s"\nexternal_ip = "127.0.0.1"\n' "$2" "$3" "$4"
        [[ $5 == yes ]] && printf '\n[server.proxy_protocol]\nfrom = ["127.0.0.1"]\n'
        printf '\n[site]\nroot = "%s"\nanonymous = true\n' "$OUT/site"
    } >"$dir/wharf.toml"
    "$WHARF_BIN" --config "$dir/wharf.toml" >"$dir/out.log" 2>"$dir/err.log" &
    PIDS+=($!)
    for _ in $(seq 100); do grep -q "serving ftp" "$dir/out.log" && return; sleep 0.1; done
    echo "cluster.sh: node $1 did not start: $(cat "$dir/err.log")" >&2
    exit 1
}
node a 127.0.0.11 "$NODE_PORT" "$PASV_A" yes
node b 127.0.0.12 "$NODE_PORT" "$PASV_B" yes
node direct 127.0.0.1 "$DIRECT_PORT" "$PASV_D" no

WHARF_LB_ADDR=127.0.0.1 WHARF_LB_PORT=$LB_PORT WHARF_LB_SOURCE=127.0.0.1 \
WHARF_NODE_A=127.0.0.11 WHARF_NODE_B=127.0.0.12 WHARF_NODE_PORT=$NODE_PORT \
WHARF_PASV_A=$PASV_A WHARF_PASV_B=$PASV_B \
    haproxy -db -f "$REPO/deploy/haproxy.cfg" >"$OUT/haproxy.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
    python3 - "$LB_PORT" <<'PY' && break
import socket, sys
try:
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1)
    sys.exit(0 if s.recv(4) == b"220 " else 1)
except OSError:
    sys.exit(1)
PY
    sleep 0.1
done

row() { # LABEL PORT
    local s r
    s=$("$LOAD" sessions --port "$2" --path small.bin --duration "$DURATION" --clients 16 \
        --server "$1" 2>>"$OUT/load.err" | tail -1)
    r=$("$LOAD" retr-big --port "$2" --path big.bin --count 5 --server "$1" \
        2>>"$OUT/load.err" | tail -1)
    python3 - "$1" "$s" "$r" <<'PY'
import json, sys
s, r = json.loads(sys.argv[2]), json.loads(sys.argv[3])
def pick(d, *keys):
    for k in keys:
        if k in d:
            return d[k]
    return float("nan")
print(f"| {sys.argv[1]} | {pick(s, 'sessions_per_s', 'per_s', 'rate'):.0f} | "
      f"{pick(s, 'errors'):.0f} | {pick(r, 'mb_per_s', 'MB_per_s', 'median_mb_s'):.0f} |")
PY
    echo "$s" >>"$OUT/results.jsonl"
    echo "$r" >>"$OUT/results.jsonl"
}
echo "| path ($RT, ${SIZE_MIB} MiB file) | sessions/s | errors | RETR MB/s |"
echo "|---|---|---|---|"
row "one node, direct" "$DIRECT_PORT"
row "HAProxy, 2 nodes, PROXY v2" "$LB_PORT"
echo "raw results: $OUT/results.jsonl" >&2
