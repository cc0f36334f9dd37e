#!/usr/bin/env bash
# Builds the tests' real Kubernetes control plane from Go modules (pinned by
# go.mod/go.sum here): etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler and kwok (with kwok's stage configuration). The binaries are cached machine-wide by version and
# by a hash of the module files, so a second run only checks. Prints the
# folder that holds them on its last line.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
version=v1.37.2
hash="$(cat go.mod go.sum etcd/main.go kwok/go.mod kwok/go.sum build.sh | sha256sum | cut -c1-12)"
cache="${TIDEGATE_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tidegate}"
out="$cache/real-kube-$version-$hash"
if [[ -f $out/.complete ]]; then
  echo "$out"
  exit 0
fi
command -v go >/dev/null || { echo "real-kube: go is not installed (Go 1.26 is needed)" >&2; exit 1; }
echo "real-kube: building etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok $version (cold: about 15 minutes on 2 cores)" >&2
start=$(date +%s)
tmp="$out.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
# Without these the binaries call themselves v0.0.0-master, and the API
# server's compatibility version (and kubectl's skew check) go wrong.
v=k8s.io/component-base/version
c=k8s.io/client-go/pkg/version
ldflags="-s -w"
for p in $v $c; do
  ldflags+=" -X $p.gitVersion=$version -X $p.gitMajor=1 -X $p.gitMinor=37 -X $p.gitTreeState=clean"
done
export GOFLAGS="${GOFLAGS:-} -mod=readonly -trimpath"
export CGO_ENABLED=0
go build -ldflags "$ldflags" -o "$tmp/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler \
  ./etcd
(cd kwok && go build -ldflags "-s -w" -o "$tmp/" sigs.k8s.io/kwok/cmd/kwok)
# kwok's own "fast" stages (from its module): nodes Ready at once with a
# heartbeat Lease, pods Ready at once, Jobs' pods Succeeded, deleted pods gone.
stages="$(cd kwok && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)/kustomize/stage"
for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
  pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
  echo "---"
  cat "$stages/$f"
done > "$tmp/kwok-stages.yaml"
secs=$(($(date +%s) - start))
echo "$secs" > "$tmp/build-seconds"
touch "$tmp/.complete"
rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
# Earlier builds of other versions are no longer used.
find "$cache" -maxdepth 1 -name 'real-kube-*' ! -name "$(basename "$out")" -exec rm -rf {} +
echo "real-kube: built in ${secs}s into $out" >&2
echo "$out"
