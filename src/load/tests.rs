use super::*;
use crate::testutil::{self, env, files, module};

fn errors(f: &Files) -> Vec<String> {
    match load(f) {
        Ok(_) => Vec::new(),
        Err(Error::Invalid(r)) => r.0.iter().map(|d| d.to_string()).collect(),
        Err(e) => vec![e.to_string()],
    }
}

#[test]
fn a_valid_repository_resolves_in_order() {
    let f = testutil::repo();
    let m = load(&f).unwrap();
    let names: Vec<&str> = m.environments.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["dev", "prod"]);
    let prod = m.environment("prod").unwrap();
    assert_eq!(prod.after[0].0, "dev");
    assert_eq!(m.resources(prod).count(), 4);
    assert_eq!(
        prod.secret_file_for(&m, &["db", "password"]),
        Some("secrets/s.sops.yaml")
    );
    assert_eq!(prod.target(Some("prod-green")).environment, "prod-green");
    let vpc = m.modules["modules/net"].resource("vpc").unwrap();
    assert_eq!(vpc.kind, "vpc");
    assert_eq!(vpc.spans.get("cidrBlock").unwrap().line, 17);
}

#[test]
fn every_problem_is_reported_in_file_order() {
    let mut f = testutil::repo();
    let bad = env(
        "dev",
        "  vars: {}\n  secrets: [secrets/s.sops.yaml]\n  modules:\n    - name: network\n      source: modules/net\n      inputs:\n        cidr: 10\n        extra: x\n    - name: app\n      source: modules/app\n      inputs:\n        vpcId: ${module.network.nope}\n        password: ${secret.db.pasword}\n",
    );
    f.insert("environments/dev.yaml".into(), bad.into_bytes());
    let e = errors(&f);
    assert_eq!(e.len(), 4, "{e:#?}");
    assert!(e[0].starts_with("environments/dev.yaml:12:15: error: input `cidr` of module net must be a string, found a number"), "{}", e[0]);
    assert!(
        e[1].starts_with("environments/dev.yaml:13:9: error: module net has no input `extra`"),
        "{}",
        e[1]
    );
    assert!(e[2].contains("has no output `nope`"), "{}", e[2]);
    assert!(
        e[3].contains("`${secret.db.pasword}`: no such key in secrets/s.sops.yaml"),
        "{}",
        e[3]
    );
    assert!(
        e[3].contains("or use one of: api.token, db.password"),
        "{}",
        e[3]
    );
}

#[test]
fn module_scope_rules_are_enforced() {
    let m = module(
        "net",
        "  resources:\n    - name: vpc\n      provider: aws\n      type: vpc\n      spec:\n        cidrBlock: ${var.cidr}\n    - name: sub\n      provider: aws\n      type: subnet\n      spec:\n        vpcId: ${resource.sub.id}\n        cidrBlock: ${resource.vpc.arnn}\n",
    );
    let f = files(&[
        ("environments/dev.yaml", &env("dev", "  modules: []\n")),
        ("modules/net/module.yaml", &m),
    ]);
    let e = errors(&f);
    assert_eq!(e.len(), 3, "{e:#?}");
    assert!(
        e[0].contains("`${var.cidr}` cannot be used inside a module"),
        "{}",
        e[0]
    );
    assert!(e[1].contains("resource `sub` refers to itself"), "{}", e[1]);
    assert!(e[2].contains("has no attribute `arnn`"), "{}", e[2]);
}

#[test]
fn missing_required_inputs_and_unknown_modules_are_errors() {
    let f = files(&[
        (
            "environments/dev.yaml",
            &env(
                "dev",
                "  modules:\n    - name: network\n      source: modules/net\n    - name: x\n      source: modules/nope\n",
            ),
        ),
        ("modules/net/module.yaml", &testutil::net_module()),
    ]);
    let e = errors(&f);
    assert!(
        e[0].contains("does not set required input `cidr`"),
        "{e:#?}"
    );
    assert!(
        e[1].contains("uses unknown module `modules/nope`"),
        "{e:#?}"
    );
}

