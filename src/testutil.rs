//! Small in-memory repositories for unit tests.

use crate::load::Files;

/// The `tidegate.yaml` of test repositories: project `test`.
pub const PROJECT: &str =
    "apiVersion: tidegate.dev/v1\nkind: Project\nmetadata:\n  name: test\nspec: {}\n";

/// A file set from (path, text) pairs, with [`PROJECT`] as `tidegate.yaml`
/// unless the pairs name one.
pub fn files(entries: &[(&str, &str)]) -> Files {
    let mut files: Files = entries
        .iter()
        .map(|(p, t)| (p.to_string(), t.as_bytes().to_vec()))
        .collect();
    files
        .entry(crate::load::project::FILE.to_string())
        .or_insert_with(|| PROJECT.as_bytes().to_vec());
    files
}

/// An environment document named `name` with the given spec body
/// (indented by two spaces already).
pub fn env(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: tidegate.dev/v1\nkind: Environment\nmetadata:\n  name: {name}\nspec:\n{spec}"
    )
}

/// A module document named `name` with the given spec body.
pub fn module(name: &str, spec: &str) -> String {
    format!("apiVersion: tidegate.dev/v1\nkind: Module\nmetadata:\n  name: {name}\nspec:\n{spec}")
}

/// A SOPS-shaped file holding `db.password` and `api.token`.
pub const SECRETS: &str = "db:\n  password: ENC[AES256_GCM,data:x,type:str]\napi:\n  token: ENC[AES256_GCM,data:y,type:str]\nsops:\n  version: 3.11.0\n";

/// A module `net` with a vpc and a subnet, exporting the vpc id.
pub fn net_module() -> String {
    module(
        "net",
        "  inputs:\n    cidr:\n      type: string\n  outputs:\n    vpc_id:\n      value: ${resource.vpc.id}\n  resources:\n    - name: vpc\n      provider: aws\n      type: vpc\n      spec:\n        cidrBlock: ${input.cidr}\n    - name: subnet\n      provider: aws\n      type: subnet\n      spec:\n        vpcId: ${resource.vpc.id}\n        cidrBlock: 10.0.1.0/24\n",
    )
}

/// A module `app` with a namespace and a ConfigMap carrying the vpc id and
/// a secret.
pub fn app_module() -> String {
    module(
        "app",
        "  inputs:\n    vpcId:\n      type: string\n    password:\n      type: string\n    replicas:\n      type: number\n      default: 2\n  resources:\n    - name: ns\n      provider: kubernetes\n      manifest:\n        apiVersion: v1\n        kind: Namespace\n        metadata:\n          name: app-${env.name}\n    - name: config\n      provider: kubernetes\n      manifest:\n        apiVersion: v1\n        kind: ConfigMap\n        metadata:\n          name: cfg\n          namespace: app-${env.name}\n        data:\n          VPC: ${input.vpcId}\n          URL: postgres://app:${input.password}@db\n          REPLICAS: ${input.replicas}\n",
    )
}

/// A valid two-environment repository using both modules.
pub fn repo() -> Files {
    let spec = |after: &str| {
        format!("{after}  targets:\n    kubernetes:\n      context: c\n    aws:\n      region: eu-west-1\n  vars:\n    cidr: 10.0.0.0/16\n  secrets: [secrets/s.sops.yaml]\n  modules:\n    - name: network\n      source: modules/net\n      inputs:\n        cidr: ${{var.cidr}}\n    - name: app\n      source: modules/app\n      inputs:\n        vpcId: ${{module.network.vpc_id}}\n        password: ${{secret.db.password}}\n")
    };
    files(&[
        ("environments/dev.yaml", &env("dev", &spec(""))),
        (
            "environments/prod.yaml",
            &env("prod", &spec("  after: dev\n")),
        ),
        ("modules/net/module.yaml", &net_module()),
        ("modules/app/module.yaml", &app_module()),
        ("secrets/s.sops.yaml", SECRETS),
    ])
}
