#!/usr/bin/env bash
# bench/setup.sh — prepare what bench/run.sh needs; idempotent.
#   bench/setup.sh data    the data dir on tmpfs ($DATA): big.bin (1 GiB random),
#                          small.bin (4 KiB), list10k/ (10,000 files of 0-999 bytes),
#                          x${XFER_MIB}m.bin (64 MiB random, for concurrent transfers),
#                          list100k/ (100,000 files), deep/ (1,000 nested dirs `d`,
#                          10 small files at each level)
#   bench/setup.sh peers   vsftpd, pure-ftpd (apt-get download + dpkg -x, never installed
#                          system-wide) and pyftpdlib (pip, in a venv) under $SCRATCH
#   bench/setup.sh account the local account $BENCH_USER with a cheap sha512crypt hash
#   bench/setup.sh all     all three
set -euo pipefail

DATA=${DATA:-/dev/shm/wharf-bench}
SCRATCH=${SCRATCH:-/work/bench-scratch}
BENCH_USER=${BENCH_USER:-wharfbench}
BENCH_PASS=${BENCH_PASS:-wharfbench}
BIG_MIB=${BIG_MIB:-1024}
XFER_MIB=${XFER_MIB:-64}

log() { echo "setup: $*" >&2; }

setup_data() {
    mkdir -p "$DATA/list10k" "$DATA/up"
    if [[ $(stat -c %s "$DATA/big.bin" 2>/dev/null || echo 0) -ne $((BIG_MIB << 20)) ]]; then
        log "writing $DATA/big.bin ($BIG_MIB MiB random)"
        head -c $((BIG_MIB << 20)) /dev/urandom >"$DATA/big.bin"
    fi
    [[ -f $DATA/small.bin ]] || head -c 4096 /dev/urandom >"$DATA/small.bin"
    local n
    n=$(find "$DATA/list10k" -maxdepth 1 -type f | wc -l)
    if [[ $n -ne 10000 ]]; then
        log "creating $DATA/list10k (10,000 files)"
        python3 - "$DATA/list10k" <<'EOF'
import os, sys
d = sys.argv[1]
for i in range(10000):
    with open(os.path.join(d, f"file-{i:05d}.txt"), "wb") as f:
        f.write(b"x" * (i % 1000))
EOF
    fi
    local x=$DATA/x${XFER_MIB}m.bin
    if [[ $(stat -c %s "$x" 2>/dev/null || echo 0) -ne $((XFER_MIB << 20)) ]]; then
        log "writing $x ($XFER_MIB MiB random)"
        head -c $((XFER_MIB << 20)) /dev/urandom >"$x"
    fi
    if [[ ! -f $DATA/list100k.done ]]; then
        log "creating $DATA/list100k (100,000 files)"
        mkdir -p "$DATA/list100k"
        python3 - "$DATA/list100k" <<'EOF'
import os, sys
d = sys.argv[1]
for i in range(100000):
    with open(os.path.join(d, f"file-{i:06d}.txt"), "wb") as f:
        f.write(b"x" * (i % 1000))
EOF
        touch "$DATA/list100k.done"
    fi
    if [[ ! -f $DATA/deep.done ]]; then
        log "creating $DATA/deep (1,000 nested directories)"
        rm -rf "$DATA/deep"
        python3 - "$DATA/deep" <<'EOF'
import os, sys
os.mkdir(sys.argv[1])
# Relative steps (the full path grows to 2,000 characters).
os.chdir(sys.argv[1])
for level in range(1000):
    for j in range(10):
        with open(f"f{j}.txt", "wb") as f:
            f.write(b"x" * (level + j))
    if level < 999:
        os.mkdir("d")
        os.chdir("d")
EOF
        touch "$DATA/deep.done"
    fi
    # The account's servers write uploads into $DATA; make it theirs.
    if id "$BENCH_USER" >/dev/null 2>&1; then chown -R "$BENCH_USER:" "$DATA"; fi
}

# Extract a Debian package (and listed extra library packages) under $SCRATCH/peers/NAME.
extract() {
    local name=$1
    shift
    local dir=$SCRATCH/peers/$name
    [[ -d $dir/usr/sbin ]] && return 0
    mkdir -p "$dir" "$SCRATCH/debs"
    (cd "$SCRATCH/debs" && for p in "$@"; do
        ls "${p}"_*.deb >/dev/null 2>&1 || apt-get download "$p" >/dev/null 2>&1 || {
            apt-get update >/dev/null 2>&1
            apt-get download "$p" >/dev/null
        }
    done)
    for p in "$@"; do dpkg -x "$SCRATCH/debs/${p}"_*.deb "$dir"; done
    log "extracted $* into $dir"
}

setup_peers() {
    extract vsftpd vsftpd libwrap0
    extract pure-ftpd pure-ftpd
    if [[ ! -x $SCRATCH/venv/bin/python ]]; then
        python3 -m venv "$SCRATCH/venv"
    fi
    # TLS_FTPHandler (FTPS beside plaintext, as every server here) needs pyOpenSSL.
    if ! "$SCRATCH/venv/bin/python" -c 'import argon2; from pyftpdlib.handlers import TLS_FTPHandler' 2>/dev/null; then
        log "pip install pyftpdlib argon2-cffi pyopenssl into $SCRATCH/venv"
        "$SCRATCH/venv/bin/pip" install -q pyftpdlib argon2-cffi pyopenssl
    fi
    mkdir -p /var/run/vsftpd/empty # vsftpd's secure_chroot_dir
}

setup_account() {
    if ! id "$BENCH_USER" >/dev/null 2>&1; then
        log "useradd $BENCH_USER (home $DATA)"
        useradd --no-create-home --home-dir "$DATA" --shell /bin/bash "$BENCH_USER"
    fi
    # sha512crypt with 1,000 rounds (~0.4 ms); Debian's default yescrypt costs ~16 ms a
    # login and would measure the hash, not the server.
    local hash
    hash=$(python3 -W ignore -c 'import crypt,sys; print(crypt.crypt(sys.argv[1], "$6$rounds=1000$wharfbenchsalt$"))' "$BENCH_PASS" 2>/dev/null ||
        openssl passwd -6 -salt wharfbenchsalt "$BENCH_PASS")
    usermod -p "$hash" "$BENCH_USER"
    chown -R "$BENCH_USER:" "$DATA" 2>/dev/null || true
}

case ${1:-all} in
data) setup_data ;;
peers) setup_peers ;;
account) setup_account ;;
all)
    setup_peers
    setup_data
    setup_account
    ;;
*)
    echo "usage: $0 [data|peers|account|all]" >&2
    exit 2
    ;;
esac
