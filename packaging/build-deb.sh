#!/usr/bin/env bash
# Builds the Debian package: target/debian/lngpt-collector_<version>-1_<arch>.deb
#   packaging/build-deb.sh              build the release binary, then the package
#   packaging/build-deb.sh --no-build   package the release binary already in target/release
# On a fresh Debian/Ubuntu machine with Rust it installs what it needs: dpkg-dev (dpkg-shlibdeps
# computes Depends), binutils (strips the binary) and cargo-deb (crates.io).
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0
target_dir=${CARGO_TARGET_DIR:-target}
build=yes
[ "${1:-}" = "--no-build" ] && build=no

need=()
command -v dpkg-shlibdeps >/dev/null || need+=(dpkg-dev)
command -v objcopy >/dev/null || need+=(binutils)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
  else
    echo "build-deb: install ${need[*]} first (apt-get install ${need[*]})" >&2
    exit 1
  fi
fi
if ! cargo deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
  cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked
fi

if [ "$build" = yes ]; then
  cargo build --release --locked
fi
bin="$target_dir/release/lngpt-collector"
[ -x "$bin" ] || { echo "build-deb: $bin is missing; run without --no-build" >&2; exit 1; }

# Man pages and completions from the clap definitions of this very binary; gzip -n keeps the
# package reproducible (no timestamp in the gzip header).
docs="$target_dir/release/docs"
rm -rf "$docs"
"$bin" generate-docs "$docs"
gzip -9n "$docs"/man/*.1

# --no-build: cargo-deb packages the binary above instead of building its own. Stripped, as
# Debian wants; the debug line tables stay in the unstripped target/release binary.
cargo deb --no-build --strip --no-separate-debug-symbols
ls -l "$target_dir"/debian/lngpt-collector_*.deb
