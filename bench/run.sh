#!/usr/bin/env bash
# bench/run.sh — measure wharf and peer FTP servers in one run; see bench/README.md.
#
#   bench/run.sh [--servers wharf,wharf-smol,vsftpd,pureftpd,pyftpdlib] [--scenarios LIST]
#                [--runs N] [--quick] [--out DIR] [--xfer-mib MIB] [--wharf-extra FILE]
#
# wharf-admin is wharf (mio) with the admin listener on ([admin]: metrics, the live
# sessions board), for what observability costs beside plain wharf. --wharf-extra FILE
# appends FILE's TOML to every wharf configuration (wharf, wharf-smol, wharf-admin).
# scenarios: limits retr-big stor-big sessions cmd-latency list idle ftps
#            xfer ctl-load storm list-big (default: all)
# Every server listens on 127.0.0.1 only, is started afresh for each run (and for each
# idle count) in the foreground, and is stopped by its PID. Every step has a time limit.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
DATA=${DATA:-/dev/shm/wharf-bench}
SCRATCH=${SCRATCH:-/work/bench-scratch}
BENCH_USER=${BENCH_USER:-wharfbench}
BENCH_PASS=${BENCH_PASS:-wharfbench}
# A WHARF_BIN given by the caller is used as it is; else the release build, made here.
BUILD_WHARF=$([[ -z ${WHARF_BIN:-} ]] && echo 1 || echo 0)
WHARF_BIN=${WHARF_BIN:-$REPO/target/release/wharf}
SERVERS=wharf,wharf-smol,vsftpd,pureftpd,pyftpdlib
SCENARIOS=limits,retr-big,stor-big,sessions,cmd-latency,list,idle,ftps,xfer,ctl-load,storm,list-big
RUNS=3
QUICK=0
OUT=""
WHARF_EXTRA=""
while [[ $# -gt 0 ]]; do
    case $1 in
    --servers) SERVERS=$2; shift 2 ;;
    --scenarios) SCENARIOS=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --out) OUT=$2; shift 2 ;;
    --wharf-extra) WHARF_EXTRA=$(cd "$(dirname "$2")" && pwd)/$(basename "$2"); shift 2 ;;
    --xfer-mib) XFER_MIB=$2; shift 2 ;;
    -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
if [[ $QUICK == 1 ]]; then
    RUNS=1 DURATION=${DURATION:-4} NOOPS=10000 IDLE_COUNTS=${IDLE_COUNTS:-1000,10000}
    XFER_MIB=${XFER_MIB:-8}
else
    DURATION=${DURATION:-8} NOOPS=20000 IDLE_COUNTS=${IDLE_COUNTS:-1000,10000,100000}
    XFER_MIB=${XFER_MIB:-64}
