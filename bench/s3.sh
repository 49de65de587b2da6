#!/usr/bin/env bash
# Serving from object storage (issue 18): STOR and RETR MB/s through wharf to a Garage
# cluster beside the store's own client (curl signing S3 requests itself, --aws-sigv4:
# one PUT, one GET, no FTP) in the same run, against the same node; and wharf's memory
# per running S3 transfer (peak RSS during the transfer less RSS before it).
#
#   bench/s3.sh [--mib 512] [--runs 3] [--nodes 3]
#
# Starts its own Garage nodes (the `garage` binary; .ci/run installs it) and wharf on
# 127.0.0.1, stops them by PID at the end; every step has a time limit.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
MIB=512
RUNS=3
NODES=3
while [[ $# -gt 0 ]]; do
    case $1 in
    --mib) MIB=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --nodes) NODES=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
GARAGE=$(command -v garage || echo "$HOME/.cargo/bin/garage")
[[ -x $GARAGE ]] || { echo "garage is not installed (see .ci/run)" >&2; exit 1; }
if [[ -z ${WHARF_BIN:-} ]]; then
    (cd "$REPO" && cargo build --release -q -p wharf-server)
fi
WHARF=${WHARF_BIN:-$REPO/target/release/wharf}

WORK=$(mktemp -d /tmp/wharf-s3-bench.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

hex() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }
SECRET=$(hex 32)
KEY_ID=GK$(hex 12)
KEY_SECRET=$(hex 32)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

S3_PORT=""
for i in $(seq 0 $((NODES - 1))); do
    d=$WORK/node$i
    mkdir -p "$d/meta" "$d/data"
    rpc=$(port); s3=$(port); admin=$(port)
    [[ -z $S3_PORT ]] && S3_PORT=$s3
    cat >"$d/garage.toml" <<EOF
metadata_dir = "$d/meta"
data_dir = "$d/data"
db_engine = "lmdb"
replication_factor = $NODES
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$SECRET"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3"
root_domain = ".s3.localhost"
[admin]
api_bind_addr = "127.0.0.1:$admin"
EOF
    RUST_LOG=garage=warn "$GARAGE" -c "$d/garage.toml" server >"$d/log" 2>&1 &
    PIDS+=($!)
done
g() { timeout 60 "$GARAGE" -c "$WORK/node0/garage.toml" "$@"; }
gi() { timeout 60 "$GARAGE" -c "$WORK/node$1/garage.toml" "${@:2}"; }
ids=()
for i in $(seq 0 $((NODES - 1))); do
    for _ in $(seq 100); do
        id=$(gi "$i" node id -q 2>/dev/null) && break
        sleep 0.2
    done
    ids+=("$id")
done
for id in "${ids[@]:1}"; do g node connect "$id" >/dev/null; done
for id in "${ids[@]}"; do g layout assign -z dc1 -c 10G "${id%@*}" >/dev/null; done
g layout apply --version 1 >/dev/null
g key import --yes -n bench "$KEY_ID" "$KEY_SECRET" >/dev/null
g bucket create bench >/dev/null
g bucket allow --read --write --owner bench --key "$KEY_ID" >/dev/null
ENDPOINT=http://127.0.0.1:$S3_PORT
SIGV4=(--aws-sigv4 "aws:amz:garage:s3" --user "$KEY_ID:$KEY_SECRET" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD")
for _ in $(seq 300); do
    curl -sf "${SIGV4[@]}" -T /dev/null "$ENDPOINT/bench/.ready" && break
    sleep 0.2
done

HASH=$(echo bench-pass | "$WHARF" passwd)
cat >"$WORK/wharf.toml" <<EOF
[server]
listen = ["127.0.0.1:0"]
passive_ports = "0-0"
shutdown_grace = 2
[site]
root = "s3://bench/ftp"
[site.s3]
endpoint = "$ENDPOINT"
region = "garage"
access_key_id = "$KEY_ID"
secret_access_key = "$KEY_SECRET"
path_style = true
${S3_EXTRA:-}
[[users]]
name = "bench"
password_hash = "$HASH"
EOF
"$WHARF" --config "$WORK/wharf.toml" >"$WORK/wharf.out" 2>"$WORK/wharf.err" &
WPID=$!
PIDS+=($WPID)
for _ in $(seq 100); do
    FTP_PORT=$(grep -o 'ftp://127.0.0.1:[0-9]*' "$WORK/wharf.out" | head -1 | sed 's/.*://') || true
    [[ -n $FTP_PORT ]] && break
    sleep 0.1
done
[[ -n ${FTP_PORT:-} ]] || { echo "wharf did not start: $(cat "$WORK/wharf.err")" >&2; exit 1; }
FTP=ftp://127.0.0.1:$FTP_PORT

head -c $((MIB << 20)) /dev/urandom >"$WORK/src.bin"
rss() { awk '/VmRSS/ {print $2}' "/proc/$WPID/status"; }
# mbps CURL-ARGS...: MB/s of one curl transfer (its own figure); the peak RSS of wharf
# above its RSS before the transfer goes to $WORK/peak.
mbps() {
    local base peak cur
    base=$(rss)
    peak=$base
    timeout 600 curl -fsS -o /dev/null -w '%{speed_upload} %{speed_download}\n' "$@" >"$WORK/speed" &
    local c=$!
    while kill -0 "$c" 2>/dev/null; do
        cur=$(rss)
        ((cur > peak)) && peak=$cur
        sleep 0.05
    done
    wait "$c"
    echo $(((peak - base))) >"$WORK/peak"
    awk '{ s = ($1 > $2 ? $1 : $2); printf "%.0f", s / 1e6 }' "$WORK/speed"
}
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -A R
stor_mem=0
retr_mem=0
for run in $(seq "$RUNS"); do
    R[wstor]+="$(mbps -u bench:bench-pass -T "$WORK/src.bin" "$FTP/w$run.bin") "
    m=$(cat "$WORK/peak"); ((m > stor_mem)) && stor_mem=$m
    R[wretr]+="$(mbps -u bench:bench-pass "$FTP/w$run.bin") "
    m=$(cat "$WORK/peak"); ((m > retr_mem)) && retr_mem=$m
    R[dput]+="$(mbps "${SIGV4[@]}" -T "$WORK/src.bin" "$ENDPOINT/bench/d$run.bin") "
    R[dget]+="$(mbps "${SIGV4[@]}" "$ENDPOINT/bench/d$run.bin") "
done
for k in wstor wretr dput dget; do R[$k]=$(echo "${R[$k]}" | median); done
pct() { python3 -c "print(f'{100 * $1 / $2:.0f} %')"; }
echo "| $MIB MiB, $NODES Garage node(s), median of $RUNS | wharf (FTP, curl) | direct S3 (curl --aws-sigv4) | wharf / direct | wharf's RSS growth during the transfer |"
echo "|---|---|---|---|---|"
echo "| STOR / PUT, MB/s | ${R[wstor]} | ${R[dput]} | $(pct "${R[wstor]}" "${R[dput]}") | $((stor_mem / 1024)) MiB |"
echo "| RETR / GET, MB/s | ${R[wretr]} | ${R[dget]} | $(pct "${R[wretr]}" "${R[dget]}") | $((retr_mem / 1024)) MiB |"
