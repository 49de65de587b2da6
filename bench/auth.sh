#!/usr/bin/env bash
# Logins per second through each account provider: the users file (argon2id), LDAP
# (a local OpenLDAP slapd, search then bind) with and without the login cache, and PAM
# (pam_unix, a sha512-crypt account). Each row: wharf-load `logins` (connect, USER,
# PASS, QUIT) with --clients threads for --duration seconds against a fresh wharf.
#
#   bench/auth.sh [--clients 8] [--duration 5] [--runtime mio]
#
# Needs root (a system account, a PAM service file, slapd), slapd and ldap-utils.
# Everything it makes (the account, /etc/pam.d/wharf-bench, slapd, wharf, files under
# $SCRATCH/auth) is removed or stopped by PID when it exits.
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS=8
DURATION=5
RUNTIME=mio
while [ $# -gt 0 ]; do
  case "$1" in
    --clients) CLIENTS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --runtime) RUNTIME=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "bench/auth.sh needs root" >&2; exit 1; }
[ -x /usr/sbin/slapd ] || { echo "bench/auth.sh needs slapd (apt-get install slapd ldap-utils)" >&2; exit 1; }

SCRATCH=${SCRATCH:-/work/bench-scratch}
DIR=$SCRATCH/auth
rm -rf "$DIR"; mkdir -p "$DIR/site" "$DIR/db"
WHARF_BIN=${WHARF_BIN:-target/release/wharf}
cargo build --release -q -p wharf-server -p wharf-bench
LOAD=target/release/wharf-load

PAM_USER=wharfbenchpam
PAM_PASS=Bench-pw-1
SLAPD_PID=
WHARF_PID=
cleanup() {
  [ -n "$WHARF_PID" ] && kill "$WHARF_PID" 2>/dev/null && wait "$WHARF_PID" 2>/dev/null || true
  [ -n "$SLAPD_PID" ] && kill "$SLAPD_PID" 2>/dev/null && wait "$SLAPD_PID" 2>/dev/null || true
  userdel "$PAM_USER" 2>/dev/null || true
  rm -f /etc/pam.d/wharf-bench
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The directory: one user, and a service account that searches.
LDAP_PORT=$(free_port)
cat > "$DIR/slapd.conf" <<EOF
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
database mdb
maxsize 67108864
suffix "dc=example,dc=com"
rootdn "cn=admin,dc=example,dc=com"
directory $DIR/db
access to attrs=userPassword by anonymous auth by self read by * none
access to * by users read by * none
EOF
cat > "$DIR/data.ldif" <<EOF
dn: dc=example,dc=com
objectClass: dcObject
objectClass: organization
o: Example
dc: example

dn: ou=people,dc=example,dc=com
objectClass: organizationalUnit
ou: people

dn: cn=wharf,dc=example,dc=com
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: wharf
userPassword: service-pw

dn: uid=carol,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
uid: carol
cn: carol
sn: carol
userPassword: $(slappasswd -h '{SSHA}' -s s3cret)
EOF
slapadd -q -f "$DIR/slapd.conf" -l "$DIR/data.ldif"
/usr/sbin/slapd -f "$DIR/slapd.conf" -h "ldap://127.0.0.1:$LDAP_PORT/" -d 0 >"$DIR/slapd.log" 2>&1 &
SLAPD_PID=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$LDAP_PORT) 2>/dev/null && break; sleep 0.1; done

# The system account, with sha512-crypt at its default 5,000 rounds (Debian's own
# default here, ENCRYPT_METHOD SHA512 in /etc/login.defs).
userdel "$PAM_USER" 2>/dev/null || true
useradd -M -N -d "$DIR/site" -s /bin/sh "$PAM_USER"
echo "$PAM_USER:$PAM_PASS" | chpasswd -c SHA512 -s 5000
printf 'auth required pam_unix.so\naccount required pam_unix.so\n' > /etc/pam.d/wharf-bench

HASH=$(echo s3cret | "$WHARF_BIN" passwd)
run() { # name cache auth-toml user password
  local name=$1 cache=$2 auth=$3 user=$4 pass=$5 port
  port=$(free_port)
  cat > "$DIR/wharf.toml" <<EOF
[server]
listen = ["127.0.0.1:$port"]
runtime = "$RUNTIME"
login_cache = $cache

[site]
root = "$DIR/site"
failed_login_delay = 0

[[users]]
name = "alice"
password_hash = "$HASH"

$auth
EOF
  "$WHARF_BIN" --config "$DIR/wharf.toml" >"$DIR/wharf.log" 2>&1 &
  WHARF_PID=$!
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
  local json
  json=$(timeout 120 "$LOAD" logins --host 127.0.0.1 --port "$port" --user "$user" --pass "$pass" \
    --clients "$CLIENTS" --duration "$DURATION" --server "$name" --server-pid "$WHARF_PID")
  kill "$WHARF_PID"; wait "$WHARF_PID" 2>/dev/null || true; WHARF_PID=
  echo "$json" >> "$DIR/results.jsonl"
  python3 - "$name" "$json" <<'PY'
import json, sys
r = json.loads(sys.argv[2])
print(f"| {sys.argv[1]} | {r['logins_per_s']:,.0f} | {r.get('logins_per_server_cpu_s', 0):,.0f} | {r.get('p50_ms', 0):.2f} / {r.get('p99_ms', 0):.2f} | {r['errors']} |")
PY
}

LDAP="[auth]
providers = [\"users\", \"ldap\"]
[auth.ldap]
url = \"ldap://127.0.0.1:$LDAP_PORT\"
allow_plaintext = true
bind_dn = \"cn=wharf,dc=example,dc=com\"
bind_password = \"service-pw\"
base_dn = \"dc=example,dc=com\"
user_filter = \"(uid={user})\"
group_attribute = \"\""
PAM="[auth]
providers = [\"users\", \"pam\"]
[auth.pam]
service = \"wharf-bench\""

echo "runtime $RUNTIME, $CLIENTS clients, $DURATION s per row"
echo
echo "| provider | logins/s | logins per server CPU-s | p50 / p99 ms | errors |"
echo "|---|---|---|---|---|"
run "users file (argon2id m=19456 t=2), cache off" 0 "" alice s3cret
run "users file (argon2id), cache on" 900 "" alice s3cret
run "LDAP (slapd, search + bind), cache off" 0 "$LDAP" carol s3cret
run "LDAP (slapd, search + bind), cache on" 900 "$LDAP" carol s3cret
run "PAM (pam_unix, sha512-crypt 5000 rounds), cache off" 0 "$PAM" "$PAM_USER" "$PAM_PASS"
run "PAM (pam_unix), cache on" 900 "$PAM" "$PAM_USER" "$PAM_PASS"