#[test]
fn environment_order_cycles_name_every_environment() {
    let f = files(&[
        ("environments/a.yaml", &env("a", "  after: b\n")),
        ("environments/b.yaml", &env("b", "  after: a\n")),
    ]);
    let e = errors(&f);
    assert_eq!(e.len(), 1);
    assert!(
        e[0].contains("environment order has a cycle between a, b"),
        "{}",
        e[0]
    );
    assert!(
        e[0].contains("a after b (declared at environments/a.yaml:6:10)"),
        "{}",
        e[0]
    );
}

#[test]
fn read_dir_reads_the_bundled_example() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let f = read_dir(root).unwrap();
    assert!(f.contains_key("environments/prod.yaml"));
    assert!(f.contains_key(".sops.yaml"));
    assert!(!f.keys().any(|k| k.ends_with(".agekey")));
    let m = load(&f).unwrap();
    assert_eq!(m.environments.len(), 4);
    let web = &m.modules["modules/web"];
    let deploy = web.resource("deployment").unwrap();
    let image = deploy
        .spans
        .get("spec.template.spec.containers[0].image")
        .unwrap();
    assert_eq!(image.file, "modules/web/module.yaml");
    assert_eq!(
        deploy
            .body
            .get_path("spec.template.spec.securityContext.runAsNonRoot"),
        Some(&crate::value::Value::Bool(true))
    );
    let prod = m.environment("prod").unwrap();
    assert!(prod.policy.is_some());
    assert_eq!(
        m.kinds(prod, crate::provider::ProviderKind::Kubernetes),
        [
            "apps/v1/Deployment",
            "networking.k8s.io/v1/Ingress",
            "v1/ConfigMap",
            "v1/Namespace",
            "v1/Secret",
            "v1/Service"
        ]
    );
    assert_eq!(prod.aws.as_ref().unwrap().region, "eu-central-1");
    assert_eq!(
        prod.kubernetes.as_ref().unwrap().context.as_deref(),
        Some("prod")
    );
}

#[test]
fn drift_and_suspend_are_read_with_defaults() {
    let f = files(&[
        (
            "environments/a.yaml",
            &env(
                "a",
                "  drift:\n    interval: 90s\n    mode: report\n  suspend: true\n",
            ),
        ),
        ("environments/b.yaml", &env("b", "  drift: {mode: heal}\n")),
        ("environments/c.yaml", &env("c", "  after: a\n")),
    ]);
    let m = load(&f).unwrap();
    let a = m.environment("a").unwrap();
    assert_eq!(a.drift.interval, std::time::Duration::from_secs(90));
    assert_eq!(a.drift.mode, crate::model::DriftMode::Report);
    assert!(a.suspend);
    let b = m.environment("b").unwrap();
    assert_eq!(b.drift, crate::model::DriftPolicy::default());
    let c = m.environment("c").unwrap();
    assert_eq!(c.drift.interval, std::time::Duration::from_secs(300));
    assert!(!c.suspend);
}

#[test]
fn bad_drift_and_suspend_values_are_errors_with_a_fix() {
    let f = files(&[
        (
            "environments/a.yaml",
            &env(
                "a",
                "  drift:\n    interval: soon\n    mode: fix\n    every: 1m\n  suspend: yes\n",
            ),
        ),
        (
            "environments/b.yaml",
            &env("b", "  drift:\n    interval: 2s\n"),
        ),
    ]);
    let e = errors(&f);
    assert_eq!(e.len(), 5, "{e:#?}");
    assert!(
        e[0].starts_with(
            "environments/a.yaml:7:15: error: `drift.interval` is `soon`, which is not a duration"
        ),
        "{}",
        e[0]
    );
    assert!(e[0].contains("write a duration such as `30s`"), "{}", e[0]);
    assert!(
        e[1].starts_with("environments/a.yaml:8:11: error: `drift.mode` is `fix`"),
        "{}",
        e[1]
    );
    assert!(e[1].contains("`heal`"), "{}", e[1]);
    assert!(e[2].contains("every"), "{}", e[2]);
    assert!(
        e[3].starts_with("environments/a.yaml:10:12: error: `suspend` must be a boolean"),
        "{}",
        e[3]
    );
    assert!(e[3].contains("write `true`"), "{}", e[3]);
    assert!(e[4].starts_with("environments/b.yaml:7:15: error: `drift.interval` is 2s, shorter than the minimum of 10s"), "{}", e[4]);
}

