// An in-memory OCI registry on loopback (main.go around
// github.com/google/go-containerregistry/pkg/registry) for the tests'
// oci:// Helm charts. Built by ../build.sh; test-only.
module tidegate.dev/tests/tools/registry

go 1.26.0

require github.com/google/go-containerregistry v0.22.1
