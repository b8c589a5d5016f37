#!/usr/bin/env bash
# The lean binary (`cargo build --release --no-default-features --features jsonl`) runs the embedded
# default configuration (config/remix.yaml: webhook in, JSONL out), from a scratch working directory.
# Usage: scripts/lean-smoke.sh PATH/TO/remix
set -euo pipefail
fail() { echo "lean-smoke: FAIL: $*" >&2; exit 1; }
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
R=$(realpath "$1"); W=$(mktemp -d); PID=
export REMIX_CONFIG="$(cd "$(dirname "$0")/.." && pwd)/config/remix.yaml"
trap '[ -n "$PID" ] && kill -9 $PID 2>/dev/null; rm -rf "$W"' EXIT
cd "$W"  # data_dir and the dataset directory are relative to the working directory
export REMIX_ADMIN_ADDR=127.0.0.1:$(port) REMIX_WEBHOOK_ADDR=127.0.0.1:$(port)
"$R" check | grep -q "jsonl" || fail "remix check does not list the jsonl kind"
if "$R" check 2>/dev/null | grep -q "postgres"; then fail "the lean binary has the postgres kind"; fi
"$R" run >run.log 2>&1 & PID=$!
for _ in $(seq 100); do curl -fsS -o /dev/null "http://$REMIX_ADMIN_ADDR/readyz" 2>/dev/null && break; sleep 0.1; done
curl -fsS -H 'Content-Type: application/json' -d '[{"id": 1, "email": "ada@example.com"}]' \
  "http://$REMIX_WEBHOOK_ADDR/customers" >/dev/null || fail "POST /customers ($(cat run.log))"
for _ in $(seq 100); do cat datasets/customer/*.jsonl 2>/dev/null | grep -q ada@example.com && break; sleep 0.1; done
cat datasets/customer/*.jsonl 2>/dev/null | grep -q ada@example.com || fail "no dataset line ($(cat run.log))"
kill "$PID"; wait "$PID" || true; PID=
echo "lean-smoke: the jsonl-only binary ran the default configuration"