#[test]
fn require_signed_commits_is_a_boolean_defaulting_to_false() {
    let f = files(&[
        (
            "environments/a.yaml",
            &env("a", "  requireSignedCommits: true\n"),
        ),
        ("environments/b.yaml", &env("b", "  after: a\n")),
    ]);
    let m = load(&f).unwrap();
    assert!(m.environment("a").unwrap().require_signed_commits);
    assert!(!m.environment("b").unwrap().require_signed_commits);

    let f = files(&[
        (
            "environments/a.yaml",
            &env("a", "  requireSignedCommits: \"yes\"\n"),
        ),
        (
            "environments/b.yaml",
            &env("b", "  requireSignedCommit: true\n"),
        ),
    ]);
    let e = errors(&f);
    assert_eq!(e.len(), 2, "{e:#?}");
    assert!(
        e[0].starts_with("environments/a.yaml:6:25: error: `requireSignedCommits` must be"),
        "{}",
        e[0]
    );
    assert!(e[0].contains("true or false"), "{}", e[0]);
    assert!(e[1].starts_with("environments/b.yaml:6:"), "{}", e[1]);
    assert!(e[1].contains("requireSignedCommit"), "{}", e[1]);
    assert!(e[1].contains("requireSignedCommits"), "{}", e[1]);
}

#[test]
fn environment_guards_override_the_project_defaults() {
    let mut files = testutil::repo();
    files.insert(
        "tidegate.yaml".into(),
        b"apiVersion: tidegate.dev/v1\nkind: Project\nmetadata:\n  name: shop\nspec:\n  guards:\n    maxDeletes: 7\n".to_vec(),
    );
    let prod = String::from_utf8(files["environments/prod.yaml"].clone()).unwrap();
    files.insert(
        "environments/prod.yaml".into(),
        prod.replace(
            "spec:\n",
            "spec:\n  protect: true\n  guards:\n    maxDeletePercent: 10\n",
        )
        .into_bytes(),
    );
    let m = load(&files).unwrap();
    let (dev, prod) = (
        m.environment("dev").unwrap(),
        m.environment("prod").unwrap(),
    );
    assert_eq!(
        (dev.guards.max_deletes, dev.guards.max_delete_percent),
        (7, 25)
    );
    assert_eq!(
        (prod.guards.max_deletes, prod.guards.max_delete_percent),
        (7, 10)
    );
    assert!(prod.protect && !dev.protect);
    assert_eq!(prod.project, "shop");
    assert_eq!(prod.target(None).project, "shop");
}

