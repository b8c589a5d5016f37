#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls this). Installs what the tests need on a fresh
# Debian machine (and the connector tests' servers, scripts/test-servers.sh), then: format check,
# one release build of every target linted by clippy, every test (the same build, shared with the
# contract smoke test's), the lean jsonl-only binary on the default config, and the CLI/config
# contract in ../shared/contract/smoke.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }
# PostgreSQL server binaries: the PostgreSQL tests start their own throwaway servers (remix-pgtest).
have_pg() { ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { need pg_config && [ -x "$(pg_config --bindir)/initdb" ]; }; }
missing=()
need curl || missing+=(curl)
need python3 || missing+=(python3)
need openssl || missing+=(openssl)  # test certificates for the TLS tests
have_pg || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && need apt-get; then
    echo "== installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "test.sh: needs ${missing[*]} (apt-get install ${missing[*]})" >&2; exit 1
  fi
fi

# Build cache. CI runs on the machine the work was done on, so a clone's target/ is a link to one
# per-user directory: dependencies compiled once are reused by every later run (what CI services do
# with a cache of target/). Cargo's fingerprints decide what is rebuilt, as in any target dir. An
# explicit CARGO_TARGET_DIR, an existing target/, or REMIX_BUILD_CACHE=off keeps the build local.
# Past REMIX_BUILD_CACHE_GIB_MAX (default 40) the cache is emptied first, so it cannot fill the disk.
if [ -z "${CARGO_TARGET_DIR:-}" ] && [ ! -e target ] && [ "${REMIX_BUILD_CACHE:-on}" != off ]; then
  cache="${XDG_CACHE_HOME:-$HOME/.cache}/remix-target"
  mkdir -p "$cache"
  cache_gib=$(( $(du -sk "$cache" | cut -f1) / 1024 / 1024 ))
  if [ "$cache_gib" -ge "${REMIX_BUILD_CACHE_GIB_MAX:-40}" ]; then
    echo "== build cache $cache holds ${cache_gib} GiB: emptied"
    rm -rf "$cache" && mkdir -p "$cache"
  fi
  ln -s "$cache" target
  echo "== build cache: target -> $cache"
fi

echo "== test servers (once per machine, cached; scripts/test-servers.md)"
scripts/test-servers.sh --no-tansu

echo "== cargo fmt --check"
cargo fmt --all -- --check

# Clippy lints while the release build compiles, instead of in a `cargo clippy` pass of its own: that
# pass type-checks every dependency a second time (about 4 of CI's minutes on 2 cores). This is how
# `cargo clippy` itself works: clippy-driver wraps rustc for the workspace's own crates
# (RUSTC_WORKSPACE_WRAPPER) and reads the arguments after `--` from CLIPPY_ARGS. Exported, so every
# cargo below (the contract smoke test's build included) sees the same settings and reuses this build.
# The result equals `cargo clippy --workspace --all-targets --release -- -D warnings`.
RUSTC_WORKSPACE_WRAPPER=$(rustup which clippy-driver 2>/dev/null || command -v clippy-driver)
export RUSTC_WORKSPACE_WRAPPER
export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
echo "== cargo build --all-targets, linted (clippy -D warnings)"
cargo build --workspace --all-targets --release
echo "== cargo test"
cargo test --workspace --release
if [ -x ../shared/contract/smoke.sh ]; then
  echo "== contract smoke test"
  ../shared/contract/smoke.sh
fi
echo "== lean binary (--no-default-features --features jsonl) runs the default config"
# Same target dir (dependencies built with the same features are shared), then the full binary is
# put back in target/release. Only Remix's own crate is built at opt-level 0 (this binary is run
# once, not measured), to keep this step short.
cargo build --release -q --no-default-features --features jsonl --bin remix \
  --config 'profile.release.package.remix.opt-level=0'
cp target/release/remix target/remix-lean
scripts/lean-smoke.sh target/remix-lean
cargo build --release -q --bin remix
echo "all checks passed"
