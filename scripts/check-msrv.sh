#!/usr/bin/env bash
# Checks that the workspace builds with the oldest Rust it declares (`rust-version` in
# Cargo.toml), so that the declaration stays true: lint and tests run on the current stable, which
# accepts what an older compiler refuses. Installs that toolchain with rustup when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(sed -n 's/^rust-version = "\(.*\)"$/\1/p' Cargo.toml)
if [ -z "$version" ]; then
  echo "check-msrv: no rust-version in Cargo.toml" >&2
  exit 1
fi
if ! command -v rustup >/dev/null; then
  echo "check-msrv: Rust $version is checked with rustup, which is not installed (https://rustup.rs)" >&2
  exit 1
fi
if ! rustup run "$version" rustc --version >/dev/null 2>&1; then
  echo "installing Rust $version (the workspace's rust-version)"
  rustup toolchain install "$version" --profile minimal --no-self-update
fi
# A target directory of its own, so that this build and the current compiler's do not evict
# each other.
cargo "+$version" check --workspace --all-targets --locked --target-dir target/msrv
