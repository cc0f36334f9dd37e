//! Rendering: a resolved [`Model`] plus what is known so far (live
//! attributes, secrets) into [`Desired`] resources for the providers.
//!
//! The planner and executor call [`render_env`] (or a [`Renderer`] for one
//! resource at a time) before each step, passing the attributes of the
//! resources already applied. A reference to something not applied yet stays
//! [`Value::Unknown`] (`(known after apply)`); a secret comes from the
//! [`SecretLookup`] as [`Value::Sensitive`]. `${resource.x.attr}` is taken
//! from the known attributes first, then from `x`'s own rendered body (so
//! `${resource.ns.metadata.name}` or `${resource.sg.groupName}` are known
//! before apply), else it is unknown.

use std::cell::RefCell;
use std::collections::HashMap;

use crate::expr::{self, Ref, Resolve, Scope};
use crate::model::{Environment, Instance, Model, Module};
use crate::resource::{Desired, ResourceId};
use crate::sensitive::Sensitive;
use crate::value::{Map, Origin, Spans, Value};

/// Where rendering gets secret values from. The secrets module implements
/// it over decrypted SOPS files.
pub trait SecretLookup {
    /// The value at key `path` (`["db", "password"]`) of the secret file
    /// `file_key` (its repo path, `secrets/prod.sops.yaml`), or `None` when
    /// the file or key is missing.
    fn lookup(&self, file_key: &str, path: &[&str]) -> Option<Secret>;
}

/// A value of a secret file, as the file holds it.
#[derive(Clone, Debug, PartialEq)]
pub enum Secret {
    /// Encrypted in the file: rendered as [`Value::Sensitive`], never shown.
    Sensitive(Sensitive),
    /// Kept in plaintext by the file (sops' `_unencrypted` suffix, a key
    /// outside `encrypted_regex`, ...), in its YAML spelling (`5432`,
    /// `true`). Anyone who can read the repository reads it, so masking
    /// it would hide nothing and only make plans unreadable: it renders as
    /// a plain string.
    Plain(String),
}

impl Secret {
    /// The value a reference to it renders as.
    pub fn into_value(self) -> Value {
        match self {
            Secret::Sensitive(s) => Value::Sensitive(s),
            Secret::Plain(s) => Value::String(s),
        }
    }
}

/// A lookup that needs no key: every secret the files' key structure holds
/// renders as an empty placeholder. Used by `validate` and graph building,
/// which check structure only (the model guarantees the keys exist).
#[derive(Clone, Copy, Debug, Default)]
pub struct StructuralSecrets;

impl SecretLookup for StructuralSecrets {
    fn lookup(&self, _file_key: &str, _path: &[&str]) -> Option<Secret> {
        Some(Secret::Sensitive(Sensitive::new(Vec::new())))
    }
}

/// Where rendering finds the attributes of resources already applied or
/// observed live: a map built for the purpose, or the live state itself
/// (read in place: at 10,000 resources a copy of every attribute map was
/// a few MiB held through the render).
pub trait Known: Sync {
    /// The attributes of `id`, when it is known.
    fn attributes(&self, id: &ResourceId) -> Option<&Map>;
}

impl Known for HashMap<ResourceId, Map> {
    fn attributes(&self, id: &ResourceId) -> Option<&Map> {
        self.get(id)
    }
}

/// What rendering may use.
#[derive(Clone, Copy)]
pub struct RenderOptions<'a> {
    /// Attributes of resources already applied or observed live.
    pub known: &'a dyn Known,
    pub secrets: &'a dyn SecretLookup,
    /// Renders `${env.name}` as this name instead of the environment's own
    /// (blue/green rebuild: `--as prod-green`).
    pub owner: Option<&'a str>,
}

