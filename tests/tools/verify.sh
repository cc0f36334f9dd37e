#!/usr/bin/env bash
# Checks by hand, with the binaries of build.sh, the helm v4 and kustomize v5
# behaviour that tidegate's rendering relies on (docs/tools.md lists the
# findings): helm template with values from stdin and a pipe, a classic
# chart repository over HTTP (python3 -m http.server on 127.0.0.1), an OCI
# registry on 127.0.0.1 (push, pull, template, digests), error shapes, and
# kustomize build with inline images/replicas/namespace/labels, `edit set`
# and error shapes. Everything runs in a temporary folder with helm's
# HELM_CACHE_HOME/HELM_CONFIG_HOME/HELM_DATA_HOME inside it; servers listen
# on loopback only and are stopped on exit. Prints each step; exits
# non-zero at the first surprise. Not part of the test suite.
set -euo pipefail
bin="$("$(dirname "$0")/build.sh")"
export PATH="$bin:$PATH"
w="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$w"
}
trap cleanup EXIT
cd "$w"
export HELM_CACHE_HOME=$w/helm/cache HELM_CONFIG_HOME=$w/helm/config HELM_DATA_HOME=$w/helm/data
step() { printf '\n== %s\n' "$*"; }
fail() { echo "verify: $*" >&2; exit 1; }
expect() { grep -q -- "$1" <<<"$2" || fail "expected '$1' in: $2"; }

helm version --short
kustomize version

mkdir -p web/templates
cat > web/Chart.yaml <<'EOF'
apiVersion: v2
name: web
version: 0.1.0
EOF
printf 'replicas: 1\npassword: ""\n' > web/values.yaml
cat > web/templates/deploy.yaml <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-web
  namespace: {{ .Release.Namespace }}
spec:
  replicas: {{ .Values.replicas }}
EOF
cat > web/templates/secret.yaml <<'EOF'
apiVersion: v1
kind: Secret
metadata:
  name: {{ .Release.Name }}-db
stringData:
  password: {{ .Values.password | quote }}
EOF

step "helm template, values from stdin (-f -) and from a pipe (-f /dev/fd/N)"
out=$(printf 'replicas: 3\n' | helm template r ./web -n prod -f - -f <(printf 'password: s3cret\n'))
echo "$out"
expect 'replicas: 3' "$out"
expect 'password: "s3cret"' "$out"
expect 'namespace: prod' "$out"
[[ ! -e $w/helm ]] || fail "helm template of a local chart wrote $(find "$w/helm")"

step "helm template errors (stderr, exit 1)"
cp -r web bad
printf 'a: {{ .Values.replicas | nosuchfunc }}\n' > bad/templates/x.yaml
err=$(helm template r ./bad 2>&1 >/dev/null) && fail "no error"
echo "$err"
expect 'parse error at (web/templates/x.yaml:1)' "$err"
printf 'a: b\nc: {{ .Values.missing.deep }}\n' > bad/templates/x.yaml
err=$(helm template r ./bad 2>&1 >/dev/null) && fail "no error"
echo "$err"
expect 'web/templates/x.yaml:2:13' "$err"
printf 'a: {{ required "dbHost is required" .Values.dbHost }}\n' > bad/templates/x.yaml
err=$(helm template r ./bad 2>&1 >/dev/null) && fail "no error"
echo "$err"
expect 'execution error at (web/templates/x.yaml:1:6): dbHost is required' "$err"
printf 'a: b\n  c: [d\n' > bad/templates/x.yaml
err=$(helm template r ./bad 2>&1 >/dev/null) && fail "no error"
echo "$err"
expect 'YAML parse error on web/templates/x.yaml' "$err"
err=$(printf 'replicas: [\n' | helm template r ./web -f - 2>&1 >/dev/null) && fail "no error"
echo "$err"
expect 'failed to parse -' "$err"

step "helm package + repo index, served by python3 -m http.server on 127.0.0.1"
mkdir repo
helm package web -d repo
sed -i 's/^version: 0.1.0/version: 0.2.0/' web/Chart.yaml
helm package web -d repo
python3 -u -m http.server 0 --bind 127.0.0.1 --directory repo >http.log 2>&1 &
pids+=($!)
for _ in $(seq 50); do grep -q 'port' http.log && break; sleep 0.1; done
port=$(sed -n 's/.* port \([0-9]*\) .*/\1/p' http.log)
url=http://127.0.0.1:$port
helm repo index repo --url "$url"
mkdir pulled
helm pull web --repo "$url" --version 0.1.0 -d pulled
[[ -f pulled/web-0.1.0.tgz ]] || fail "no pulled/web-0.1.0.tgz"
out=$(helm template r web --repo "$url" --version 0.2.0)
expect 'Source: web/templates/deploy.yaml' "$out"
want=$(sed -n 's/^    digest: //p' repo/index.yaml | tail -1)
got=$(sha256sum pulled/web-0.1.0.tgz | cut -d' ' -f1)
[[ $want == "$got" ]] || fail "index digest $want != pulled $got"
echo "index.yaml digest of 0.1.0 = sha256 of the .tgz: $got"
find "$w/helm" -type f
cp repo/web-0.2.0.tgz repo/web-0.1.0.tgz
rm -rf pulled && mkdir pulled
helm pull web --repo "$url" --version 0.1.0 -d pulled
got=$(sha256sum pulled/web-0.1.0.tgz | cut -d' ' -f1)
[[ $want != "$got" ]] || fail "expected a different file"
echo "helm pull did NOT check the index digest: served a different .tgz, got $got (index says $want)"

