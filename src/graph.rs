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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use petgraph::Direction;

use crate::diag::{Diagnostic, Diagnostics, Report};
use crate::expr::{self, Scope};
use crate::model::{DependsOn, Environment, Instance, Model};
use crate::provider::{ProviderKind, ResourceId};
use crate::render::{RenderOptions, Renderer, StructuralSecrets};
use crate::value::{Origin, Value};

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
            EnvBuilder::new(model, env, &mut g, diags).build();
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

    /// The graph in Graphviz DOT, for one environment or all.
    pub fn to_dot(&self, env: Option<&str>) -> String {
        let mut out = String::from(
            "digraph tidegate {\n  rankdir=LR;\n  node [shape=box, fontname=\"Helvetica\"];\n",
        );
        for (name, idx) in self.envs.iter().filter(|(n, _)| env.is_none_or(|e| e == n)) {
            let _ = writeln!(
                out,
                "  subgraph \"cluster_{name}\" {{\n    label=\"{name}\";"
            );
            if env.is_none() {
                let _ = writeln!(
                    out,
                    "    n{} [label=\"{name}\", shape=oval, style=bold];",
                    idx.index()
                );
            }
            for (module, nodes) in self.by_module(name) {
                let _ = writeln!(
                    out,
                    "    subgraph \"cluster_{name}_{module}\" {{\n      label=\"{module}\";"
                );
                for i in nodes {
                    let r = self.resource(i);
                    let _ = writeln!(
                        out,
                        "      n{} [label=\"{}\\n{}\"];",
                        i.index(),
                        r.id.name,
                        r.kind
                    );
                }
                out.push_str("    }\n");
            }
            out.push_str("  }\n");
        }
        for (a, b, e) in self.edges_for(env) {
            let style = match e.kind {
                EdgeKind::Reference => "",
                EdgeKind::DependsOn => " [style=bold]",
                EdgeKind::Namespace | EdgeKind::Crd => " [style=dotted]",
                EdgeKind::Order => " [style=dashed, label=\"after\"]",
            };
            let _ = writeln!(out, "  n{} -> n{}{style};", a.index(), b.index());
        }
        out.push_str("}\n");
        out
    }

    /// The apply order as text: per environment (in promotion order), each
    /// level with its resources and what each waits for.
    pub fn to_text(&self, env: Option<&str>) -> String {
        let mut out = String::new();
        for name in self
            .environments()
            .into_iter()
            .filter(|n| env.is_none_or(|e| e == *n))
        {
            let levels = self.levels(name);
            let count: usize = levels.iter().map(Vec::len).sum();
            let _ = writeln!(out, "{name}: {count} resources in {} levels", levels.len());
            for (i, level) in levels.iter().enumerate() {
                let _ = writeln!(out, "  level {}:", i + 1);
                for id in level {
                    let kind = self.node(name, id).map_or("", |n| n.kind.as_str());
                    let deps = self.dependencies(name, id);
                    let after = if deps.is_empty() {
                        String::new()
                    } else {
                        let d: Vec<String> = deps.iter().map(ResourceId::to_string).collect();
                        format!(" (after {})", d.join(", "))
                    };
                    let _ = writeln!(out, "    {id} [{kind}]{after}");
                }
            }
        }
        out
    }

    /// The graph as a Mermaid flowchart, for one environment or all.
    pub fn to_mermaid(&self, env: Option<&str>) -> String {
        let mut out = String::from("flowchart LR\n");
        for (name, idx) in self.envs.iter().filter(|(n, _)| env.is_none_or(|e| e == n)) {
            let _ = writeln!(out, "  subgraph env_{}[\"{name}\"]", idx.index());
            if env.is_none() {
                let _ = writeln!(out, "    n{}([\"{name}\"])", idx.index());
            }
            for (module, nodes) in self.by_module(name) {
                let _ = writeln!(
                    out,
                    "    subgraph m{}_{}[\"{module}\"]",
                    idx.index(),
                    mermaid_id(&module)
                );
                for i in nodes {
                    let r = self.resource(i);
                    let _ = writeln!(
                        out,
                        "      n{}[\"{}<br/>{}\"]",
                        i.index(),
                        r.id.name,
                        r.kind
                    );
                }
                out.push_str("    end\n");
            }
            out.push_str("  end\n");
        }
        for (a, b, e) in self.edges_for(env) {
            let arrow = match e.kind {
                EdgeKind::Reference => "-->",
                EdgeKind::DependsOn => "==>",
                EdgeKind::Namespace | EdgeKind::Crd | EdgeKind::Order => "-.->",
            };
            let _ = writeln!(out, "  n{} {arrow} n{}", a.index(), b.index());
        }
        out
    }

    fn by_module(&self, env: &str) -> BTreeMap<String, Vec<NodeIndex>> {
        let mut m: BTreeMap<String, Vec<NodeIndex>> = BTreeMap::new();
        for i in self.env_resources(env) {
            m.entry(self.resource(i).id.module.clone())
                .or_default()
                .push(i);
        }
        m
    }

    fn edges_for(&self, env: Option<&str>) -> Vec<(NodeIndex, NodeIndex, &Edge)> {
        let keep = |i: NodeIndex| match (&self.graph[i], env) {
            (_, None) => true,
            (Node::Resource(r), Some(e)) => r.env == e,
            (Node::Environment { .. }, Some(_)) => false,
        };
        let mut edges: Vec<_> = self
            .graph
            .edge_references()
            .filter(|e| keep(e.source()) && keep(e.target()))
            .map(|e| (e.source(), e.target(), e.weight()))
            .collect();
        edges.sort_by_key(|(a, b, _)| (a.index(), b.index()));
        edges
    }
}