fi
# Concurrent transfers: XFER_COUNTS sessions (100,1000), each of XFER_MIB (64 MiB; 8 with
# --quick). Uploads are all held at once on tmpfs: each is at most UP_TOTAL_MIB / N
# (default 6,656 MiB in all: 100 x 64 MiB fit, 1,000 uploads get 6 MiB each).
XFER_COUNTS=${XFER_COUNTS:-100,1000}
UP_TOTAL_MIB=${UP_TOTAL_MIB:-6656}
STORM=${STORM:-10000}
export XFER_MIB
OUT=${OUT:-$SCRATCH/results/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
# One self-signed ECDSA P-256 certificate for every server's FTPS (each server offers
# explicit FTPS beside plaintext; the ftps-* scenarios use it).
TLS_CERT=$OUT/tls-cert.pem TLS_KEY=$OUT/tls-key.pem TLS_PEM=$OUT/tls.pem
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 7 \
    -subj /CN=localhost -keyout "$TLS_KEY" -out "$TLS_CERT" 2>/dev/null
cat "$TLS_CERT" "$TLS_KEY" >"$TLS_PEM"
RESULTS=$OUT/results.jsonl
LOG=$OUT/run.log
has() { [[ ",$1," == *",$2,"* ]]; }
log() { echo "[$(date +%T)] $*" | tee -a "$LOG" >&2; }

# --- preparation ------------------------------------------------------------------------
ulimit -n "$(ulimit -Hn)"
NOFILE=$(ulimit -n)
# The peers (and the venv, the account) only when a peer server runs.
if has "$SERVERS" vsftpd || has "$SERVERS" pureftpd || has "$SERVERS" pyftpdlib; then
    bash "$HERE/setup.sh" all
else
    bash "$HERE/setup.sh" data
fi
(cd "$REPO" && cargo build --release -q -p wharf-bench)
LOAD=$REPO/target/release/wharf-load
if has "$SERVERS" wharf || has "$SERVERS" wharf-pasv0 || has "$SERVERS" wharf-smol ||
    has "$SERVERS" wharf-admin; then
    if [[ $BUILD_WHARF == 1 ]] && (cd "$REPO" && cargo metadata --no-deps --format-version 1 2>/dev/null | grep -q '"name":"wharf-server"'); then
        (cd "$REPO" && cargo build --release -q -p wharf-server)
    fi
    [[ -x $WHARF_BIN ]] || { log "no wharf binary at $WHARF_BIN (set WHARF_BIN)"; exit 1; }
fi
{
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "command: bench/run.sh --servers $SERVERS --scenarios $SCENARIOS --runs $RUNS$([[ $QUICK == 1 ]] && echo ' --quick') (XFER_MIB=$XFER_MIB)"
    echo "commit: $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null)"
    echo "kernel: $(uname -r); cpus: $(nproc); $(grep -m1 'model name' /proc/cpuinfo)"
    echo "memory: $(free -g | awk '/Mem:/ {print $2}') GiB; nofile: $NOFILE; ports: $(cat /proc/sys/net/ipv4/ip_local_port_range)"
} >"$OUT/machine.txt"
cat "$OUT/machine.txt" >&2

# A free loopback TCP port.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
fill() {
    sed -e "s|@PORT@|$PORT|g" -e "s|@PASV_MIN@|$PASV_MIN|g" -e "s|@PASV_MAX@|$PASV_MAX|g" \
        -e "s|@DATA@|$DATA|g" -e "s|@USER@|$BENCH_USER|g" -e "s|@HASH@|${HASH:-}|g" \
        -e "s|@CERT@|$TLS_CERT|g" -e "s|@KEY@|$TLS_KEY|g" -e "s|@PEM@|$TLS_PEM|g" "$1"
}
# Passive ports: 7,000 per server, below the ephemeral range (so client ports never collide
# with them) and distinct per server, so that one server's TIME_WAIT sockets (a session-rate
# run leaves thousands) cannot make the next server's PASV fail.
pasv_range() {
    case $1 in
    # wharf on either runtime: one range (the runs never overlap, and drain_time_wait
    # below empties it between them).
    wharf | wharf-pasv0 | wharf-smol | wharf-admin) PASV_MIN=2000 ;;
    vsftpd) PASV_MIN=9000 ;;
    pureftpd) PASV_MIN=16000 ;;
    *) PASV_MIN=23000 ;;
    esac
    PASV_MAX=$((PASV_MIN + 6999))
}

# Wait (at most 70 s) until fewer than 50 TIME_WAIT sockets use the server's passive ports.
drain_time_wait() {
    local n
    for _ in $(seq 70); do
        n=$(ss -Htan state time-wait "( sport >= :$PASV_MIN and sport <= :$PASV_MAX )" | wc -l)
        ((n < 50)) && return 0
        sleep 1
    done
    log "still $n TIME_WAIT sockets on ports $PASV_MIN-$PASV_MAX; going on"
}
CG_ROOT=/sys/fs/cgroup/cpuacct
SERVER_PID=""
CG=""

