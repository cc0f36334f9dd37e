//! The dependency graph: which resource must exist before which.
//!
//! Nodes are resources (grouped by environment and module instance) plus
//! one node per environment; edges come from
//! - environment order (`after:`), between environment nodes;
//! - `dependsOn` on resources and on module instances;
//! - every `${...}` reference, followed through instance inputs and module
//!   outputs down to the resources they name;
//! - Kubernetes itself: a namespaced object after the Namespace it lives in
//!   (when the environment declares it), a custom resource after its CRD.
//!
//! A cycle is reported with every node on it and where each of its edges
//! was declared (strongly connected components, not `toposort`, which names
//! only one node). [`Graph::levels`] gives the order for parallel apply.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use petgraph::Direction;

use crate::diag::{Diagnostic, Diagnostics, Report};
use crate::model::Model;
use crate::resource::{ProviderKind, ResourceId};
use crate::value::Origin;

/// A node of the graph.
#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    /// An environment (the target of order edges).
    Environment { name: String, origin: Origin },
    /// A resource of an environment.
    Resource(ResourceNode),
}

/// A resource node.
#[derive(Clone, Debug, PartialEq)]
pub struct ResourceNode {
    pub env: String,
    pub id: ResourceId,
    pub provider: ProviderKind,
    /// `Desired::kind` (`apps/v1/Deployment`, `vpc`).
    pub kind: String,
    pub origin: Origin,
    /// The Kubernetes namespace the object lives in (a Namespace: its own
    /// name), when the loaded files decide it; `None` for cluster-scoped
    /// and AWS resources and for a namespace known only at apply. Tells
    /// the provider where to look for kinds it lists namespace by namespace.
    pub namespace: Option<String>,
}

/// Why one node must come after another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EdgeKind {
    /// `after:` between environments.
    Order,
    /// A `dependsOn` entry.
    DependsOn,
    /// A `${...}` reference.
    Reference,
    /// A namespaced object after its Namespace.
    Namespace,
    /// A custom resource after its CustomResourceDefinition.
    Crd,
}

/// An edge: `from` must be applied before `to`.
#[derive(Clone, Debug, PartialEq)]
pub struct Edge {
    pub kind: EdgeKind,
    /// Where the dependency was declared.
    pub origin: Origin,
    /// What declared it and where, for messages: for a reference, the chain
    /// from the dependent value to the resource
    /// (`${input.vpcId} at m.yaml:3:9 <- ${module.network.vpc_id} at dev.yaml:9:12 <- ...`).
    pub detail: String,
}

/// The dependency graph of a whole model.
#[derive(Debug, Default)]
pub struct Graph {
    graph: DiGraph<Node, Edge>,
    envs: Vec<(String, NodeIndex)>,
    index: HashMap<(String, ResourceId), NodeIndex>,
}

