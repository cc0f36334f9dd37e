//! Typed resource bodies (`type:` + `spec:` of a provider with
//! [`BodyShape::Typed`] bodies, such as `aws`): which fields each type has,
//! which are required and what they hold, from the provider's own table
//! ([`Spec::fields`]), so validate, plan and apply read one schema. Checked
//! at load time so a typo in a spec is reported at its line, not by the
//! provider's API halfway through an apply.

use crate::diag::Diagnostics;
use crate::expr;
#[cfg(doc)]
use crate::provider::BodyShape;
use crate::provider::Spec;
use crate::resource::{Field, Ty};

use super::decode::{self, Fields};
use super::yaml::{Node, NodeKind};

/// One type of a typed provider.
#[derive(Debug)]
pub struct TypeSchema {
    pub name: &'static str,
    pub fields: &'static [Field],
}

/// The schema of `type_name` of `spec`'s provider.
pub fn schema(spec: &dyn Spec, type_name: &str) -> Option<TypeSchema> {
    let name = *spec.types().iter().find(|t| **t == type_name)?;
    Some(TypeSchema {
        name,
        fields: spec.fields(name)?,
    })
}

/// Checks a spec against its type: required fields, unknown fields and
/// value types. A string holding a `${...}` reference is accepted for any
/// type (its value is checked once rendered).
pub fn check_spec(t: &TypeSchema, spec: &Node, diags: &mut Diagnostics) {
    check_obj(t.fields, spec, &format!("`{}` spec", t.name), diags);
}

fn check_obj(fields: &[Field], node: &Node, what: &str, diags: &mut Diagnostics) {
    let Some(mut f) = Fields::new(node, what, diags) else {
        return;
    };
    for field in fields {
        let n = if field.required {
            f.req(field.name, diags)
        } else {
            f.opt(field.name)
        };
        if let Some(n) = n {
            check_ty(&field.ty, n, &format!("`{}` in {what}", field.name), diags);
        }
    }
    let known: Vec<&str> = fields.iter().map(|f| f.name).collect();
    f.finish(&known, diags);
}

fn is_template(n: &Node) -> bool {
    matches!(&n.kind, NodeKind::Str(s) if expr::has_refs(s))
}

fn check_ty(ty: &Ty, n: &Node, what: &str, diags: &mut Diagnostics) {
    if is_template(n) {
        return;
    }
    match ty {
        Ty::Str | Ty::SecretStr => {
            decode::string(n, what, diags);
        }
        Ty::Bool => {
            decode::boolean(n, what, diags);
        }
        Ty::Int => {
            if !matches!(n.kind, NodeKind::Int(_)) {
                decode::wrong_type(n, what, "a whole number", diags);
            }
        }
        Ty::Enum(allowed) => match &n.kind {
            NodeKind::Str(s) if allowed.contains(&s.as_str()) => {}
            _ => {
                let quoted: Vec<String> = allowed.iter().map(|a| format!("\"{a}\"")).collect();
                decode::wrong_type(n, what, &format!("one of {}", quoted.join(", ")), diags);
            }
        },
        Ty::StrSet => {
            if let Some(items) = decode::list(n, what, diags) {
                for i in items.iter().filter(|i| !is_template(i)) {
                    decode::string(i, &format!("an item of {what}"), diags);
                }
            }
        }
        Ty::Tags => {
            if let Some(f) = Fields::new(n, what, diags) {
                if let NodeKind::Map(entries) = &n.kind {
                    for (k, v) in entries.iter().filter(|(_, v)| !is_template(v)) {
                        decode::string(v, &format!("tag `{}`", k.name), diags);
                    }
                }
                drop(f);
            }
        }
        Ty::Object(fields) => check_obj(fields, n, what, diags),
        Ty::ObjectSet(fields) => {
            if let Some(items) = decode::list(n, what, diags) {
                for i in items {
                    check_obj(fields, i, &format!("an item of {what}"), diags);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::yaml::parse;
    use super::*;
    use crate::provider::aws::spec::AwsSpec;

    fn check(t: &str, text: &str) -> Vec<String> {
        let mut d = Diagnostics::default();
        let n = parse("f.yaml", text, &mut d).unwrap().remove(0);
        check_spec(&schema(&AwsSpec, t).unwrap(), &n, &mut d);
        d.iter().map(|e| e.message.clone()).collect()
    }

    #[test]
    fn specs_are_checked_field_by_field() {
        assert!(check("vpc", "cidrBlock: 10.0.0.0/16\nenableDnsSupport: true\n").is_empty());
        assert_eq!(
            check("vpc", "enableDnsSupport: yes\n"),
            vec![
                "missing required field `cidrBlock` in `vpc` spec".to_string(),
                "`enableDnsSupport` in `vpc` spec must be a boolean; `yes` is a YAML 1.1 boolean, which YAML 1.2 reads as the string \"yes\"".to_string(),
            ]
        );
        let e = check(
            "security_group",
            "vpcId: ${resource.vpc.id}\ngroupName: g\ndescription: d\ningress: [{protocol: tcp, fromPort: '80', cidr: x}]\n",
        );
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].contains("`fromPort`"), "{e:?}");
        assert!(e[1].contains("unknown field `cidr`"), "{e:?}");
    }
}
