//! The value rules of each provider's bodies ([`crate::provider::Spec::check_values`]:
//! for AWS specs the same rules the provider runs before each plan and
//! apply), run without network by `validate`, `plan` (`--offline` too) and
//! every command that loads a repository:
//!
//! - [`check_modules`]: the literal values of every module, once per
//!   module (a `${...}` reference counts as unknown), at the field's line;
//! - [`check_rendered`]: every body of an environment as rendered with
//!   its vars, inputs and (structural) secrets. A problem is reported where
//!   the value was written: the reference is followed back through
//!   `${input.*}` (the instance's input in the environment file, or the
//!   input's default), `${var.*}`, `${module.*}` outputs and
//!   `${resource.*}` fields, and the message names the resource field it
//!   reached and the references it went through.
//!
//! A literal problem found by both is the same diagnostic (same place,
//! same words) and is printed once.

use std::collections::HashMap;

use crate::diag::Diagnostics;
use crate::expr::{self, Part, Ref, Scope};
use crate::model::{Environment, Instance, Model, Module, Resource};
use crate::provider::{self, Problem};
use crate::resource::{Desired, ProviderKind, ResourceId};
use crate::value::{index_path, key_path, Origin, Spans, Value};

/// How many references a trace follows before it stops (render already
/// refused cycles; this only bounds the walk).
const MAX_HOPS: usize = 32;

/// Checks the literal values of every resource of every module: each
/// provider sees every module's bodies at once ([`provider::Spec::check_set`]),
/// so a Kubernetes custom resource is checked against a
/// CustomResourceDefinition declared in any module.
pub fn check_modules(model: &Model, diags: &mut Diagnostics) {
    let declared: Vec<(&Resource, Value)> = model
        .modules
        .values()
        .flat_map(|m| m.resources.iter())
        .map(|r| (r, literal(&r.body)))
        .collect();
    for provider in ProviderKind::ALL {
        let mine: Vec<&(&Resource, Value)> = declared
            .iter()
            .filter(|(r, _)| r.provider == provider)
            .collect();
        let bodies: Vec<(&str, &Value)> = mine.iter().map(|(r, b)| (r.kind.as_str(), b)).collect();
        for (i, p) in provider::registry::spec(provider).check_set(&bodies, &[]) {
            let res = mine[i].0;
            let at = res.spans.nearest(&p.path).cloned().unwrap_or_default();
            diags.push(crate::diag::Diagnostic {
                severity: p.severity,
                ..crate::diag::Diagnostic::new(at, p.message, p.fix)
            });
        }
    }
}

/// `v` with every string holding a `${...}` reference replaced by
/// [`Value::Unknown`]: what is known before rendering.
fn literal(v: &Value) -> Value {
    match v {
        Value::String(s) if expr::has_refs(s) => Value::Unknown(s.clone()),
        Value::List(l) => Value::List(l.iter().map(literal).collect()),
        Value::Map(m) => Value::Map(m.iter().map(|(k, v)| (k.clone(), literal(v))).collect()),
        other => other.clone(),
    }
}

/// Checks the rendered bodies `desired` of environment `env`, each
/// provider's together; the literal bodies of every module are passed
/// beside them (a CustomResourceDefinition declared in a module this
/// environment does not use still describes its kind).
pub fn check_rendered(model: &Model, env: &str, desired: &[Desired], diags: &mut Diagnostics) {
    let Some(env) = model.environment(env) else {
        return;
    };
    let tracer = Tracer { model, env };
    let declared: HashMap<ResourceId, (&Instance, &Resource)> = model
        .resources(env)
        .map(|(id, i, r)| (id, (i, r)))
        .collect();
    let found: Vec<(&Desired, &Instance, &Resource, &Module)> = desired
        .iter()
        .filter_map(|d| {
            let &(inst, res) = declared.get(&d.id)?;
            Some((d, inst, res, model.module_of(inst)?))
        })
        .collect();
    for provider in ProviderKind::ALL {
        let mine: Vec<&(&Desired, &Instance, &Resource, &Module)> = found
            .iter()
            .filter(|(_, _, r, _)| r.provider == provider)
            .collect();
        if mine.is_empty() {
            continue;
        }
        let bodies: Vec<(&str, &Value)> = mine
            .iter()
            .map(|(d, ..)| (d.kind.as_str(), &d.body))
            .collect();
        let beside: Vec<(&str, &Value)> = model
            .modules
            .values()
            .flat_map(|m| m.resources.iter())
            .filter(|r| r.provider == provider)
            .map(|r| (r.kind.as_str(), &r.body))
            .collect();
        for (i, p) in provider::registry::spec(provider).check_set(&bodies, &beside) {
            let &&(d, inst, res, module) = &mine[i];
            let (at, via) = tracer.origin(inst, module, res, &d.body, &p.path);
            diags.push(diagnostic(at, p, &d.id.to_string(), &via));
        }
    }
}

