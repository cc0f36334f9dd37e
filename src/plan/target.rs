//! Targeted plans and applies: `--target RESOURCE_ID` / `--target
//! module.<instance>`. A repeated entry (`forEach`/`count`) is targeted
//! by its own name too: `module.tenant` is every copy `tenant-<key>`,
//! `app.zone` every copy `app.zone-<key>` (and the resources a source
//! entry `app.chart` rendered).
//!
//! A target is resolved against the environment's graph into its *scope*:
//! the targeted resources and everything they depend on, transitively (a
//! dependency already converged plans as unchanged and is left alone, so
//! what runs is the targets plus their dependencies that are not yet
//! converged). [`restrict`] cuts a full plan down to the scope and lists
//! what it leaves out; a targeted run never prunes.
//!
//! Pure: the graph and the plan in, the scope and the cut plan out.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::graph::Graph;
use crate::model::Model;
use crate::resource::{Action, ResourceId};

use super::{guard_trips, Counts, EnvPlan, Step};

/// A `--target` that names nothing in the environment.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("--target {target}: environment {env} has no resource {target}{hint}")]
    UnknownResource {
        target: String,
        env: String,
        hint: String,
    },
    #[error("--target {target}: environment {env} has no module instance `{instance}`; its instances are {instances}")]
    UnknownInstance {
        target: String,
        env: String,
        instance: String,
        instances: String,
    },
    #[error("--target {target}: not a resource id; write `<instance>.<resource>` (`network.vpc`, as `tidegate plan` prints it) or `module.<instance>`")]
    Malformed { target: String },
}

/// What a targeted plan says about its targeting.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Targeted {
    /// The `--target` values, as given.
    pub targets: Vec<String>,
    /// Resources in scope: the targets and their dependencies.
    pub in_scope: usize,
    /// Resources out of scope that would change (id and action): a full
    /// apply would change them, this one does not. Deletes are among them
    /// (a targeted apply never prunes).
    pub left_out: Vec<LeftOut>,
    /// Resources out of scope that are unchanged.
    pub left_out_unchanged: usize,
}

/// A change a targeted plan leaves out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LeftOut {
    pub id: String,
    /// `create`, `update`, `replace` or `delete`.
    pub action: String,
}

/// The names a target may use besides resource ids and instances: the
/// repeated entries and source entries of one environment, each with what
/// it became.
#[derive(Clone, Debug, Default)]
pub struct Groups {
    /// Repeated instance → its copies.
    instances: BTreeMap<String, Vec<String>>,
    /// (instance, repeated or source entry) → the resources it became.
    resources: BTreeMap<(String, String), Vec<String>>,
}

impl Groups {
    /// The groups of environment `env` of `model`.
    pub fn of(model: &Model, env: &str) -> Groups {
        let mut g = Groups::default();
        let Some(e) = model.environment(env) else {
            return g;
        };
        for inst in &e.instances {
            if let Some(base) = &inst.copy_of {
                g.instances
                    .entry(base.clone())
                    .or_default()
                    .push(inst.name.clone());
            }
            let Some(module) = model.modules.get(&inst.source) else {
                continue;
            };
            for r in &module.resources {
                if let Some(base) = &r.source {
                    g.resources
                        .entry((inst.name.clone(), base.clone()))
                        .or_default()
                        .push(r.name.clone());
                }
            }
        }
        g
    }
}

/// The scope of `targets` in `env`: each target's resources and all they
/// depend on, transitively.
pub fn scope(
    graph: &Graph,
    groups: &Groups,
    env: &str,
    targets: &[String],
) -> Result<BTreeSet<ResourceId>, Error> {
    let mut all: Vec<ResourceId> = graph.levels(env).into_iter().flatten().collect();
    all.sort();
    let known: BTreeSet<&ResourceId> = all.iter().collect();
    let mut start: Vec<ResourceId> = Vec::new();
    for t in targets {
        start.extend(resolve(&all, &known, groups, env, t)?);
    }
    let mut scope: BTreeSet<ResourceId> = BTreeSet::new();
    while let Some(id) = start.pop() {
        if scope.insert(id.clone()) {
            start.extend(graph.dependencies(env, &id));
        }
    }
    Ok(scope)
}