/// Rendering failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The environment is not in the model.
    #[error("unknown environment `{0}`")]
    UnknownEnvironment(String),
    /// The resource is not in the environment.
    #[error("environment {env} has no resource {id}")]
    UnknownResource { env: String, id: ResourceId },
    /// A reference in a value could not be evaluated (a missing secret, a
    /// list interpolated into a string, a cycle).
    #[error("{origin}: {what}: {source}")]
    Eval {
        origin: Origin,
        what: String,
        #[source]
        source: expr::Error,
    },
    /// A value needs itself to be evaluated (through outputs and inputs of
    /// other instances).
    #[error("{origin}: {what} refers to itself through other values (a reference cycle)")]
    Cycle { origin: Origin, what: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Renders every resource of `env`, in declaration order.
pub fn render_env(model: &Model, env: &str, opts: RenderOptions<'_>) -> Result<Vec<Desired>> {
    Renderer::new(model, env, opts)?.render_all()
}

enum Slot {
    Busy,
    Done(Value),
}

/// Renders the resources of one environment, caching each body, input and
/// output it evaluates.
pub struct Renderer<'m> {
    model: &'m Model,
    env: &'m Environment,
    opts: RenderOptions<'m>,
    cache: RefCell<HashMap<(u8, String, String), Slot>>,
    /// The innermost failure while evaluating a nested value, so the error
    /// reported points at the value that is wrong, not at its users.
    failed: RefCell<Option<Error>>,
}

const BODY: u8 = 0;

fn body_key(id: &ResourceId) -> (u8, String, String) {
    (BODY, id.module.clone(), id.name.clone())
}
const INPUT: u8 = 1;
const OUTPUT: u8 = 2;

impl<'m> Renderer<'m> {
    /// A renderer for environment `env`.
    pub fn new(model: &'m Model, env: &str, opts: RenderOptions<'m>) -> Result<Self> {
        let env = model
            .environment(env)
            .ok_or_else(|| Error::UnknownEnvironment(env.to_string()))?;
        Ok(Renderer {
            model,
            env,
            opts,
            cache: RefCell::new(HashMap::new()),
            failed: RefCell::new(None),
        })
    }

    /// Every resource of the environment. The bodies are moved out of the
    /// cache, not copied (the cache is left empty): the desired state of
    /// 10,000 resources was held twice until rendering ended.
    pub fn render_all(&self) -> Result<Vec<Desired>> {
        let ids: Vec<ResourceId> = self
            .model
            .resources(self.env)
            .map(|(id, _, _)| id)
            .collect();
        for id in &ids {
            let (_, res) = self.find(id)?;
            self.fill(body_key(id), &res.origin, || self.eval_body(id))?;
        }
        let mut cache = self.cache.take();
        ids.into_iter()
            .map(|id| {
                let (_, res) = self.find(&id)?;
                let body = match cache.remove(&body_key(&id)) {
                    Some(Slot::Done(v)) => v,
                    // Two entries of one id: the first took the body.
                    _ => self.body(&id)?,
                };
                Ok(Desired {
                    id,
                    kind: res.kind.clone(),
                    body,
                    origin: res.origin.clone(),
                })
            })
            .collect()
    }

    /// One resource.
    pub fn render(&self, id: &ResourceId) -> Result<Desired> {
        let (_, res) = self.find(id)?;
        Ok(Desired {
            id: id.clone(),
            kind: res.kind.clone(),
            body: self.body(id)?,
            origin: res.origin.clone(),
        })
    }

    fn find(&self, id: &ResourceId) -> Result<(&'m Instance, &'m crate::model::Resource)> {
        let unknown = || Error::UnknownResource {
            env: self.env.name.clone(),
            id: id.clone(),
        };
        let inst = self.env.instance(&id.module).ok_or_else(unknown)?;
        let res = self
            .model
            .modules
            .get(&inst.source)
            .and_then(|m| m.resource(&id.name))
            .ok_or_else(unknown)?;
        Ok((inst, res))
    }

    /// The rendered body of a resource.
    pub fn body(&self, id: &ResourceId) -> Result<Value> {
        let (_, res) = self.find(id)?;
        self.cached(body_key(id), &res.origin, || self.eval_body(id))
    }