fn diagnostic(at: Origin, p: Problem, id: &str, via: &[String]) -> crate::diag::Diagnostic {
    let message = if via.is_empty() {
        p.message
    } else {
        let field = if p.path.is_empty() {
            String::new()
        } else {
            format!("`{}` of ", p.path)
        };
        format!("{} ({field}{id}, through {})", p.message, via.join(" and "))
    };
    crate::diag::Diagnostic {
        severity: p.severity,
        ..crate::diag::Diagnostic::new(at, message, p.fix)
    }
}

/// Follows rendered values back to where they were written.
struct Tracer<'m> {
    model: &'m Model,
    env: &'m Environment,
}

/// Where a value being traced lives.
#[derive(Clone, Copy)]
enum Ctx<'m> {
    /// A module document, evaluated for one instance.
    Module(&'m Instance, &'m Module),
    /// The environment document.
    Env,
}

/// A value, where its nodes were written, and the path of the value inside
/// those spans.
struct At<'m> {
    ctx: Ctx<'m>,
    value: &'m Value,
    spans: &'m Spans,
    base: String,
}

impl<'m> Tracer<'m> {
    /// The origin of the value at `path` of resource `res` (rendered as
    /// `rendered`), and the references followed to get there.
    fn origin(
        &self,
        inst: &'m Instance,
        module: &'m Module,
        res: &'m Resource,
        rendered: &Value,
        path: &str,
    ) -> (Origin, Vec<String>) {
        let segs = segments(rendered, path);
        let mut via = Vec::new();
        let start = At {
            ctx: Ctx::Module(inst, module),
            value: &res.body,
            spans: &res.spans,
            base: String::new(),
        };
        let at = self.walk(start, segs, &mut via);
        (at.unwrap_or_else(|| res.origin.clone()), via)
    }

    fn walk(&self, mut at: At<'m>, mut segs: Vec<String>, via: &mut Vec<String>) -> Option<Origin> {
        for _ in 0..MAX_HOPS {
            // Descend through literal maps and lists.
            let mut i = 0;
            while i < segs.len() {
                let child = match at.value {
                    Value::Map(m) => m.get(&segs[i]).map(|v| (v, key_path(&at.base, &segs[i]))),
                    Value::List(l) => segs[i]
                        .parse::<usize>()
                        .ok()
                        .and_then(|n| l.get(n).map(|v| (v, index_path(&at.base, n)))),
                    _ => None,
                };
                let Some((v, p)) = child else {
                    break;
                };
                at.value = v;
                at.base = p;
                i += 1;
            }
            let here = at.spans.nearest(&at.base).cloned();
            let Value::String(s) = at.value else {
                return here;
            };
            let whole = match expr::parse(s).as_deref() {
                Ok([Part::Ref(r)]) => r.clone(),
                // Interpolated (or no reference): the value was made here.
                _ => return here,
            };
            let Some((next, prefix)) = self.follow(at.ctx, &whole) else {
                // A secret, `${env.*}` or an attribute known after apply:
                // written where it is referenced.
                via.push(format!("`${{{whole}}}`"));
                return here;
            };
            via.push(format!("`${{{whole}}}`"));
            at = next;
            segs = prefix.into_iter().chain(segs.drain(i..)).collect();
        }
        at.spans.nearest(&at.base).cloned()
    }

