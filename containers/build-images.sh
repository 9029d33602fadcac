#!/usr/bin/env bash
# Builds the container images' contexts and, when a container engine is
# installed (podman, buildah or docker), the images themselves.
#
#   containers/build-images.sh [--vmshim PATH] [--out DIR] [--tag TAG] [--context-only]
#
# Without --vmshim it builds the release binary (scripts/build-release.sh:
# static Swift stdlib, so the image needs no Swift runtime). The context of
# each image is written to DIR/<image>/ (default containers/out); with no
# engine present (as on CI) the script stops there, after checking that the
# binaries in the contexts run. Two images: the vmshim launcher (one VM per
# pod) and vmshim-registrar (one per node); the registrar binary is taken
# from beside vmshim.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
vmshim=
out=$here/containers/out
tag=localhost/vmshim:dev
context_only=false
while [[ $# -gt 0 ]]; do
  case $1 in
    --vmshim) vmshim=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    --context-only) context_only=true; shift ;;
    *) echo "build-images: unknown argument '$1' (see the header of $0)" >&2; exit 2 ;;
  esac
done
if [[ -z $vmshim ]]; then
  vmshim=$("$here/scripts/build-release.sh" | tail -n 1)
fi
[[ -x $vmshim ]] || { echo "build-images: no executable vmshim at $vmshim" >&2; exit 1; }

registrar=$(dirname "$vmshim")/vmshim-registrar
[[ -x $registrar ]] || { echo "build-images: no executable vmshim-registrar beside $vmshim" >&2; exit 1; }
registrar_tag=${tag%%:*}-registrar:${tag##*:}

# make_context IMAGE BINARY: the context directory holds the Containerfile and the binary.
make_context() {
  local context=$out/$1
  rm -rf "$context"
  mkdir -p "$context"
  cp "$here/containers/Containerfile.$1" "$context/Containerfile"
  cp "$2" "$context/$(basename "$2")"
  "$context/$(basename "$2")" --version >/dev/null || { echo "build-images: $context/$(basename "$2") does not run" >&2; exit 1; }
}
make_context vmshim "$vmshim"
make_context registrar "$registrar"
echo "build-images: contexts for $tag in $out/vmshim and $registrar_tag in $out/registrar"
$context_only && exit 0

# An engine counts only if it works (a docker CLI without its daemon does not).
engine=
for candidate in podman buildah docker; do
  if command -v "$candidate" >/dev/null && "$candidate" info >/dev/null 2>&1; then engine=$candidate; break; fi
done
if [[ -z $engine ]]; then
  echo "build-images: no working container engine here (podman, buildah or docker); build with: podman build -t $tag $out/vmshim; podman build -t $registrar_tag $out/registrar"
  exit 0
fi
build() { # tag context
  case $engine in
    buildah) buildah bud -t "$1" -f "$2/Containerfile" "$2" ;;
    *) "$engine" build -t "$1" -f "$2/Containerfile" "$2" ;;
  esac
}
build "$tag" "$out/vmshim"
build "$registrar_tag" "$out/registrar"
