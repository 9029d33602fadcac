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
# binary in the context runs. Only the vmshim launcher image exists so far:
# the registrar image follows with vmshim-registrar.
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

context=$out/vmshim
rm -rf "$context"
mkdir -p "$context"
cp "$here/containers/Containerfile.vmshim" "$context/Containerfile"
cp "$vmshim" "$context/vmshim"
"$context/vmshim" --version >/dev/null || { echo "build-images: $context/vmshim does not run" >&2; exit 1; }
echo "build-images: context for $tag in $context"
$context_only && exit 0

# An engine counts only if it works (a docker CLI without its daemon does not).
engine=
for candidate in podman buildah docker; do
  if command -v "$candidate" >/dev/null && "$candidate" info >/dev/null 2>&1; then engine=$candidate; break; fi
done
if [[ -z $engine ]]; then
  echo "build-images: no working container engine here (podman, buildah or docker); build with: podman build -t $tag $context"
  exit 0
fi
case $engine in
  buildah) buildah bud -t "$tag" -f "$context/Containerfile" "$context" ;;
  *) "$engine" build -t "$tag" -f "$context/Containerfile" "$context" ;;
esac
