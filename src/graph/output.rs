//! Printing the graph: Graphviz DOT, Mermaid, and the apply order as text.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use petgraph::graph::NodeIndex;
use petgraph::visit::EdgeRef;

use super::{Edge, EdgeKind, Graph, Node};
use crate::resource::ResourceId;

impl Graph {
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

fn mermaid_id(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}