# start_server NAME [idle] — start NAME in the foreground (in the background of this
# script), in its own cpuacct cgroup when possible; wait until it accepts.
start_server() {
    local name=$1 mode=${2:-}
    PORT=$(free_port)
    pasv_range "$name"
    [[ $mode == idle ]] || drain_time_wait # idle opens no data connection
    local cmd=()
    case $name in
    wharf | wharf-pasv0 | wharf-smol | wharf-admin)
        HASH=$(echo "$BENCH_PASS" | "${HASH_BIN:-$WHARF_BIN}" passwd --cost m=512,t=1,p=1)
        fill "$HERE/configs/wharf.toml.in" >"$OUT/$name.toml"
        [[ -n $WHARF_EXTRA ]] && cat "$WHARF_EXTRA" >>"$OUT/$name.toml"
        # wharf-admin: the admin listener on (metrics, the sessions board), scraped
        # once a second like a Prometheus would while the load runs.
        if [[ $name == wharf-admin ]]; then
            ADMIN_PORT=$(free_port)
            printf '\n[admin]\nlisten = "127.0.0.1:%s"\npassword_hash = "%s"\n' \
                "$ADMIN_PORT" "$HASH" >>"$OUT/$name.toml"
        fi
        # wharf-pasv0: the same server with passive_ports = "0-0" (the kernel picks any
        # free port), which sidesteps TIME_WAIT on a fixed range.
        [[ $name == wharf-pasv0 ]] && sed -i 's/^passive_ports = .*/passive_ports = "0-0"/' "$OUT/$name.toml"
        cmd=("$WHARF_BIN" --config "$OUT/$name.toml")
        # wharf-smol: the same server and config on the smol runtime.
        if [[ $name == wharf-smol ]]; then cmd+=(--runtime smol); fi
        ;;
    vsftpd)
        fill "$HERE/configs/vsftpd.conf.in" >"$OUT/vsftpd.conf"
        cmd=(env LD_LIBRARY_PATH="$SCRATCH/peers/vsftpd/usr/lib/x86_64-linux-gnu"
            "$SCRATCH/peers/vsftpd/usr/sbin/vsftpd" "$OUT/vsftpd.conf") ;;
    pureftpd)
        local args
        args=$(fill "$HERE/configs/pure-ftpd.args.in")
        # pure-ftpd admits at most half the passive range as users: no -p for idle.
        [[ $mode == idle ]] && args=${args/-p $PASV_MIN:$PASV_MAX/}
        # shellcheck disable=SC2206
        cmd=("$SCRATCH/peers/pure-ftpd/usr/sbin/pure-ftpd" $args) ;;
    pyftpdlib)
        cmd=("$SCRATCH/venv/bin/python" "$HERE/configs/pyftpdlib_server.py" "$PORT"
            "$PASV_MIN" "$PASV_MAX" "$DATA" "$BENCH_USER" "$BENCH_PASS" "$TLS_PEM") ;;
    *) log "unknown server $name"; return 1 ;;
    esac
    CG=$CG_ROOT/wharf-bench-$name
    if [[ -d $CG_ROOT ]] && { [[ -d $CG ]] || mkdir "$CG" 2>/dev/null; }; then
        sh -c 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"' sh "$CG" "${cmd[@]}" \
            >>"$OUT/$name.stdout" 2>>"$OUT/$name.stderr" 0<>"$OUT/$name.fd0" &
    else
        CG=""
        "${cmd[@]}" >>"$OUT/$name.stdout" 2>>"$OUT/$name.stderr" 0<>"$OUT/$name.fd0" &
    fi
    SERVER_PID=$!
    for _ in $(seq 100); do
        if timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$PORT" 2>/dev/null; then
            log "started $name pid $SERVER_PID port $PORT${CG:+ cgroup $CG}"
            if [[ $name == wharf-admin ]]; then
                (while kill -0 "$SERVER_PID" 2>/dev/null; do
                    curl -s -o /dev/null --max-time 5 -u "admin:$BENCH_PASS" \
                        "http://127.0.0.1:$ADMIN_PORT/metrics" || true
                    sleep 1
                done) &
                SCRAPER_PID=$!
            fi
            return 0
        fi
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    log "$name did not start; see $OUT/$name.stderr"
    stop_server
    return 1
}