/// Building the graph failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The dependencies have cycles, or values could not be followed; every
    /// problem is listed.
    #[error("{0}")]
    Invalid(Report),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Graph {
    /// Builds the graph of a loaded model and checks it for cycles.
    pub fn build(model: &Model) -> Result<Graph> {
        let mut diags = Diagnostics::default();
        let g = Self::build_with(model, &mut diags);
        if diags.is_empty() {
            Ok(g)
        } else {
            Err(Error::Invalid(Report::new(diags)))
        }
    }

    /// Builds the graph, recording problems (cycles) in `diags`.
    pub fn build_with(model: &Model, diags: &mut Diagnostics) -> Graph {
        let mut g = Graph::default();
        for env in &model.environments {
            let idx = g.graph.add_node(Node::Environment {
                name: env.name.clone(),
                origin: env.origin.clone(),
            });
            g.envs.push((env.name.clone(), idx));
        }
        for env in &model.environments {
            for (a, o) in &env.after {
                if let (Some(from), Some(to)) = (g.env_node(a), g.env_node(&env.name)) {
                    g.add_edge(from, to, EdgeKind::Order, o, format!("after: {a} at {o}"));
                }
            }
            build::EnvBuilder::new(model, env, &mut g, diags).build();
        }
        g.check_cycles(diags);
        g
    }

    fn env_node(&self, name: &str) -> Option<NodeIndex> {
        self.envs.iter().find(|(n, _)| n == name).map(|(_, i)| *i)
    }

    fn add_edge(
        &mut self,
        from: NodeIndex,
        to: NodeIndex,
        kind: EdgeKind,
        origin: &Origin,
        detail: String,
    ) {
        if self.graph.find_edge(from, to).is_none() {
            self.graph.add_edge(
                from,
                to,
                Edge {
                    kind,
                    origin: origin.clone(),
                    detail,
                },
            );
        }
    }

    /// Environment names in promotion order.
    pub fn environments(&self) -> Vec<&str> {
        self.envs.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// How many resource nodes the graph holds.
    pub fn resource_count(&self) -> usize {
        self.index.len()
    }

    /// How many edges (dependencies) the graph holds.
    pub fn edge_count(&self) -> usize {
        self.graph.edge_count()
    }

    /// The resource node of `id` in `env`.
    pub fn node(&self, env: &str, id: &ResourceId) -> Option<&ResourceNode> {
        let i = self.index.get(&(env.to_string(), id.clone()))?;
        match &self.graph[*i] {
            Node::Resource(r) => Some(r),
            Node::Environment { .. } => None,
        }
    }

    /// The provider of resource `id` in `env`; Kubernetes for an id the
    /// graph does not hold (a resource only live, or only in another
    /// revision), whose kind string then says the rest.
    pub fn provider_of(&self, env: &str, id: &ResourceId) -> ProviderKind {
        self.node(env, id)
            .map(|n| n.provider)
            .unwrap_or(ProviderKind::Kubernetes)
    }

    fn neighbours(&self, env: &str, id: &ResourceId, dir: Direction) -> Vec<ResourceId> {
        let Some(i) = self.index.get(&(env.to_string(), id.clone())) else {
            return Vec::new();
        };
        let mut out: Vec<ResourceId> = self
            .graph
            .neighbors_directed(*i, dir)
            .filter_map(|n| match &self.graph[n] {
                Node::Resource(r) => Some(r.id.clone()),
                Node::Environment { .. } => None,
            })
            .collect();
        out.sort();
        out
    }

    /// The resources `id` depends on directly (applied before it).
    pub fn dependencies(&self, env: &str, id: &ResourceId) -> Vec<ResourceId> {
        self.neighbours(env, id, Direction::Incoming)
    }

    /// The resources that depend on `id` directly (applied after it).
    pub fn dependents(&self, env: &str, id: &ResourceId) -> Vec<ResourceId> {
        self.neighbours(env, id, Direction::Outgoing)
    }

    /// True when a CustomResourceDefinition declared in `env` defines the
    /// kind of `id` (its kind is served only once that CRD is applied).
    pub fn defined_by_crd(&self, env: &str, id: &ResourceId) -> bool {
        self.index
            .get(&(env.to_string(), id.clone()))
            .is_some_and(|i| {
                self.graph
                    .edges_directed(*i, Direction::Incoming)
                    .any(|e| e.weight().kind == EdgeKind::Crd)
            })
    }

    /// The edge from `from` to `to` in `env`, if there is one.
    pub fn edge(&self, env: &str, from: &ResourceId, to: &ResourceId) -> Option<&Edge> {
        let a = self.index.get(&(env.to_string(), from.clone()))?;
        let b = self.index.get(&(env.to_string(), to.clone()))?;
        self.graph.find_edge(*a, *b).map(|e| &self.graph[e])
    }

    /// The resources of `env` in topological levels: every resource of a
    /// level depends only on resources of earlier levels, so a level can be
    /// applied in parallel. Each level is sorted by id. Empty for an
    /// unknown environment; resources on a cycle are left out.
    pub fn levels(&self, env: &str) -> Vec<Vec<ResourceId>> {
        let nodes: Vec<NodeIndex> = self.env_resources(env).collect();
        let set: HashSet<NodeIndex> = nodes.iter().copied().collect();
        let mut indegree: HashMap<NodeIndex, usize> = nodes
            .iter()
            .map(|n| {
                let d = self
                    .graph
                    .neighbors_directed(*n, Direction::Incoming)
                    .filter(|p| set.contains(p))
                    .count();
                (*n, d)
            })
            .collect();
        let mut current: Vec<NodeIndex> =
            nodes.iter().copied().filter(|n| indegree[n] == 0).collect();
        let mut levels = Vec::new();
        while !current.is_empty() {
            let mut next = Vec::new();
            for n in &current {
                for s in self.graph.neighbors_directed(*n, Direction::Outgoing) {
                    if let Some(d) = indegree.get_mut(&s) {
                        *d -= 1;
                        if *d == 0 {
                            next.push(s);
                        }
                    }
                }
            }
            let mut ids: Vec<ResourceId> = current
                .iter()
                .map(|n| self.resource(*n).id.clone())
                .collect();
            ids.sort();
            levels.push(ids);
            current = next;
        }
        levels
    }

    fn env_resources<'a>(&'a self, env: &'a str) -> impl Iterator<Item = NodeIndex> + 'a {
        self.graph
            .node_indices()
            .filter(move |i| matches!(&self.graph[*i], Node::Resource(r) if r.env == env))
    }

    fn resource(&self, i: NodeIndex) -> &ResourceNode {
        match &self.graph[i] {
            Node::Resource(r) => r,
            Node::Environment { .. } => unreachable!("only resource indexes are passed"),
        }
    }

    fn label(&self, i: NodeIndex) -> String {
        match &self.graph[i] {
            Node::Resource(r) => format!("{}/{}", r.env, r.id),
            Node::Environment { name, .. } => format!("environment {name}"),
        }
    }

    fn check_cycles(&self, diags: &mut Diagnostics) {
        for scc in tarjan_scc(&self.graph) {
            let on_cycle = scc.len() > 1 || self.graph.find_edge(scc[0], scc[0]).is_some();
            if !on_cycle {
                continue;
            }
            diags.push(self.cycle_diagnostic(&scc));
        }
    }

    fn cycle_diagnostic(&self, scc: &[NodeIndex]) -> Diagnostic {
        let members: HashSet<NodeIndex> = scc.iter().copied().collect();
        let mut names: Vec<String> = scc.iter().map(|i| self.label(*i)).collect();
        names.sort();
        let mut edges: Vec<(String, String, &Edge)> = self
            .graph
            .edge_references()
            .filter(|e| members.contains(&e.source()) && members.contains(&e.target()))
            .map(|e| (self.label(e.source()), self.label(e.target()), e.weight()))
            .collect();
        edges.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        let mut msg = format!(
            "dependency cycle between {} resources: {}",
            names.len(),
            names.join(", ")
        );
        for (a, b, e) in &edges {
            let _ = write!(msg, "\n    {a} -> {b}: {}", e.detail);
        }
        let origin = edges
            .iter()
            .map(|(_, _, e)| e.origin.clone())
            .min()
            .unwrap_or_default();
        Diagnostic::new(
            origin,
            msg,
            "break the cycle: remove one of these references or dependsOn entries",
        )
    }
}

mod build;
mod output;

#[cfg(test)]
mod tests;
