#!/usr/bin/env bash
# Builds the release vmshim the way it is deployed and benchmarked.
#
# --static-swift-stdlib and a non-PIE executable: each shim starts with every
# guest, and a dynamically linked, position-independent Swift binary spends
# about 8 ms in relocations and dirties pages that count against the shim's
# private memory (bench/README.md has the figures).
set -euo pipefail
cd "$(dirname "$0")/.."
for product in vmshim vmshim-registrar vmshim-registrar-load; do
  swift build -c release --product "$product" --static-swift-stdlib -Xlinker -no-pie "$@"
done
echo "$(swift build -c release --show-bin-path)/vmshim"