stop_server() {
    if [[ -n ${SCRAPER_PID:-} ]]; then
        kill "$SCRAPER_PID" 2>/dev/null || true
        wait "$SCRAPER_PID" 2>/dev/null || true
        SCRAPER_PID=""
    fi
    [[ -n $SERVER_PID ]] || return 0
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    # Session processes of forking servers that outlived their parent: by PID, from the cgroup.
    if [[ -n $CG && -f $CG/cgroup.procs ]]; then
        for p in $(cat "$CG/cgroup.procs"); do kill -KILL "$p" 2>/dev/null || true; done
    fi
    SERVER_PID=""
}
trap 'stop_server' EXIT
trap 'stop_server; exit 130' INT TERM

# load SERVER SCENARIO ARGS... — one loadgen run, bounded in time, appended to results.
load() {
    local name=$1 scenario=$2
    shift 2
    local cpu=(--server-pid "$SERVER_PID")
    [[ -n $CG ]] && cpu+=(--server-cgroup "$CG")
    local line
    line=$(timeout 400 "$LOAD" "$scenario" --server "$name" --port "$PORT" \
        --user "$BENCH_USER" --pass "$BENCH_PASS" "${cpu[@]}" --tag "run$RUN" "$@" 2>>"$LOG") ||
        line=${line:-"{\"scenario\":\"$scenario\",\"server\":\"$name\",\"tag\":\"run$RUN\",\"ok\":false,\"error\":\"loadgen exit $? (timeout or crash)\"}"}
    echo "$line" >>"$RESULTS"
    log "$name $scenario: ${line:0:300}"
}

# Pin every thread of the server tree to CPU 0 (for cmd-latency), or unpin.
pin_server() {
    local p
    for p in $(cat "$CG/cgroup.procs" 2>/dev/null || echo "$SERVER_PID"); do
        taskset -a -p -c "$1" "$p" >/dev/null 2>&1 || true
    done
}

run_limits() {
    local name=machine
    SERVER_PID=$$ CG=""
    PORT=1
    line() { echo "$1" >>"$RESULTS"; log "limits: ${1:0:300}"; }
    line "$(timeout 120 "$LOAD" echo-floor --server $name --tag "run$RUN" --count "$NOOPS" --echo-cpu 0 --pin-cpu 1)" || true
    line "$(timeout 120 "$LOAD" echo-floor --server $name --tag "run$RUN" --count "$NOOPS")" || true
    line "$(timeout 120 "$LOAD" raw-tcp --server $name --tag "run$RUN" --size-mib 4096)" || true
    line "$(timeout 120 "$LOAD" raw-readwrite --server $name --tag "run$RUN" --path "$DATA/big.bin")" || true
    line "$(timeout 120 "$LOAD" raw-sendfile --server $name --tag "run$RUN" --path "$DATA/big.bin")" || true
    SERVER_PID=""
}

