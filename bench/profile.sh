#!/usr/bin/env bash
# bench/profile.sh — costs of wharf per unit of work that stay put on a noisy machine:
# system calls, context switches and CPU time (perf stat, tracepoints and software
# events: no PMU needed) or user-space instructions (valgrind's callgrind) per command,
# per session, per listed entry or per MB moved.
#
#   bench/profile.sh [--runtime mio|smol] [--tool perf|callgrind]
#                    [--what cmd|session|list|retr|stor] [--n1 N] [--n2 N]
#
# One server (started here, stopped by its PID) takes a warm-up load of N1 units, then
# the load with N1 and with N2 units, each counted alone (perf attached to every thread
# of the server; callgrind's counters zeroed and dumped around it); the cost per unit is
# (total(N2) - total(N1)) / (N2 - N1), so logging in and out cancel out. Under
# callgrind the server runs ~50x slower, so it finds the next command already waiting
# more often than it would: its counts understate the cost of waiting (use perf's
# system calls and context switches for that).
# Environment: WHARF_BIN (default target/profiling/wharf, else target/release/wharf),
# DATA (default /dev/shm/wharf-bench; bench/setup.sh data fills it), OUT (a temp dir).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
RUNTIME=mio TOOL=perf WHAT=cmd N1="" N2=""
while [[ $# -gt 0 ]]; do
    case $1 in
    --runtime) RUNTIME=$2; shift 2 ;;
    --tool) TOOL=$2; shift 2 ;;
    --what) WHAT=$2; shift 2 ;;
    --n1) N1=$2; shift 2 ;;
    --n2) N2=$2; shift 2 ;;
    -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "profile.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
case $WHAT in
cmd) N1=${N1:-1000} N2=${N2:-3000} UNIT=command ;;
session) N1=${N1:-100} N2=${N2:-300} UNIT=session ;;
list) N1=${N1:-1} N2=${N2:-3} UNIT="listed entry (LIST + MLSD of list10k, per entry)" ;;
retr) N1=${N1:-1} N2=${N2:-3} UNIT="MB downloaded (RETR of x64m.bin)" ;;
stor) N1=${N1:-1} N2=${N2:-3} UNIT="MB uploaded (STOR of 64 MiB)" ;;
*) echo "profile.sh: --what cmd|session|list|retr|stor" >&2; exit 2 ;;
esac
DATA=${DATA:-/dev/shm/wharf-bench}
WHARF_BIN=${WHARF_BIN:-$REPO/target/profiling/wharf}
[[ -x $WHARF_BIN ]] || WHARF_BIN=$REPO/target/release/wharf
LOAD=${LOAD:-$REPO/target/release/wharf-load}
for b in "$WHARF_BIN" "$LOAD"; do
    [[ -x $b ]] || { echo "profile.sh: no $b (cargo build --release -p wharf-server -p wharf-bench)" >&2; exit 1; }
done
command -v "${TOOL/callgrind/valgrind}" >/dev/null || { echo "profile.sh: $TOOL is not installed (apt-get install valgrind linux-perf)" >&2; exit 1; }
XFER_MIB=64 bash "$HERE/setup.sh" data
# The server's root holds only what the loads use: at start wharf sweeps its sites for
# uploads a crash left behind, and a sweep of the 100,000-file benchmark tree would run
# during the counts.
ROOT=${PROFILE_ROOT:-/dev/shm/wharf-profile-root}
mkdir -p "$ROOT/up"
[[ -d $ROOT/list10k ]] || cp -al "$DATA/list10k" "$ROOT/list10k"
for f in small.bin x64m.bin; do [[ -f $ROOT/$f ]] || ln "$DATA/$f" "$ROOT/$f"; done
OUT=${OUT:-$(mktemp -d /tmp/wharf-profile.XXXXXX)}
mkdir -p "$OUT"
USER_NAME=wharfprof PASS=wharfprof
HASH=$(printf '%s\n' "$PASS" | "$WHARF_BIN" passwd --cost m=512,t=1,p=1)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 7 \
    -subj /CN=localhost -keyout "$OUT/key.pem" -out "$OUT/cert.pem" 2>/dev/null
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
sed -e "s|@PORT@|$PORT|g" -e "s|@PASV_MIN@|40000|g" -e "s|@PASV_MAX@|46999|g" \
    -e "s|@DATA@|$ROOT|g" -e "s|@USER@|$USER_NAME|g" -e "s|@HASH@|$HASH|g" \
    -e "s|@CERT@|$OUT/cert.pem|g" -e "s|@KEY@|$OUT/key.pem|g" -e "s|^shards = .*|shards = ${SHARDS:-0}|" \
    "$HERE/configs/wharf.toml.in" >"$OUT/wharf.toml"