    fn eval_body(&self, id: &ResourceId) -> Result<Value> {
        let (inst, res) = self.find(id)?;
        let scope = ModuleScope { r: self, inst };
        self.eval(&res.body, &res.spans, &scope, &format!("resource {id}"))
    }

    /// The value of an input of an instance (its default when not set).
    pub fn input(&self, inst: &'m Instance, name: &str) -> Result<Value> {
        let key = (INPUT, inst.name.clone(), name.to_string());
        self.cached(key, &inst.origin, || match inst.inputs.get(name) {
            Some(v) => {
                let scope = EnvScope { r: self, inst };
                let what = format!("input `{name}` of module instance {}", inst.name);
                self.eval(&v.value, &v.spans, &scope, &what)
            }
            None => Ok(self
                .module(inst)
                .and_then(|m| m.inputs.get(name))
                .and_then(|d| d.default.clone())
                .unwrap_or(Value::Null)),
        })
    }

    /// The value of an output of an instance.
    pub fn output(&self, inst: &'m Instance, name: &str) -> Result<Value> {
        let key = (OUTPUT, inst.name.clone(), name.to_string());
        self.cached(key, &inst.origin, || {
            let Some(out) = self.module(inst).and_then(|m| m.outputs.get(name)) else {
                return Ok(Value::Null);
            };
            let scope = ModuleScope { r: self, inst };
            let what = format!("output `{name}` of module instance {}", inst.name);
            self.eval(&out.value.value, &out.value.spans, &scope, &what)
        })
    }

    /// Evaluates a value in the scope of an instance's module.
    pub fn eval_in_module(
        &self,
        inst: &'m Instance,
        value: &Value,
        spans: &Spans,
    ) -> Result<Value> {
        let scope = ModuleScope { r: self, inst };
        self.eval(
            value,
            spans,
            &scope,
            &format!("module instance {}", inst.name),
        )
    }

    fn eval(&self, value: &Value, spans: &Spans, scope: &dyn Resolve, what: &str) -> Result<Value> {
        expr::eval(value, "", scope).map_err(|(path, source)| {
            self.failed
                .borrow_mut()
                .take()
                .unwrap_or_else(|| Error::Eval {
                    origin: spans.nearest(&path).cloned().unwrap_or_default(),
                    what: what.to_string(),
                    source,
                })
        })
    }

    /// Keeps a nested failure for the outer evaluation to report.
    fn nested(&self, e: Error, r: &Ref) -> expr::Error {
        let placeholder = expr::Error::Unresolved {
            reference: r.to_string(),
            message: e.to_string(),
        };
        let mut failed = self.failed.borrow_mut();
        if failed.is_none() {
            *failed = Some(e);
        }
        placeholder
    }

    fn module(&self, inst: &Instance) -> Option<&'m Module> {
        self.model.modules.get(&inst.source)
    }

    fn cached(
        &self,
        key: (u8, String, String),
        origin: &Origin,
        f: impl FnOnce() -> Result<Value>,
    ) -> Result<Value> {
        self.fill(key.clone(), origin, f)?;
        match self.cache.borrow().get(&key) {
            Some(Slot::Done(v)) => Ok(v.clone()),
            _ => unreachable!("filled above"),
        }
    }

    /// Evaluates `f` into the cache under `key` unless it is there.
    fn fill(
        &self,
        key: (u8, String, String),
        origin: &Origin,
        f: impl FnOnce() -> Result<Value>,
    ) -> Result<()> {
        match self.cache.borrow().get(&key) {
            Some(Slot::Done(_)) => return Ok(()),
            Some(Slot::Busy) => {
                let what = match key.0 {
                    BODY => format!("resource {}.{}", key.1, key.2),
                    INPUT => format!("input `{}` of module instance {}", key.2, key.1),
                    _ => format!("output `{}` of module instance {}", key.2, key.1),
                };
                return Err(Error::Cycle {
                    origin: origin.clone(),
                    what,
                });
            }
            None => {}
        }
        self.cache.borrow_mut().insert(key.clone(), Slot::Busy);
        match f() {
            Ok(v) => {
                self.cache.borrow_mut().insert(key, Slot::Done(v));
                Ok(())
            }
            Err(e) => {
                self.cache.borrow_mut().remove(&key);
                Err(e)
            }
        }
    }

    fn env_field(&self, field: &str) -> Value {
        let s = match field {
            "name" => Some(self.opts.owner.unwrap_or(&self.env.name).to_string()),
            "region" => self.env.aws.as_ref().map(|a| a.region.clone()),
            _ => self.env.kubernetes.as_ref().and_then(|k| k.context.clone()),
        };
        s.map(Value::String).unwrap_or(Value::Null)
    }

    fn secret(&self, r: &Ref) -> expr::Result<Value> {
        let segs = r.segments();
        let unresolved = |message: String| expr::Error::Unresolved {
            reference: r.to_string(),
            message,
        };
        let file = self
            .env
            .secret_file_for(self.model, &segs)
            .ok_or_else(|| unresolved("no secret file of the environment holds this key".into()))?;
        self.opts
            .secrets
            .lookup(file, &segs)
            .map(Secret::into_value)
            .ok_or_else(|| unresolved(format!("key `{}` missing from decrypted {file}", r.rest(0))))
    }
}