IFS=, read -r -a SERVER_LIST <<<"$SERVERS"
IFS=, read -r -a IDLE_LIST <<<"$IDLE_COUNTS"
IFS=, read -r -a XFER_LIST <<<"$XFER_COUNTS"
for RUN in $(seq "$RUNS"); do
    has "$SCENARIOS" limits && run_limits
    for s in "${SERVER_LIST[@]}"; do
        if has "$SCENARIOS" retr-big || has "$SCENARIOS" stor-big || has "$SCENARIOS" sessions ||
            has "$SCENARIOS" cmd-latency || has "$SCENARIOS" list; then
            if start_server "$s"; then
                has "$SCENARIOS" retr-big && load "$s" retr-big --path big.bin --count 2
                has "$SCENARIOS" stor-big && load "$s" stor-big --size-mib 512 --count 3
                if has "$SCENARIOS" cmd-latency; then
                    pin_server 0
                    load "$s" cmd-latency --count "$NOOPS" --pin-cpu 1
                    pin_server 0-$(($(nproc) - 1))
                fi
                has "$SCENARIOS" list && load "$s" list --path list10k --count 5
                # Last: it leaves thousands of passive ports in TIME_WAIT.
                has "$SCENARIOS" sessions && load "$s" sessions --path small.bin --clients 16 --duration "$DURATION"
                stop_server
            fi
        fi
        # Many sessions at once, on a fresh server: concurrent transfers, control latency
        # under load, big listings.
        if { has "$SCENARIOS" xfer || has "$SCENARIOS" ctl-load || has "$SCENARIOS" list-big; } &&
            start_server "$s"; then
            if has "$SCENARIOS" xfer; then
                for n in "${XFER_LIST[@]}"; do
                    load "$s" xfer-down --label "xfer-down-$n" --clients "$n" \
                        --path "x${XFER_MIB}m.bin" --timeout 60
                done
                for n in "${XFER_LIST[@]}"; do
                    up=$((UP_TOTAL_MIB / n < XFER_MIB ? UP_TOTAL_MIB / n : XFER_MIB))
                    load "$s" xfer-up --label "xfer-up-$n" --clients "$n" --size-mib "$up" --timeout 60
                done
            fi
            has "$SCENARIOS" ctl-load && load "$s" ctl-latency --clients 50 --transfers 100 \
                --interval-ms 20 --duration "$DURATION" --path "x${XFER_MIB}m.bin" --timeout 60
            if has "$SCENARIOS" list-big; then
                load "$s" list --label list100k --path list100k --count 2 --timeout 120
                load "$s" tree --path deep --count 1000
            fi
            stop_server
        fi
        # The login storm, on a fresh server.
        if has "$SCENARIOS" storm && start_server "$s" idle; then
            if ((STORM + 100 > NOFILE)); then
                echo "{\"scenario\":\"storm\",\"server\":\"$s\",\"tag\":\"run$RUN\",\"ok\":false,\"error\":\"skipped: open-files limit $NOFILE < $STORM sessions\"}" >>"$RESULTS"
            else
                load "$s" storm --count "$STORM" --window 1 --timeout 60 --max-time 180
            fi
            stop_server
        fi
        # FTPS (explicit, PROT P) on a fresh server: TIME_WAIT drained, same scenarios.
        if has "$SCENARIOS" ftps && start_server "$s"; then
            load "$s" retr-big --tls explicit --path big.bin --count 2
            load "$s" stor-big --tls explicit --size-mib 512 --count 3
            load "$s" sessions --tls explicit --path small.bin --clients 16 --duration "$DURATION"
            stop_server
        fi
        if has "$SCENARIOS" ftps && start_server "$s" idle; then
            load "$s" idle --tls explicit --count 1000 --threads 8 --hold 3 --max-time 180 --timeout 10
            stop_server
        fi
        if has "$SCENARIOS" idle; then
            for n in "${IDLE_LIST[@]}"; do
                # The client needs one fd per session; so does the best server.
                if ((n + 100 > NOFILE)); then
                    echo "{\"scenario\":\"idle\",\"server\":\"$s\",\"tag\":\"run$RUN\",\"ok\":false,\"requested\":$n,\"error\":\"skipped: open-files limit $NOFILE < $n sessions\"}" >>"$RESULTS"
                    log "$s idle $n skipped: open-files limit $NOFILE"
                    continue
                fi
                start_server "$s" idle || continue
                load "$s" idle --count "$n" --threads 8 --hold 3 --max-time 180 --timeout 10
                stop_server
                sleep 2 # let TIME_WAIT and the server's exit settle
            done
        fi
    done
done
python3 "$HERE/summarize.py" "$RESULTS" | tee "$OUT/summary.md"
log "results: $RESULTS; summary: $OUT/summary.md"
