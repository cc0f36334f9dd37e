//! The kubeconfig that points kubectl and kube-rs at a simulator: one
//! cluster, context and (credential-less) user per context name, so one
//! simulator can stand in for the dev, staging, test and prod clusters.

/// Server URL of a context: `<base>/clusters/<context>` when contexts are
/// isolated, else `<base>`.
pub fn server_url(base: &str, context: &str, isolate: bool) -> String {
    if isolate {
        format!("{base}/clusters/{context}")
    } else {
        base.to_string()
    }
}

/// The kubeconfig YAML; the first context is current.
pub fn render(base: &str, contexts: &[String], isolate: bool) -> String {
    let mut clusters = String::new();
    let mut ctxs = String::new();
    for c in contexts {
        clusters.push_str(&format!(
            "- name: {c}\n  cluster:\n    server: {}\n",
            server_url(base, c, isolate)
        ));
        ctxs.push_str(&format!(
            "- name: {c}\n  context:\n    cluster: {c}\n    user: kube-sim\n    namespace: default\n"
        ));
    }
    let current = contexts.first().map(String::as_str).unwrap_or("kube-sim");
    format!(
        "apiVersion: v1\nkind: Config\npreferences: {{}}\nclusters:\n{clusters}contexts:\n{ctxs}current-context: {current}\nusers:\n- name: kube-sim\n  user: {{}}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_get_their_own_prefix() {
        let y = render("http://127.0.0.1:1", &["dev".into(), "prod".into()], true);
        assert!(y.contains("server: http://127.0.0.1:1/clusters/prod"));
        assert!(y.contains("current-context: dev"));
        let v: serde_json::Value = serde_saphyr::from_str(&y).unwrap();
        assert_eq!(
            v["contexts"][1]["context"]["cluster"].as_str(),
            Some("prod")
        );
        assert_eq!(server_url("http://h", "dev", false), "http://h");
    }
}