/// The references that the part `sub` of `value` depends on, each with the
/// path of the string holding it and the part of the referenced value that
/// matters (`sub` carried through a whole-string reference). Where the part
/// cannot be told apart (an interpolated string), every reference counts.
fn refs_at(value: &Value, sub: &[String]) -> Vec<(String, expr::Ref, Vec<String>)> {
    if let (Value::String(s), false) = (value, sub.is_empty()) {
        if let Ok(parts) = expr::parse(s) {
            if let [expr::Part::Ref(r)] = parts.as_slice() {
                return vec![(String::new(), r.clone(), sub.to_vec())];
            }
        }
    }
    let mut base = String::new();
    let mut v = value;
    for (i, seg) in sub.iter().enumerate() {
        let child = match v {
            Value::List(l) => seg.parse::<usize>().ok().and_then(|i| l.get(i)),
            Value::Map(m) => m.get(seg),
            _ => None,
        };
        match child {
            Some(c) => {
                base = match v {
                    Value::List(_) => crate::value::index_path(&base, seg.parse().unwrap_or(0)),
                    _ => crate::value::key_path(&base, seg),
                };
                v = c;
                if let Value::String(_) = c {
                    let rest = &sub[i + 1..];
                    return refs_at(c, rest)
                        .into_iter()
                        .map(|(p, r, e)| (if p.is_empty() { base.clone() } else { p }, r, e))
                        .collect();
                }
            }
            None => break,
        }
    }
    expr::refs(v, &base)
        .into_iter()
        .filter_map(|(p, r)| r.ok().map(|r| (p, r, Vec::new())))
        .collect()
}

