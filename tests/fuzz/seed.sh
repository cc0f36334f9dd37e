#!/bin/sh
# Seeds tests/fuzz/corpus/<target>/ from the repository's own files. Run from
# the repository root: `sh tests/fuzz/seed.sh`. Existing corpus entries are
# kept (libFuzzer names its own finds by content hash; seeds are named here).
set -eu
root=$(pwd)
corpus=tests/fuzz/corpus
mkdir -p "$corpus/load" "$corpus/expr" "$corpus/sops"

# load: a repository as one text archive, `=== <path>` before each file.
archive() { # <repo dir> <output>
    (cd "$1" && find environments modules secrets .sops.yaml -type f \
        \( -name '*.yaml' -o -name '*.yml' -o -name '*.json' \) 2>/dev/null | LC_ALL=C sort |
        while read -r f; do printf '=== %s\n' "$f"; cat "$f"; done) > "$2"
}
archive "$root" "$corpus/load/seed-example"
for d in tests/fixtures/repos/*/; do
    archive "$d" "$corpus/load/seed-$(basename "$d")"
done

# expr: every distinct string holding `${` in the example and the fixtures,
# plus escapes and the error forms.
i=0
grep -rh '\${' environments modules tests/fixtures/repos |
    sed -E 's/^[[:space:]]*(- )?([A-Za-z0-9_.-]+: )?//; s/^"(.*)"$/\1/; s/[[:space:]]*$//' |
    LC_ALL=C sort -u | head -200 |
    while IFS= read -r line; do
        i=$((i + 1))
        printf '%s' "$line" > "$corpus/expr/seed-$i"
    done
n=0
for s in 'a-${var.x}-$${b}' '${module.network.vpc_id}' '${ env.name }' 'cost: $5' \
    '${var.x' '${foo.x}' '$$${input.a.b}' '${resource.vpc.id}/${secret.db.password}' '${}' '$'; do
    n=$((n + 1))
    printf '%s' "$s" > "$corpus/expr/seed-extra-$n"
done

# sops: encrypted files (demo keys and fixture key, YAML and JSON), the
# plaintext inputs tidegate encrypts, and `.sops.yaml`.
for f in secrets/*.sops.yaml tests/fixtures/sops/*.yaml tests/fixtures/sops/*.json \
    tests/fixtures/repos/*/secrets/*.yaml; do
    [ -f "$f" ] || continue
    cp "$f" "$corpus/sops/seed-$(echo "$f" | tr / _)"
done
[ -f .sops.yaml ] && cp .sops.yaml "$corpus/sops/seed-dot-sops.yaml"
printf 'db:\n  password: hunter2\n  port: 5432\n  user_unencrypted: app\nlist: [a, 1.5, true, null, ""]\n' \
    > "$corpus/sops/seed-plain.yaml"
printf '{"db": {"password": "hunter2", "port": 5432}, "list": ["a", 1.5, true, null]}\n' \
    > "$corpus/sops/seed-plain.json"