step "OCI registry on 127.0.0.1: helm push / pull / template with --plain-http"
registry -quiet >registry.out 2>registry.err &
pids+=($!)
for _ in $(seq 50); do [[ -s registry.out ]] && break; sleep 0.1; done
addr=$(sed -n 's/^serving on //p' registry.out)
out=$(helm push repo/web-0.2.0.tgz "oci://$addr/charts" --plain-http 2>/dev/null)
echo "$out"
expect "Pushed: $addr/charts/web:0.2.0" "$out"
digest=$(sed -n 's/^Digest: //p' <<<"$out")
mkdir oci
out=$(helm pull "oci://$addr/charts/web" --version 0.2.0 --plain-http -d oci 2>/dev/null)
echo "$out"
expect "Digest: $digest" "$out"
err=$(helm template r "oci://$addr/charts/web" --version 0.2.0 --plain-http 2>&1 >/dev/null)
echo "template stderr: $err"
expect "Digest: $digest" "$err"
out=$(helm template r "oci://$addr/charts/web@$digest" --plain-http 2>/dev/null)
expect 'replicas: 1' "$out"
err=$(helm template r "oci://$addr/charts/web@sha256:$(printf '0%.0s' {1..64})" --version 0.2.0 --plain-http 2>&1 >/dev/null) && fail "no error"
echo "$err"
expect 'chart reference digest mismatch' "$err"
err=$(helm template r "oci://$addr/charts/web" --version 0.2.0 2>&1 >/dev/null) && fail "no error"
echo "without --plain-http: $err"

step "kustomize build with inline namespace/labels/replicas/images"
mkdir -p k/base k/prod
cat > k/base/deploy.yaml <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: web
          image: nginx:1.27
EOF
printf 'resources: [deploy.yaml]\n' > k/base/kustomization.yaml
cat > k/prod/kustomization.yaml <<'EOF'
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: prod
resources: [../base]
labels:
  - pairs: {team: payments}
replicas:
  - {name: web, count: 3}
images:
  - name: nginx
    newName: registry.example.com/nginx
    digest: sha256:0000000000000000000000000000000000000000000000000000000000000000
EOF
out=$(kustomize build k/prod)
echo "$out"
expect 'namespace: prod' "$out"
expect 'replicas: 3' "$out"
expect 'team: payments' "$out"
expect 'image: registry.example.com/nginx@sha256:0000' "$out"

step "kustomize edit set image / replicas / namespace (rewrites kustomization.yaml)"
(cd k/prod && kustomize edit set image nginx=registry.example.com/nginx:1.28@sha256:1111111111111111111111111111111111111111111111111111111111111111 \
  && kustomize edit set replicas web=5 && kustomize edit set namespace staging \
  && kustomize edit add label env:staging --without-selector)
cat k/prod/kustomization.yaml
out=$(kustomize build k/prod)
expect 'image: registry.example.com/nginx:1.28@sha256:1111' "$out"
expect 'replicas: 5' "$out"
expect 'namespace: staging' "$out"

step "a wrapper kustomization outside the tree (relative path; an absolute one is refused)"
mkdir wrap
printf 'resources: [../k/prod]\nnamespace: wrapped\n' > wrap/kustomization.yaml
expect 'namespace: wrapped' "$(kustomize build wrap)"
printf 'resources: [%s]\n' "$w/k/prod" > wrap/kustomization.yaml
err=$(kustomize build wrap 2>&1 >/dev/null) && fail "no error"
echo "$err"
expect 'cannot be absolute' "$err"

step "kustomize errors (stderr, exit 1)"
mkdir e
cp k/base/deploy.yaml e/
printf 'resources: [deploy.yaml]\nreplicass: []\n' > e/kustomization.yaml
err=$(kustomize build e 2>&1 >/dev/null) && fail "no error"
echo "$err"
expect 'invalid Kustomization: json: unknown field "replicass"' "$err"
printf 'resources: [deploy.yaml\n' > e/kustomization.yaml
err=$(kustomize build e 2>&1 >/dev/null) && fail "no error"
echo "$err"
expect 'invalid Kustomization: yaml: line 1' "$err"
printf 'resources: [cm.yaml]\n' > e/kustomization.yaml
printf 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n data: [\n' > e/cm.yaml
err=$(kustomize build e 2>&1 >/dev/null) && fail "no error"
echo "$err"
expect 'MalformedYAMLError: yaml: line 4: .* in File: cm.yaml' "$err"
printf 'resources: [nothere.yaml]\n' > e/kustomization.yaml
err=$(kustomize build e 2>&1 >/dev/null) && fail "no error"
echo "$err"
printf 'resources: [deploy.yaml]\nreplicas: [{name: nosuch, count: 2}]\n' > e/kustomization.yaml
err=$(kustomize build e 2>&1 >/dev/null) && fail "no error"
echo "$err"
mkdir -p n/base n/ov
printf 'resources: []\nreplicass: []\n' > n/base/kustomization.yaml
printf 'resources: [../base]\n' > n/ov/kustomization.yaml
err=$(kustomize build n/ov 2>&1 >/dev/null) && fail "no error"
echo "$err"
expect "couldn't make target for path '$w/n/base'" "$err"

printf '\nverify: all as expected\n'
