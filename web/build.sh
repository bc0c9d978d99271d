#!/usr/bin/env bash
# Build the browser module: the library for wasm32-unknown-unknown with the `web` feature (wgpu's
# WebGPU backend, the exports of src/web.rs), then wasm-bindgen's JS glue, into web/pkg/.
#   bash web/build.sh            # release build
# Needs: rustup target add wasm32-unknown-unknown; wasm-bindgen-cli of exactly the version of the
# wasm-bindgen crate in Cargo.lock (installed here if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

want=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
have=$(wasm-bindgen --version 2>/dev/null | awk '{ print $2 }' || true)
if [ "$have" != "$want" ]; then
  echo "web/build.sh: installing wasm-bindgen-cli $want (found '${have:-none}')"
  cargo install wasm-bindgen-cli --version "$want"
fi

# A cdylib is what wasm-bindgen reads; asking for it here keeps the native library an rlib only.
cargo rustc --lib --release --locked --target wasm32-unknown-unknown --features web --crate-type cdylib
wasm-bindgen --target web --out-dir web/pkg \
  target/wasm32-unknown-unknown/release/ddpm_wgpu.wasm
ls -l web/pkg
