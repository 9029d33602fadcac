#!/usr/bin/env bash
# Regenerates the Swift code for the RPC specs under proto/ into the
# Generated/ folders next to the code that serves them. The output is
# committed, so builds never need protoc or the plugins (building the plugins
# takes several minutes). Run after changing any .proto file:
#
#   scripts/gen-protos.sh
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

command -v protoc >/dev/null || { echo "gen-protos: protoc is missing: apt-get install protobuf-compiler" >&2; exit 1; }
swift build --product protoc-gen-swift >/dev/null
swift build --product protoc-gen-grpc-swift-2 >/dev/null
bin=$(swift build --show-bin-path)

generate() { # proto-file output-dir
  mkdir -p "$2"
  protoc --proto_path=proto \
    --plugin=protoc-gen-swift="$bin/protoc-gen-swift" \
    --plugin=protoc-gen-grpc-swift-2="$bin/protoc-gen-grpc-swift-2" \
    --swift_out="$2" --swift_opt=Visibility=Public \
    --grpc-swift-2_out="$2" --grpc-swift-2_opt=Visibility=Public \
    "$1"
}

generate vmshim/control/v1/control.proto Sources/ShimKit/ControlAPI/Generated
generate vmshim/registrar/v1/registrar.proto Sources/ShimKit/Registration/Generated
echo "generated: $(find Sources/*/*/Generated -name '*.swift' | tr '\n' ' ')"