# Events counted by --tool perf (tracepoints and software events: no PMU needed);
# e.g. PERF_EVENTS=syscalls:sys_enter_futex,syscalls:sys_enter_epoll_ctl for a breakdown.
PERF_EVENTS=${PERF_EVENTS:-raw_syscalls:sys_enter,context-switches,task-clock}
PID=""
stop() {
    [[ -n $PID ]] || return 0
    kill -TERM "$PID" 2>/dev/null || true
    # Under callgrind the shutdown is slow: up to 60 s, then KILL.
    for _ in $(seq 600); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    PID=""
}
trap stop EXIT

# load N — the load of N units against the running server.
load() {
    local n=$1
    local common=(--port "$PORT" --user "$USER_NAME" --pass "$PASS" --timeout 120)
    case $WHAT in
    cmd) "$LOAD" cmd-latency "${common[@]}" --count "$n" ;;
    session) "$LOAD" sessions "${common[@]}" --clients 1 --total "$n" --duration 600 --path small.bin ;;
    list) "$LOAD" list "${common[@]}" --count "$n" --path list10k ;;
    retr) "$LOAD" retr-big "${common[@]}" --count "$n" --path x64m.bin ;;
    stor) "$LOAD" stor-big "${common[@]}" --count "$n" --size-mib 64 ;;
    esac >"$OUT/load.$n.json"
    grep -q '"ok":true' "$OUT/load.$n.json" || { echo "profile.sh: the load failed: $(cat "$OUT/load.$n.json")" >&2; exit 1; }
}

# start — the server, under callgrind for that tool.
start() {
    local cmd=("$WHARF_BIN" --config "$OUT/wharf.toml" --runtime "$RUNTIME")
    case $TOOL in
    callgrind) valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.%p" --instr-atstart=no \
        "${cmd[@]}" >"$OUT/tool.log" 2>&1 & ;;
    perf) "${cmd[@]}" >"$OUT/tool.log" 2>&1 & ;;
    *) echo "profile.sh: --tool perf|callgrind" >&2; exit 2 ;;
    esac
    PID=$!
    local up=0
    for _ in $(seq 600); do
        if timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$PORT" 2>/dev/null; then up=1; break; fi
        kill -0 "$PID" 2>/dev/null || break
        sleep 0.1
    done
    ((up)) || { echo "profile.sh: wharf did not start; see $OUT/tool.log" >&2; exit 1; }
}

# total N — N units measured on the running server; prints "name=value ...".
total() {
    local n=$1 f=$OUT/$TOOL.$1
    case $TOOL in
    perf)
        # Every thread of the server, including those it starts meanwhile.
        perf stat -x, -o "$f" -e "$PERF_EVENTS" -p "$PID" &
        local perf_pid=$!
        sleep 1 # perf attaches (no readiness signal to poll)
        load "$n"
        kill -INT "$perf_pid"
        wait "$perf_pid" || true
        awk -F, '$1 ~ /^[0-9.]+$/ {
                     n = $3; sub(/^(raw_)?syscalls:sys_enter_?/, "", n)
                     if (n == "") n = "syscalls"
                     if (n == "task-clock") { n = "cpu_us"; $1 = $1 * 1000 }
                     printf "%s=%.0f ", n, $1 }
                 END { print "" }' "$f"
        ;;
    callgrind)
        callgrind_control -z "$PID" >/dev/null
        callgrind_control -i on "$PID" >/dev/null
        load "$n"
        callgrind_control -i off "$PID" >/dev/null
        callgrind_control -d "run$n" "$PID" >/dev/null
        # The dump just written: the newest file, with every thread's totals.
        local d
        d=$(ls -t "$OUT"/callgrind.* | head -1)
        cp "$d" "$f"
        awk '/^totals:/ {print "instructions=" $2; exit}' "$f"
        ;;
    esac
}

start
load "$N1" # warm-up: worker threads started, caches filled
t1=$(total "$N1")
t2=$(total "$N2")
echo "wharf $RUNTIME: $N1 units: $t1; $N2 units: $t2"
python3 - "$N1" "$N2" "$WHAT" "$RUNTIME" "$UNIT" "$t1" "$t2" <<'EOF'
import sys
n1, n2, what, runtime, unit = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
a = dict(kv.split("=") for kv in sys.argv[6].split())
b = dict(kv.split("=") for kv in sys.argv[7].split())
units = {"list": 2 * 10000, "retr": 64 * 1048576 / 1e6, "stor": 64 * 1048576 / 1e6}.get(what, 1)
for k in a:
    per = (float(b[k]) - float(a[k])) / ((n2 - n1) * units)
    print(f"wharf {runtime}: {per:,.2f} {k} per {unit}")
EOF
[[ $TOOL == callgrind ]] && echo "callgrind profiles: $OUT/callgrind.$N2 (callgrind_annotate)"
exit 0