    /// Where reference `r` (written in `ctx`) takes its value from, and the
    /// path below that value it names.
    fn follow(&self, ctx: Ctx<'m>, r: &Ref) -> Option<(At<'m>, Vec<String>)> {
        let rest = |n: usize| r.path.iter().skip(n).cloned().collect::<Vec<_>>();
        match (ctx, r.scope) {
            (Ctx::Module(inst, module), Scope::Input) => {
                let name = r.path.first()?;
                match inst.inputs.get(name) {
                    Some(l) => Some((
                        At {
                            ctx: Ctx::Env,
                            value: &l.value,
                            spans: &l.spans,
                            base: String::new(),
                        },
                        rest(1),
                    )),
                    None => {
                        let decl = module.inputs.get(name)?;
                        Some((
                            At {
                                ctx,
                                value: decl.default.as_ref()?,
                                spans: &decl.default_spans,
                                base: String::new(),
                            },
                            rest(1),
                        ))
                    }
                }
            }
            (Ctx::Module(_, module), Scope::Resource) => {
                let res = module.resource(r.path.first()?)?;
                Some((
                    At {
                        ctx,
                        value: &res.body,
                        spans: &res.spans,
                        base: String::new(),
                    },
                    rest(1),
                ))
            }
            (Ctx::Env, Scope::Var) => {
                let name = r.path.first()?;
                Some((
                    At {
                        ctx,
                        value: self.env.vars.get(name)?,
                        spans: &self.env.var_spans,
                        base: name.clone(),
                    },
                    rest(1),
                ))
            }
            (Ctx::Env, Scope::Module) => {
                let other = self.env.instance(r.path.first()?)?;
                let m = self.model.module_of(other)?;
                let out = m.outputs.get(r.path.get(1)?)?;
                Some((
                    At {
                        ctx: Ctx::Module(other, m),
                        value: &out.value.value,
                        spans: &out.value.spans,
                        base: String::new(),
                    },
                    rest(2),
                ))
            }
            _ => None,
        }
    }
}