/// Issue 17: `defaultMode: 0400` is decimal 400 to tidegate (YAML 1.2) and
/// octal 256 to kubectl; it is refused in manifests, vars and input values
/// with both fixes, and `0o400` is read as 256.
#[test]
fn leading_zero_numbers_in_free_form_values_are_ambiguous() {
    let manifest = |mode: &str| {
        module(
            "app",
            &format!("  inputs:\n    mode:\n      type: number\n  resources:\n    - name: pod\n      provider: kubernetes\n      manifest:\n        apiVersion: v1\n        kind: Pod\n        metadata:\n          name: p\n        spec:\n          volumes:\n            - name: s\n              secret:\n                secretName: s\n                defaultMode: {mode}\n                items:\n                  - key: k\n                    path: k\n                    mode: ${{input.mode}}\n"),
        )
    };
    let environment = |var: &str, input: &str| {
        env(
            "dev",
            &format!("  vars:\n    mode: {var}\n  modules:\n    - name: app\n      source: modules/app\n      inputs:\n        mode: {input}\n"),
        )
    };
    let f = files(&[
        ("environments/dev.yaml", &environment("0640", "0600")),
        ("modules/app/module.yaml", &manifest("0400")),
    ]);
    let e = errors(&f);
    assert_eq!(e.len(), 3, "{e:#?}");
    assert!(e[0].starts_with("environments/dev.yaml:7:11: error: ambiguous number `0640`: octal 416 in YAML 1.1 (kubectl), decimal 640 in YAML 1.2 (tidegate)"), "{}", e[0]);
    assert!(
        e[1].starts_with("environments/dev.yaml:12:15: error: ambiguous number `0600`"),
        "{}",
        e[1]
    );
    assert!(
        e[2].starts_with("modules/app/module.yaml:22:30: error: ambiguous number `0400`"),
        "{}",
        e[2]
    );
    assert!(
        e[2].contains("write `256` or `0o400` for octal"),
        "{}",
        e[2]
    );

    let f = files(&[
        (
            "environments/dev.yaml",
            &environment("0o640", "${var.mode}"),
        ),
        ("modules/app/module.yaml", &manifest("0o400")),
    ]);
    let m = load(&f).unwrap();
    let known = std::collections::HashMap::new();
    let opts = crate::render::RenderOptions {
        known: &known,
        secrets: &crate::render::StructuralSecrets,
        owner: None,
    };
    let body = &crate::render::render_env(&m, "dev", opts).unwrap()[0].body;
    let volume = body.get_path("spec").unwrap().as_map().unwrap()["volumes"].clone();
    let secret = match volume {
        crate::value::Value::List(l) => l[0].get_path("secret").unwrap().clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        secret.get_path("defaultMode"),
        Some(&crate::value::Value::Int(256))
    );
    let item = match secret.get_path("items") {
        Some(crate::value::Value::List(l)) => l[0].clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(item.get_path("mode"), Some(&crate::value::Value::Int(416)));
}

#[test]
fn objects_of_a_manifests_folder_are_schema_checked_at_their_file_and_line() {
    let mut f = testutil::repo();
    f.insert(
        "modules/app/module.yaml".into(),
        module(
            "app",
            "  inputs:\n    vpcId: {type: string}\n    password: {type: string}\n  resources:\n    - name: extra\n      provider: kubernetes\n      manifests: objects\n",
        )
        .into_bytes(),
    );
    f.insert(
        "modules/app/objects/web.yaml".into(),
        b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ok\n---\napiVersion: app/v1\nkind: Deploymnet\nmetadata:\n  name: web\n"
            .to_vec(),
    );
    let report = crate::pipeline::check(&f)
        .err()
        .expect("the typo is an error");
    let text: Vec<String> = report.0.iter().map(ToString::to_string).collect();
    assert!(
        text.iter()
            .any(|t| t.starts_with("modules/app/objects/web.yaml:6:") && t.contains("apiVersion")),
        "{text:#?}"
    );
}

#[test]
fn promotion_rules_are_read_and_each_mistake_is_an_error_at_its_line() {
    let f = files(&[(
        "environments/prod.yaml",
        &env(
            "prod",
            "  promotion:\n    mode: manual\n    soak: 30m\n    heal: always\n    windows:\n      - deny: Fri 12:00-24:00\n        timeZone: Europe/Berlin\n      - allow: Mon-Fri 08:00-18:00\n",
        ),
    )]);
    let m = load(&f).unwrap();
    let p = &m.environment("prod").unwrap().promotion;
    assert_eq!(p.mode, crate::promotion::Mode::Manual);
    assert_eq!(p.soak, Some(std::time::Duration::from_secs(1800)));
    assert_eq!(p.heal, crate::promotion::Heal::Always);
    assert_eq!(p.windows.len(), 2);
    assert!(!p.windows[0].allow && p.windows[1].allow);
    assert_eq!(p.windows[0].text, "Fri 12:00-24:00 Europe/Berlin");

    let f = files(&[(
        "environments/prod.yaml",
        &env(
            "prod",
            "  promotion:\n    mode: later\n    soak: a while\n    heal: never\n    windows:\n      - deny: Fry 12:00-24:00\n      - allow: Mon 08:00-25:00\n      - deny: Fri 12:00-13:00\n        timeZone: Mars/Olympus\n      - deny: Fri 12:00-13:00\n        allow: Mon 08:00-09:00\n    gate: open\n",
        ),
    )]);
    let e = errors(&f);
    let want = [
        "environments/prod.yaml:7:11: error: `promotion.mode` is `later`",
        "environments/prod.yaml:8:11: error: `promotion.soak` is `a while`, which is not a duration",
        "environments/prod.yaml:9:11: error: `promotion.heal` is `never`",
        "environments/prod.yaml:11:15: error: `Fry` is not a day of the week",
        "environments/prod.yaml:12:16: error: `25:00` is not a time of day",
        "environments/prod.yaml:14:19: error: `Mars/Olympus` is not a time zone",
        "environments/prod.yaml:15:9: error: a promotion window needs exactly one of `allow` and `deny`",
    ];
    for w in want {
        assert!(e.iter().any(|x| x.starts_with(w)), "{w}\nin {e:#?}");
    }
    assert!(e.iter().any(|x| x.contains("gate")), "{e:#?}");
}

/// `spec.preview` appended to dev's spec of [`testutil::repo`].
fn with_preview(block: &str) -> Files {
    let mut f = testutil::repo();
    let dev = String::from_utf8(f["environments/dev.yaml"].clone()).unwrap();
    f.insert(
        "environments/dev.yaml".into(),
        format!("{dev}{block}").into_bytes(),
    );
    f
}

#[test]
fn a_preview_block_is_read_with_its_overrides() {
    let f = with_preview(
        "  preview:\n    max: 2\n    ttl: 90m\n    branches: preview/*\n    vars:\n      cidr: \"10.2${preview.slot}.0.0/16\"\n",
    );
    let m = load(&f).unwrap();
    let p = m.environment("dev").unwrap().preview.clone().unwrap();
    assert_eq!(p.max, 2);
    assert_eq!(p.ttl, std::time::Duration::from_secs(90 * 60));
    assert_eq!(p.branches.as_deref(), Some("preview/*"));
    assert_eq!(p.vars["cidr"].1.line, 29);
    assert!(m.environment("prod").unwrap().preview.is_none());
}

#[test]
fn a_bad_preview_block_is_reported_at_file_and_line() {
    let f = with_preview(
        "  preview:\n    max: 0\n    ttl: soon\n    colour: blue\n    branches: preview\n    vars:\n      cidr: \"10.${env.name}.0.0/16\"\n      host: x\n",
    );
    let e = errors(&f);
    let want = [
        ("environments/dev.yaml:25:", "`preview.max` is 0"),
        (
            "environments/dev.yaml:26:",
            "`preview.ttl` is `soon`, which is not a duration",
        ),
        (
            "environments/dev.yaml:27:",
            "unknown field `colour` in `preview`",
        ),
        (
            "environments/dev.yaml:28:",
            "`preview.branches` is `preview`; it needs exactly one `*`",
        ),
        (
            "environments/dev.yaml:30:",
            "`preview.vars.cidr` uses `${env.name}`",
        ),
        (
            "environments/dev.yaml:31:",
            "`preview.vars` overrides `host`, which is not a variable of this environment",
        ),
    ];
    assert_eq!(e.len(), want.len(), "{e:#?}");
    for (at, what) in want {
        assert!(
            e.iter().any(|d| d.starts_with(at) && d.contains(what)),
            "no `{what}` at {at}: {e:#?}"
        );
    }
}
