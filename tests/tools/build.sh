#!/usr/bin/env bash
# Builds the real tools that render and check what tidegate deploys, from
# their Go modules, each pinned by its own go.mod/go.sum beside this script
# (helm, kustomize and prometheus need different k8s.io versions, so one
# module each):
#   helm       helm.sh/helm/v4/cmd/helm                      (runtime image too)
#   kustomize  sigs.k8s.io/kustomize/kustomize/v5            (runtime image too)
#   registry   github.com/google/go-containerregistry/pkg/registry behind
#              registry/main.go (an in-memory OCI registry on loopback,
#              for the tests' oci:// charts)
#   promtool   github.com/prometheus/prometheus/cmd/promtool (checks
#              deploy/prometheus in the tests)
#
# build.sh                    builds all four into a machine-wide cache
#                             folder keyed by a hash of the module files and
#                             this script; a second run only checks. Prints
#                             the folder on its last line.
# build.sh --out DIR TOOL...  builds the named tools into DIR, no cache
#                             (deploy/Dockerfile's Go stage).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
all=(helm kustomize registry promtool)

out_dir=
tools=()
while (($#)); do
  case $1 in
    --out) out_dir="$2"; shift 2 ;;
    helm | kustomize | registry | promtool) tools+=("$1"); shift ;;
    *) echo "tools: unknown argument $1 (tools: ${all[*]}; --out DIR)" >&2; exit 2 ;;
  esac
done
((${#tools[@]})) || tools=("${all[@]}")

# The module version a tool's go.mod pins (the single source of truth for
# the version stamped into the binary).
modver() { (cd "$1" && go list -m -f '{{.Version}}' "$2"); }

# Builds tool $1 into folder $2 with the version flags its own release
# build uses, so `helm version`, `kustomize version` and `promtool
# --version` print the real version instead of a development one.
build_one() {
  local tool=$1 dest=$2 ldflags="-s -w" v
  case $tool in
    helm)
      v=$(modver helm helm.sh/helm/v4)
      ldflags+=" -X helm.sh/helm/v4/internal/version.version=$v"
      ldflags+=" -X helm.sh/helm/v4/internal/version.gitTreeState=clean"
      (cd helm && go build -ldflags "$ldflags" -o "$dest/" helm.sh/helm/v4/cmd/helm)
      ;;
    kustomize)
      v=$(modver kustomize sigs.k8s.io/kustomize/kustomize/v5)
      # The release's build date stands in for the build's own, so that
      # two builds of one version are the same binary.
      local when
      when=$(cd kustomize && go list -m -f '{{.Time.Format "2006-01-02T15:04:05Z"}}' sigs.k8s.io/kustomize/kustomize/v5)
      ldflags+=" -X sigs.k8s.io/kustomize/api/provenance.version=kustomize/$v"
      ldflags+=" -X sigs.k8s.io/kustomize/api/provenance.buildDate=$when"
      (cd kustomize && go build -ldflags "$ldflags" -o "$dest/" sigs.k8s.io/kustomize/kustomize/v5)
      ;;
    registry)
      (cd registry && go build -ldflags "$ldflags" -o "$dest/registry" .)
      ;;
    promtool)
      # Prometheus 3.x publishes its Go module as v0.3MM.P for 3.MM.P.
      v=$(modver promtool github.com/prometheus/prometheus)
      local n=${v#v0.}
      local minor=${n%%.*}
      v="3.$((10#${minor:1})).${n#*.}"
      local p=github.com/prometheus/common/version
      ldflags+=" -X $p.Version=$v -X $p.Branch=HEAD -X $p.BuildUser=tidegate"
      (cd promtool && go build -ldflags "$ldflags" -o "$dest/" github.com/prometheus/prometheus/cmd/promtool)
      ;;
  esac
}

command -v go >/dev/null || { echo "tools: go is not installed (Go 1.26 is needed)" >&2; exit 1; }
export GOFLAGS="${GOFLAGS:-} -mod=readonly -trimpath"
export CGO_ENABLED=0

if [[ -n $out_dir ]]; then
  mkdir -p "$out_dir"
  for t in "${tools[@]}"; do
    echo "tools: building $t" >&2
    build_one "$t" "$out_dir"
  done
  echo "$out_dir"
  exit 0
fi

hash="$(cat build.sh helm/go.mod helm/go.sum kustomize/go.mod kustomize/go.sum \
  registry/go.mod registry/go.sum registry/main.go promtool/go.mod promtool/go.sum | sha256sum | cut -c1-12)"
cache="${TIDEGATE_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tidegate}"
out="$cache/tools-$hash"
if [[ -f $out/.complete ]]; then
  echo "$out"
  exit 0
fi
mkdir -p "$cache"
# One cold build at a time on a machine (CI's background build and a test
# process may both ask); the second waits, then finds the folder complete.
exec 9>"$cache/tools.lock"
flock 9
if [[ ! -f $out/.complete ]]; then
  echo "tools: building ${all[*]} (cold: about 15 minutes on 2 cores)" >&2
  tmp="$out.tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  trap 'rm -rf "$tmp"' EXIT
  total=0
  for t in "${all[@]}"; do
    start=$(date +%s)
    build_one "$t" "$tmp"
    secs=$(($(date +%s) - start))
    total=$((total + secs))
    echo "$t $secs" >> "$tmp/build-seconds"
    echo "tools: $t built in ${secs}s" >&2
  done
  {
    echo "helm $(modver helm helm.sh/helm/v4)"
    echo "kustomize $(modver kustomize sigs.k8s.io/kustomize/kustomize/v5)"
    echo "registry $(modver registry github.com/google/go-containerregistry)"
    echo "promtool $(modver promtool github.com/prometheus/prometheus)"
  } > "$tmp/versions"
  touch "$tmp/.complete"
  rm -rf "$out"
  mv "$tmp" "$out"
  trap - EXIT
  # Earlier builds of other versions are no longer used.
  find "$cache" -maxdepth 1 -name 'tools-*' ! -name "$(basename "$out")" -exec rm -rf {} +
  echo "tools: built in ${total}s into $out" >&2
fi
echo "$out"