fn sub(v: Value, path: &[&str], r: &Ref) -> expr::Result<Value> {
    if path.is_empty() || matches!(v, Value::Unknown(_)) {
        return Ok(v);
    }
    expr::lookup(&v, path)
        .cloned()
        .ok_or_else(|| expr::Error::Unresolved {
            reference: r.to_string(),
            message: format!("the value has no `{}`", path.join(".")),
        })
}

/// References in environment documents (instance inputs).
struct EnvScope<'r, 'm> {
    r: &'r Renderer<'m>,
    inst: &'m Instance,
}

impl Resolve for EnvScope<'_, '_> {
    fn resolve(&self, r: &Ref) -> expr::Result<Value> {
        let segs = r.segments();
        match r.scope {
            Scope::Var => {
                let v = self.r.env.vars.get(segs[0]).cloned().unwrap_or(Value::Null);
                sub(v, &segs[1..], r)
            }
            Scope::Env => Ok(self.r.env_field(segs[0])),
            Scope::Secret => self.r.secret(r),
            Scope::Module => {
                let other =
                    self.r
                        .env
                        .instance(segs[0])
                        .ok_or_else(|| expr::Error::Unresolved {
                            reference: r.to_string(),
                            message: "no such module instance".into(),
                        })?;
                let v = self
                    .r
                    .output(other, segs[1])
                    .map_err(|e| self.r.nested(e, r))?;
                sub(v, &segs[2..], r)
            }
            Scope::Input | Scope::Resource | Scope::Each => Err(expr::Error::Unresolved {
                reference: r.to_string(),
                message: format!("not available in environment {}", self.inst.name),
            }),
        }
    }
}

/// References in module documents (outputs, resource bodies).
struct ModuleScope<'r, 'm> {
    r: &'r Renderer<'m>,
    inst: &'m Instance,
}

impl Resolve for ModuleScope<'_, '_> {
    fn resolve(&self, r: &Ref) -> expr::Result<Value> {
        let segs = r.segments();
        match r.scope {
            Scope::Input => {
                let v = self
                    .r
                    .input(self.inst, segs[0])
                    .map_err(|e| self.r.nested(e, r))?;
                sub(v, &segs[1..], r)
            }
            Scope::Env => Ok(self.r.env_field(segs[0])),
            Scope::Resource => self.attribute(r, &segs),
            Scope::Var | Scope::Secret | Scope::Module => Err(expr::Error::Unresolved {
                reference: r.to_string(),
                message: "not available inside a module; pass it as an input".into(),
            }),
            Scope::Each => Err(expr::Error::Unresolved {
                reference: r.to_string(),
                message: "only known in an entry with `forEach` or `count`".into(),
            }),
        }
    }
}

