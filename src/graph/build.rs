//! Building the edges of one environment: references followed through
//! inputs and outputs, `dependsOn`, and the implicit Kubernetes order.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use petgraph::graph::NodeIndex;

use super::{EdgeKind, Graph, Node, ResourceNode};
use crate::diag::Diagnostics;
use crate::expr::{self, Scope};
use crate::model::{DependsOn, Environment, Instance, Model};
use crate::provider::{self, Declared, Implied};
use crate::render::{RenderOptions, Renderer, StructuralSecrets};
use crate::resource::{ProviderKind, ResourceId};
use crate::value::{Origin, Value};

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
pub(super) struct EnvBuilder<'m, 'g> {
    model: &'m Model,
    env: &'m Environment,
    g: &'g mut Graph,
    diags: &'g mut Diagnostics,
    /// Resources an instance input / output depends on, by (instance, name, is_output).
    memo: HashMap<(String, String, bool), Vec<Dep>>,
    visiting: BTreeSet<(String, String, bool)>,
}

impl<'m, 'g> EnvBuilder<'m, 'g> {
    pub(super) fn new(
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

    pub(super) fn build(mut self) {
        for (id, _, res) in self.model.resources(self.env) {
            let idx = self.g.graph.add_node(Node::Resource(ResourceNode {
                env: self.env.name.clone(),
                id: id.clone(),
                provider: res.provider,
                kind: res.kind.clone(),
                origin: res.origin.clone(),
                namespace: None,
            }));
            self.g.index.insert((self.env.name.clone(), id), idx);
        }
        for inst in &self.env.instances {
            if self.model.modules.contains_key(&inst.source) {
                self.instance_edges(inst);
            }
        }
        self.provider_edges();
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

    fn set_namespace(&mut self, id: &ResourceId, namespace: Option<String>) {
        if let Some(i) = self.idx(id) {
            if let Node::Resource(r) = &mut self.g.graph[i] {
                r.namespace = namespace;
            }
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
                    DependsOn::Resource(n) => module
                        .named(n)
                        .into_iter()
                        .map(|r| r.id(&inst.name))
                        .collect(),
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

    /// What each provider's [`crate::provider::Spec::arrange`] implies:
    /// where resources live (a Kubernetes namespace), order (an object
    /// after its Namespace, a custom resource after its definition) and
    /// resources that declare the same object. Only the fields the
    /// provider names are evaluated, not whole bodies.
    fn provider_edges(&mut self) {
        let known = HashMap::new();
        let opts = RenderOptions {
            known: &known,
            secrets: &StructuralSecrets,
            owner: None,
        };
        let Ok(r) = Renderer::new(self.model, &self.env.name, opts) else {
            return;
        };
        let mut declared: BTreeMap<ProviderKind, Vec<Declared>> = BTreeMap::new();
        let mut origins: HashMap<ResourceId, Origin> = HashMap::new();
        for (id, inst, res) in self.model.resources(self.env) {
            let spec = provider::registry::spec(res.provider);
            let mut fields = BTreeMap::new();
            for path in spec.order_fields(&res.kind) {
                let Some(v) = res.body.get_path(path) else {
                    continue;
                };
                let spans = crate::value::Spans::default();
                if let Ok(Value::String(s)) = r.eval_in_module(inst, v, &spans) {
                    fields.insert(*path, s);
                }
            }
            origins.insert(id.clone(), res.origin.clone());
            declared.entry(res.provider).or_default().push(Declared {
                id,
                kind: res.kind.clone(),
                fields,
            });
        }
        for (kind, declared) in declared {
            let arranged = provider::registry::spec(kind).arrange(&declared);
            for (id, place) in arranged.placement {
                self.set_namespace(&id, Some(place));
            }
            for (first, second, object) in arranged.clashes {
                let origin = origins.get(&second).cloned().unwrap_or_default();
                self.diags.error(
                    &origin,
                    format!(
                        "resources {first} and {second} of environment {} both declare {object}",
                        self.env.name
                    ),
                    "give one of them another metadata.name or namespace",
                );
            }
            for e in arranged.edges {
                let origin = origins.get(&e.to).cloned().unwrap_or_default();
                let (kind, detail) = match e.why {
                    Implied::Inside => (
                        EdgeKind::Namespace,
                        format!("lives in namespace {} ({origin})", e.from),
                    ),
                    Implied::DefinesKind => (
                        EdgeKind::Crd,
                        format!("custom resource of {} ({origin})", e.from),
                    ),
                };
                self.edge(&e.from, &e.to, kind, &origin, detail);
            }
        }
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