fn resolve(
    all: &[ResourceId],
    known: &BTreeSet<&ResourceId>,
    groups: &Groups,
    env: &str,
    target: &str,
) -> Result<Vec<ResourceId>, Error> {
    let t = target.trim();
    let Some((module, name)) = t.split_once('.') else {
        return Err(Error::Malformed {
            target: target.into(),
        });
    };
    if module.is_empty() || name.is_empty() {
        return Err(Error::Malformed {
            target: target.into(),
        });
    }
    let id = ResourceId {
        module: module.into(),
        name: name.into(),
    };
    if known.contains(&id) {
        return Ok(vec![id]);
    }
    if let Some(names) = groups
        .resources
        .get(&(module.to_string(), name.to_string()))
    {
        return Ok(names
            .iter()
            .map(|n| ResourceId {
                module: module.into(),
                name: n.clone(),
            })
            .filter(|id| known.contains(id))
            .collect());
    }
    let instances: BTreeSet<&str> = all.iter().map(|r| r.module.as_str()).collect();
    if module == "module" {
        let copies = groups.instances.get(name);
        let of: Vec<ResourceId> = all
            .iter()
            .filter(|r| r.module == name || copies.is_some_and(|c| c.contains(&r.module)))
            .cloned()
            .collect();
        if of.is_empty() {
            return Err(Error::UnknownInstance {
                target: target.into(),
                env: env.into(),
                instance: name.into(),
                instances: shown(&instances.into_iter().collect::<Vec<_>>()),
            });
        }
        return Ok(of);
    }
    let hint = if instances.contains(module) {
        let names: Vec<&str> = all
            .iter()
            .filter(|r| r.module == module)
            .map(|r| r.name.as_str())
            .collect();
        let near = crate::diag::closest(name, &names);
        match near {
            Some(n) => format!("; did you mean {module}.{n}?"),
            None => format!("; instance {module} has {}", shown(&names)),
        }
    } else {
        let names: Vec<&str> = instances.into_iter().collect();
        format!(
            "; its module instances are {} (target a whole one with `module.<instance>`)",
            shown(&names)
        )
    };
    Err(Error::UnknownResource {
        target: target.into(),
        env: env.into(),
        hint,
    })
}

fn shown(names: &[&str]) -> String {
    const MAX: usize = 8;
    let mut s = names[..names.len().min(MAX)].join(", ");
    if names.len() > MAX {
        s.push_str(&format!(" and {} more", names.len() - MAX));
    }
    s
}

/// Cuts `plan` down to `scope`: resources out of it are dropped (listed in
/// [`Targeted::left_out`] when they would change), counts, order and
/// guards recomputed from what is left.
pub fn restrict(
    plan: &mut EnvPlan,
    environment: &crate::model::Environment,
    existing: usize,
    targets: &[String],
    scope: &BTreeSet<ResourceId>,
) {
    let mut left_out = Vec::new();
    let mut left_out_unchanged = 0;
    let mut total = Counts::default();
    for m in &mut plan.modules {
        m.resources.retain(|r| {
            let keep = scope.contains(&r.id) && r.action != Action::Delete;
            if !keep {
                if r.action == Action::NoOp {
                    left_out_unchanged += 1;
                } else {
                    left_out.push(LeftOut {
                        id: r.id.to_string(),
                        action: super::saved::action_name(&r.action).to_string(),
                    });
                }
            }
            keep
        });
        let mut counts = Counts::default();
        for r in &m.resources {
            counts.add(&r.action);
        }
        m.counts = counts;
        total.create += counts.create;
        total.update += counts.update;
        total.replace += counts.replace;
        total.no_op += counts.no_op;
    }
    plan.modules.retain(|m| !m.resources.is_empty());
    plan.counts = total;
    // Steps renumbered without the gaps the cut leaves.
    let kept: BTreeSet<String> = plan.resources().map(|r| r.id.to_string()).collect();
    let mut renumber: BTreeMap<usize, usize> = BTreeMap::new();
    let mut order: Vec<Step> = Vec::new();
    for s in &plan.order {
        let resources: Vec<String> = s
            .resources
            .iter()
            .filter(|r| kept.contains(*r))
            .cloned()
            .collect();
        if resources.is_empty() {
            continue;
        }
        let step = order.len() + 1;
        renumber.insert(s.step, step);
        order.push(Step { step, resources });
    }
    plan.order = order;
    for m in &mut plan.modules {
        for r in &mut m.resources {
            r.step = renumber.get(&r.step).copied().unwrap_or(0);
        }
    }
    left_out.sort_by(|a, b| a.id.cmp(&b.id));
    plan.guards = guard_trips(environment, plan.resources(), existing);
    plan.target = Some(Targeted {
        targets: targets.to_vec(),
        in_scope: scope.len(),
        left_out,
        left_out_unchanged,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ResourceId {
        let (m, n) = s.split_once('.').unwrap();
        ResourceId {
            module: m.into(),
            name: n.into(),
        }
    }

    #[test]
    fn targets_resolve_to_resources_or_whole_instances() {
        let all = vec![id("network.igw"), id("network.vpc"), id("web.app")];
        let known: BTreeSet<&ResourceId> = all.iter().collect();
        assert_eq!(
            resolve(&all, &known, &Groups::default(), "dev", "network.vpc").unwrap(),
            [id("network.vpc")]
        );
        assert_eq!(
            resolve(&all, &known, &Groups::default(), "dev", "module.network").unwrap(),
            [id("network.igw"), id("network.vpc")]
        );
        let e = resolve(&all, &known, &Groups::default(), "dev", "network.vcp").unwrap_err();
        assert!(e.to_string().contains("did you mean network.vpc?"), "{e}");
        let e = resolve(&all, &known, &Groups::default(), "dev", "module.db").unwrap_err();
        assert!(
            e.to_string().contains("its instances are network, web"),
            "{e}"
        );
        let e = resolve(&all, &known, &Groups::default(), "dev", "db.main").unwrap_err();
        assert!(
            e.to_string()
                .contains("its module instances are network, web"),
            "{e}"
        );
        let e = resolve(&all, &known, &Groups::default(), "dev", "vpc").unwrap_err();
        assert!(matches!(e, Error::Malformed { .. }), "{e}");
    }
}