fn mermaid_id(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// A resource that a value depends on, with the chain of references that
/// leads to it (first the one in the dependent value, last the one naming
/// the resource).
#[derive(Clone)]
struct Dep {
    id: ResourceId,
    hops: Vec<(String, Origin)>,
}

impl Dep {
    fn origin(&self) -> Origin {
        self.hops[0].1.clone()
    }

    fn detail(&self) -> String {
        self.hops
            .iter()
            .map(|(r, o)| format!("{r} at {o}"))
            .collect::<Vec<_>>()
            .join(" <- ")
    }

    fn via(&self, head: String, origin: Origin) -> Dep {
        let mut hops = vec![(head, origin)];
        hops.extend(self.hops.iter().cloned());
        Dep {
            id: self.id.clone(),
            hops,
        }
    }
}

/// Builds the edges of one environment.
struct EnvBuilder<'m, 'g> {
    model: &'m Model,
    env: &'m Environment,
    g: &'g mut Graph,
    diags: &'g mut Diagnostics,
    /// Resources an instance input / output depends on, by (instance, name, is_output).
    memo: HashMap<(String, String, bool), Vec<Dep>>,
    visiting: BTreeSet<(String, String, bool)>,
}

impl<'m, 'g> EnvBuilder<'m, 'g> {
    fn new(
        model: &'m Model,
        env: &'m Environment,
        g: &'g mut Graph,
        diags: &'g mut Diagnostics,
    ) -> Self {
        EnvBuilder {
            model,
            env,
            g,
            diags,
            memo: HashMap::new(),
            visiting: BTreeSet::new(),
        }
    }

    fn build(mut self) {
        for (id, _, res) in self.model.resources(self.env) {
            let idx = self.g.graph.add_node(Node::Resource(ResourceNode {
                env: self.env.name.clone(),
                id: id.clone(),
                provider: res.provider,
                kind: res.kind.clone(),
                origin: res.origin.clone(),
            }));
            self.g.index.insert((self.env.name.clone(), id), idx);
        }
        for inst in &self.env.instances {
            if self.model.modules.contains_key(&inst.source) {
                self.instance_edges(inst);
            }
        }
        self.kubernetes_edges();
    }

    fn idx(&self, id: &ResourceId) -> Option<NodeIndex> {
        self.g
            .index
            .get(&(self.env.name.clone(), id.clone()))
            .copied()
    }

    fn edge(
        &mut self,
        from: &ResourceId,
        to: &ResourceId,
        kind: EdgeKind,
        origin: &Origin,
        detail: String,
    ) {
        if let (Some(a), Some(b)) = (self.idx(from), self.idx(to)) {
            self.g.add_edge(a, b, kind, origin, detail);
        }
    }

    fn instance_resources(&self, name: &str) -> Vec<ResourceId> {
        self.env
            .instance(name)
            .and_then(|i| self.model.modules.get(&i.source))
            .map(|m| m.resources.iter().map(|r| r.id(name)).collect())
            .unwrap_or_default()
    }

    fn instance_edges(&mut self, inst: &'m Instance) {
        let Some(module) = self.model.module_of(inst) else {
            return;
        };
        let own: Vec<ResourceId> = module.resources.iter().map(|r| r.id(&inst.name)).collect();
        for (dep, o) in &inst.depends_on {
            for from in self.instance_resources(dep) {
                for to in &own {
                    self.edge(
                        &from,
                        to,
                        EdgeKind::DependsOn,
                        o,
                        format!("dependsOn: {dep}"),
                    );
                }
            }
        }
        for res in &module.resources {
            let to = res.id(&inst.name);
            for (d, o) in &res.depends_on {
                let froms = match d {
                    DependsOn::Resource(n) => vec![ResourceId {
                        module: inst.name.clone(),
                        name: n.clone(),
                    }],
                    DependsOn::Module(m) => self.instance_resources(m),
                };
                let text = match d {
                    DependsOn::Resource(n) => n.clone(),
                    DependsOn::Module(m) => format!("module.{m}"),
                };
                for from in froms {
                    self.edge(
                        &from,
                        &to,
                        EdgeKind::DependsOn,
                        o,
                        format!("dependsOn: {text}"),
                    );
                }
            }
            for dep in self.module_value_deps(inst, &res.body, &res.spans, &[]) {
                self.edge(
                    &dep.id,
                    &to,
                    EdgeKind::Reference,
                    &dep.origin(),
                    dep.detail(),
                );
            }
        }
    }

    /// Resources a value in a module (body, or the part `sub` of an output)
    /// depends on.
    fn module_value_deps(
        &mut self,
        inst: &'m Instance,
        value: &Value,
        spans: &crate::value::Spans,
        sub: &[String],
    ) -> Vec<Dep> {
        let mut out = Vec::new();
        for (path, r, extra) in refs_at(value, sub) {
            let origin = spans.nearest(&path).cloned().unwrap_or_default();
            match r.scope {
                Scope::Resource => out.push(Dep {
                    id: ResourceId {
                        module: inst.name.clone(),
                        name: r.path[0].clone(),
                    },
                    hops: vec![(format!("${{{r}}}"), origin)],
                }),
                Scope::Input => {
                    let sub: Vec<String> = r.path[1..].iter().cloned().chain(extra).collect();
                    for d in self.value_deps(inst, &r.path[0], false, &sub) {
                        out.push(d.via(format!("${{{r}}}"), origin.clone()));
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// Resources the part `sub` of an instance input (`output == false`) or
    /// output depends on: `${input.subnetIds.0}` follows only the first item
    /// of the list, when it can be told apart.
    fn value_deps(
        &mut self,
        inst: &'m Instance,
        name: &str,
        output: bool,
        sub: &[String],
    ) -> Vec<Dep> {
        let key = (
            inst.name.clone(),
            format!("{name}.{}", sub.join(".")),
            output,
        );
        if let Some(d) = self.memo.get(&key) {
            return d.clone();
        }
        // Cycles are detected on whole values (as the renderer evaluates
        // them), so the part followed cannot grow without end.
        let whole = (inst.name.clone(), name.to_string(), output);
        if !self.visiting.insert(whole.clone()) {
            let what = if output { "output" } else { "input" };
            self.diags.error(
                &inst.origin,
                format!(
                    "reference cycle: {what} `{name}` of module instance `{}` depends on itself through other inputs and outputs",
                    inst.name
                ),
                "break the chain of `${module...}` / `${input...}` references",
            );
            return Vec::new();
        }
        let deps = if output {
            match self.model.module_of(inst).and_then(|m| m.outputs.get(name)) {
                Some(o) => self.module_value_deps(inst, &o.value.value, &o.value.spans, sub),
                None => Vec::new(),
            }
        } else {
            self.input_deps(inst, name, sub)
        };
        self.visiting.remove(&whole);
        self.memo.insert(key, deps.clone());
        deps
    }

    fn input_deps(&mut self, inst: &'m Instance, name: &str, sub: &[String]) -> Vec<Dep> {
        let Some(v) = inst.inputs.get(name) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (path, r, extra) in refs_at(&v.value, sub) {
            if r.scope != Scope::Module {
                continue;
            }
            let Some(other) = self.env.instance(&r.path[0]) else {
                continue;
            };
            if !self.model.modules.contains_key(&other.source) {
                continue;
            }
            let origin = v.spans.nearest(&path).cloned().unwrap_or_default();
            let sub: Vec<String> = r.path[2..].iter().cloned().chain(extra).collect();
            for d in self.value_deps(other, &r.path[1], true, &sub) {
                out.push(d.via(format!("${{{r}}}"), origin.clone()));
            }
        }
        out
    }

    /// Namespace and CRD edges, from the rendered names of Kubernetes objects.
    fn kubernetes_edges(&mut self) {
        let known = HashMap::new();
        let opts = RenderOptions {
            known: &known,
            secrets: &StructuralSecrets,
            owner: None,
        };
        let Ok(r) = Renderer::new(self.model, &self.env.name, opts) else {
            return;
        };
        let mut namespaces: HashMap<String, ResourceId> = HashMap::new();
        let mut crds: HashMap<(String, String), ResourceId> = HashMap::new();
        let mut objects: Vec<(ResourceId, String, Option<String>, Origin)> = Vec::new();
        let mut identities: HashMap<(String, String, String), ResourceId> = HashMap::new();
        for (id, inst, res) in self.model.resources(self.env) {
            if res.provider != ProviderKind::Kubernetes {
                continue;
            }
            let kind = res.kind.rsplit('/').next().unwrap_or_default().to_string();
            // Only the fields that decide the order are evaluated, not the
            // whole body.
            let field = |p: &str| -> Option<String> {
                let v = res.body.get_path(p)?;
                let spans = crate::value::Spans::default();
                match r.eval_in_module(inst, v, &spans).ok()? {
                    Value::String(s) => Some(s),
                    _ => None,
                }
            };
            let s = |p: &str| match (p, kind.as_str()) {
                ("spec.group" | "spec.names.kind", k) if k != "CustomResourceDefinition" => None,
                _ => field(p),
            };
            match kind.as_str() {
                "Namespace" => {
                    if let Some(n) = s("metadata.name") {
                        namespaces.insert(n, id.clone());
                    }
                }
                "CustomResourceDefinition" => {
                    if let (Some(g), Some(k)) = (s("spec.group"), s("spec.names.kind")) {
                        crds.insert((g, k), id.clone());
                    }
                }
                _ => {}
            }
            let group = res.kind.rsplitn(3, '/').nth(2).unwrap_or("").to_string();
            let ns = s("metadata.namespace");
            if let Some(name) = s("metadata.name") {
                let key = (res.kind.clone(), ns.clone().unwrap_or_default(), name);
                if let Some(first) = identities.get(&key) {
                    self.diags.error(
                        &res.origin,
                        format!(
                            "resources {first} and {id} of environment {} both declare {} {}{}",
                            self.env.name,
                            key.0,
                            key.1.clone() + if key.1.is_empty() { "" } else { "/" },
                            key.2
                        ),
                        "give one of them another metadata.name or namespace",
                    );
                } else {
                    identities.insert(key, id.clone());
                }
            }
            objects.push((
                id.clone(),
                format!("{group}/{kind}"),
                ns,
                res.origin.clone(),
            ));
        }
        for (id, gk, ns, origin) in objects {
            if let Some(ns_id) = ns.and_then(|n| namespaces.get(&n).cloned()) {
                if ns_id != id {
                    let detail = format!("lives in namespace {ns_id} ({origin})");
                    self.edge(&ns_id, &id, EdgeKind::Namespace, &origin, detail);
                }
            }
            let (g, k) = gk.split_once('/').unwrap_or_default();
            if let Some(crd) = crds.get(&(g.to_string(), k.to_string())).cloned() {
                if crd != id {
                    self.edge(
                        &crd,
                        &id,
                        EdgeKind::Crd,
                        &origin,
                        format!("custom resource of {crd} ({origin})"),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