/// The segments (map keys, list indexes) of `path` in `v`: keys may hold
/// `.` (tag names), so the path is matched against the value's own keys.
fn segments(v: &Value, path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut v, mut rest) = (v, path);
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('[') {
            let Some((n, tail)) = after.split_once(']') else {
                break;
            };
            let Some(item) = n.parse::<usize>().ok().and_then(|i| match v {
                Value::List(l) => l.get(i),
                _ => None,
            }) else {
                break;
            };
            out.push(n.to_string());
            (v, rest) = (item, tail);
            continue;
        }
        let r = rest.strip_prefix('.').unwrap_or(rest);
        let Value::Map(m) = v else {
            break;
        };
        // The longest key that the path continues with.
        let found = m
            .iter()
            .filter(|(k, _)| {
                r.strip_prefix(k.as_str())
                    .is_some_and(|t| t.is_empty() || t.starts_with(['.', '[']))
            })
            .max_by_key(|(k, _)| k.len());
        let Some((k, child)) = found else {
            break;
        };
        out.push(k.clone());
        (v, rest) = (child, &r[k.len()..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::Diagnostic;
    use crate::load::Files;
    use crate::render::{render_env, RenderOptions, StructuralSecrets};

    fn files(entries: &[(&str, &str)]) -> Files {
        crate::testutil::files(entries)
    }

    const MODULE: &str = "apiVersion: tidegate.dev/v1
kind: Module
metadata:
  name: net
spec:
  inputs:
    cidr:
      type: string
    ports:
      type: map
      default:
        ssh: 22
        web: 220000
    token:
      type: string
  outputs:
    cidr:
      value: ${resource.vpc.cidrBlock}
  resources:
    - name: vpc
      provider: aws
      type: vpc
      spec:
        cidrBlock: ${input.cidr}
        tags:
          token: ${input.token}
          Name: net-${env.name}
    - name: sg
      provider: aws
      type: security_group
      spec:
        vpcId: ${resource.vpc.id}
        groupName: web
        description: web
        ingress:
          - protocol: tcp
            fromPort: ${input.ports.web}
            toPort: ${input.ports.web}
            cidrBlocks: [\"${resource.vpc.cidrBlock}\"]
";

    const ENV: &str = "apiVersion: tidegate.dev/v1
kind: Environment
metadata:
  name: dev
spec:
  targets:
    aws:
      region: eu-west-1
  vars:
    cidr: 10.50.0.0/33
  secrets:
    - secrets/dev.sops.yaml
  modules:
    - name: net
      source: modules/net
      inputs:
        cidr: ${var.cidr}
        token: ${secret.api.token}
";

    const SECRETS: &str = "api:\n  token: ENC[AES256_GCM,data:eQ==,iv:aQ==,tag:dA==,type:str]\nsops:\n  version: 3.11.0\n";

    fn rendered_problems(env: &str, module: &str) -> Vec<Diagnostic> {
        let f = files(&[
            ("environments/dev.yaml", env),
            ("modules/net/module.yaml", module),
            ("secrets/dev.sops.yaml", SECRETS),
        ]);
        let model = crate::load::load(&f).expect("loads");
        let mut d = Diagnostics::default();
        check_modules(&model, &mut d);
        assert!(d.is_empty(), "{:?}", d.sorted());
        let known = std::collections::HashMap::new();
        let opts = RenderOptions {
            known: &known,
            secrets: &StructuralSecrets,
            owner: None,
        };
        let desired = render_env(&model, "dev", opts).expect("renders");
        check_rendered(&model, "dev", &desired, &mut d);
        d.sorted()
    }

    #[test]
    fn rendered_values_are_reported_where_they_were_written() {
        let got: Vec<String> = rendered_problems(ENV, MODULE)
            .iter()
            .map(|d| format!("{}: {}", d.origin, d.message))
            .collect();
        assert_eq!(
            got,
            vec![
                // The var, through the instance input and the module field.
                "environments/dev.yaml:10:11: `cidrBlock` `10.50.0.0/33` is not an IPv4 CIDR block: /33 is not a prefix length (0 to 32) (`cidrBlock` of net.vpc, through `${input.cidr}` and `${var.cidr}`)",
                // The same var again, read by the rule through the VPC's field.
                "environments/dev.yaml:10:11: `cidrBlocks` `10.50.0.0/33` is not an IPv4 CIDR block: /33 is not a prefix length (0 to 32) (`ingress[0].cidrBlocks[0]` of net.sg, through `${resource.vpc.cidrBlock}` and `${input.cidr}` and `${var.cidr}`)",
                // The secret, where the environment passes it in.
                "environments/dev.yaml:18:16: tag `token` would hold a secret (`tags.token` of net.vpc, through `${input.token}` and `${secret.api.token}`)",
                // The default of the module input, at its own line.
                "modules/net/module.yaml:13:14: `fromPort` 220000 is out of range: tcp ports are 0 to 65535 (`ingress[0].fromPort` of net.sg, through `${input.ports.web}`)",
                "modules/net/module.yaml:13:14: `toPort` 220000 is out of range: tcp ports are 0 to 65535 (`ingress[0].toPort` of net.sg, through `${input.ports.web}`)",
            ]
        );
    }

    #[test]
    fn literal_values_are_reported_once_at_the_field() {
        let module = MODULE
            .replace("cidrBlock: ${input.cidr}", "cidrBlock: 10.50.0.0/16")
            .replace("token: ${input.token}", "managed-by: me")
            .replace("web: 220000", "web: 80")
            .replace("toPort: ${input.ports.web}", "toPort: 22");
        let f = files(&[
            ("environments/dev.yaml", ENV),
            ("modules/net/module.yaml", &module),
            ("secrets/dev.sops.yaml", SECRETS),
        ]);
        let model = crate::load::load(&f).expect("loads");
        let mut d = Diagnostics::default();
        check_modules(&model, &mut d);
        let literal: Vec<String> = d
            .iter()
            .map(|d| format!("{}: {}", d.origin, d.message))
            .collect();
        assert_eq!(
            literal,
            vec!["modules/net/module.yaml:26:23: tag `managed-by` is reserved for tidegate's ownership tags"]
        );
        let known = std::collections::HashMap::new();
        let opts = RenderOptions {
            known: &known,
            secrets: &StructuralSecrets,
            owner: None,
        };
        let desired = render_env(&model, "dev", opts).expect("renders");
        check_rendered(&model, "dev", &desired, &mut d);
        let all: Vec<String> = d
            .sorted()
            .iter()
            .map(|d| format!("{}: {}", d.origin, d.message))
            .collect();
        assert_eq!(
            all,
            vec![
                // fromPort came through an input default, toPort is literal:
                // the range is reported at fromPort's value, in the default.
                "modules/net/module.yaml:13:14: `fromPort` 80 is above `toPort` 22 (`ingress[0].fromPort` of net.sg, through `${input.ports.web}`)",
                // Found by both checks, listed once.
                "modules/net/module.yaml:26:23: tag `managed-by` is reserved for tidegate's ownership tags",
            ]
        );
    }

    #[test]
    fn paths_are_split_on_the_keys_the_value_has() {
        let v = Value::from_json(serde_json::json!({
            "tags": {"kubernetes.io/cluster/a": "x", "kubernetes": {"io": 1}},
            "ingress": [{"cidrBlocks": ["a", "b"]}]
        }));
        assert_eq!(
            segments(&v, "tags.kubernetes.io/cluster/a"),
            ["tags", "kubernetes.io/cluster/a"]
        );
        assert_eq!(
            segments(&v, "ingress[0].cidrBlocks[1]"),
            ["ingress", "0", "cidrBlocks", "1"]
        );
        assert_eq!(segments(&v, ""), Vec::<String>::new());
    }
}