impl ModuleScope<'_, '_> {
    fn attribute(&self, r: &Ref, segs: &[&str]) -> expr::Result<Value> {
        let id = ResourceId {
            module: self.inst.name.clone(),
            name: segs[0].to_string(),
        };
        let attr = &segs[1..];
        if let Some(attrs) = self.r.opts.known.attributes(&id) {
            if let Some(v) = attrs.get(&attr.join(".")) {
                return Ok(v.clone());
            }
            if let Some(v) = attrs.get(attr[0]).and_then(|v| expr::lookup(v, &attr[1..])) {
                return Ok(v.clone());
            }
        }
        let body = self.r.body(&id).map_err(|e| self.r.nested(e, r))?;
        Ok(match expr::lookup(&body, attr) {
            Some(v) if !matches!(v, Value::Null) => v.clone(),
            _ => Value::Unknown(format!(
                "module.{}.{}.{}",
                id.module,
                id.name,
                attr.join(".")
            )),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil;

    struct Secrets;
    impl SecretLookup for Secrets {
        fn lookup(&self, file_key: &str, path: &[&str]) -> Option<Secret> {
            (file_key == "secrets/s.sops.yaml" && path == ["db", "password"])
                .then(|| Secret::Sensitive(Sensitive::from_string("hunter2".into())))
        }
    }

    fn id(m: &str, n: &str) -> ResourceId {
        ResourceId {
            module: m.into(),
            name: n.into(),
        }
    }

    #[test]
    fn unknown_until_known_then_rendered() {
        let model = crate::load::load(&testutil::repo()).unwrap();
        let mut known = HashMap::new();
        let opts = RenderOptions {
            known: &known,
            secrets: &Secrets,
            owner: None,
        };
        let all = render_env(&model, "dev", opts).unwrap();
        let cfg = all.iter().find(|d| d.id == id("app", "config")).unwrap();
        assert_eq!(cfg.kind, "v1/ConfigMap");
        assert_eq!(
            cfg.body.get_path("data.VPC"),
            Some(&Value::Unknown("module.network.vpc.id".into()))
        );
        assert_eq!(
            cfg.body.get_path("metadata.namespace"),
            Some(&Value::String("app-dev".into()))
        );
        assert_eq!(cfg.body.get_path("data.REPLICAS"), Some(&Value::Int(2)));
        let url = cfg.body.get_path("data.URL").unwrap();
        assert!(
            matches!(url, Value::Sensitive(s) if s.expose_str() == Some("postgres://app:hunter2@db"))
        );

        let mut attrs = Map::new();
        attrs.insert("id".into(), Value::String("vpc-123".into()));
        known.insert(id("network", "vpc"), attrs);
        let opts = RenderOptions {
            known: &known,
            secrets: &Secrets,
            owner: Some("dev-green"),
        };
        let r = Renderer::new(&model, "dev", opts).unwrap();
        let cfg = r.render(&id("app", "config")).unwrap();
        assert_eq!(
            cfg.body.get_path("data.VPC"),
            Some(&Value::String("vpc-123".into()))
        );
        assert_eq!(
            cfg.body.get_path("metadata.namespace"),
            Some(&Value::String("app-dev-green".into()))
        );
        let subnet = r.render(&id("network", "subnet")).unwrap();
        assert_eq!(
            subnet.body.get_path("vpcId"),
            Some(&Value::String("vpc-123".into()))
        );
    }

    #[test]
    fn a_missing_secret_names_the_file_and_key() {
        struct Empty;
        impl SecretLookup for Empty {
            fn lookup(&self, _: &str, _: &[&str]) -> Option<Secret> {
                None
            }
        }
        let model = crate::load::load(&testutil::repo()).unwrap();
        let known = HashMap::new();
        let opts = RenderOptions {
            known: &known,
            secrets: &Empty,
            owner: None,
        };
        let e = render_env(&model, "dev", opts).unwrap_err().to_string();
        assert!(
            e.contains("key `db.password` missing from decrypted secrets/s.sops.yaml"),
            "{e}"
        );
        assert!(!e.contains("hunter2"));
    }
}
