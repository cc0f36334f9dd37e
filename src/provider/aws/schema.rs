//! The shape of AWS resource specs: the field tables' vocabulary and the
//! structural check.
//!
//! Each kind writes its own field table (`kinds/<type>.rs`) with the
//! constructors here; the same table answers, without a network call,
//! whether a body is well formed ([`check_structure`]), which fields force
//! a replacement, and which fields are sets whose order does not matter.
//! Keeping each table in one place means a new field is one line, and
//! validate, plan and apply cannot disagree about it. A leaf: it knows
//! field tables, not kinds (the registry finds a kind's table).

use crate::provider::Problem;
use crate::value::{index_path, key_path, Value};

pub use crate::resource::{Field, Ty};

/// An optional field that may change in place.
pub(super) const fn f(name: &'static str, ty: Ty) -> Field {
    Field {
        name,
        ty,
        required: false,
        immutable: false,
    }
}

/// `field`, required.
pub(super) const fn req(mut field: Field) -> Field {
    field.required = true;
    field
}

/// `field`, immutable: a change replaces the resource.
pub(super) const fn fixed(mut field: Field) -> Field {
    field.immutable = true;
    field
}

/// The `tags` every type takes (the user's; tidegate adds its own).
pub(super) const TAGS: Field = f("tags", Ty::Tags);

/// The structural problems of the spec `body` of a resource whose field
/// table is `fields`: unknown field, wrong type, missing required field.
/// [`super::check`] adds the unknown type and the value rules. Pure;
/// unresolved references ([`Value::Unknown`]) pass.
pub fn check_structure(fields: &[Field], body: &Value) -> Vec<Problem> {
    let mut out = Vec::new();
    check_object(fields, body, "", &mut out);
    out
}

fn problem(path: &str, message: String, fix: String) -> Problem {
    Problem::error(path, message, fix)
}

fn check_object(fs: &[Field], v: &Value, path: &str, out: &mut Vec<Problem>) {
    let Some(m) = v.as_map() else {
        if !matches!(v, Value::Unknown(_) | Value::Sensitive(_)) {
            out.push(problem(
                path,
                format!("expected a map, found {}", v.type_name()),
                "write the fields as `key: value` lines".into(),
            ));
        }
        return;
    };
    for (k, child) in m {
        let p = key_path(path, k);
        match fs.iter().find(|f| f.name == k) {
            Some(field) => check_value(field, child, &p, out),
            None => out.push(problem(
                &p,
                format!("unknown field `{k}`"),
                format!(
                    "use one of: {}",
                    fs.iter().map(|f| f.name).collect::<Vec<_>>().join(", ")
                ),
            )),
        }
    }
    for field in fs.iter().filter(|f| f.required) {
        if !m.contains_key(field.name) {
            out.push(problem(
                path,
                format!("missing required field `{}`", field.name),
                format!("add `{}:`", field.name),
            ));
        }
    }
}

/// The type of one field. A secret passes here: where one is not allowed,
/// the value rules say so (once).
fn check_value(field: &Field, v: &Value, path: &str, out: &mut Vec<Problem>) {
    if matches!(v, Value::Unknown(_) | Value::Sensitive(_)) {
        return;
    }
    let wrong = |expected: &str, out: &mut Vec<Problem>| {
        out.push(problem(
            path,
            format!(
                "`{}` must be {expected}, found {}",
                field.name,
                v.type_name()
            ),
            format!("write `{}` as {expected}", field.name),
        ))
    };
    let stringish = |v: &Value| {
        matches!(
            v,
            Value::String(_) | Value::Unknown(_) | Value::Sensitive(_)
        )
    };
    match (&field.ty, v) {
        (Ty::Str | Ty::SecretStr, Value::String(_)) => {}
        (Ty::Bool, Value::Bool(_)) | (Ty::Int, Value::Int(_)) => {}
        (Ty::Enum(allowed), Value::String(s)) if allowed.contains(&s.as_str()) => {}
        (Ty::Enum(allowed), _) => wrong(
            &format!(
                "one of {}",
                allowed
                    .iter()
                    .map(|a| format!("\"{a}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            out,
        ),
        (Ty::StrSet, Value::List(items)) => {
            for (i, item) in items.iter().enumerate() {
                if !stringish(item) {
                    out.push(problem(
                        &index_path(path, i),
                        format!("expected a string, found {}", item.type_name()),
                        "quote the value".into(),
                    ));
                }
            }
        }
        (Ty::Tags, Value::Map(m)) => {
            for (k, tv) in m {
                if !stringish(tv) {
                    out.push(problem(
                        &key_path(path, k),
                        format!("tag `{k}` must be a string, found {}", tv.type_name()),
                        "quote the tag value".into(),
                    ));
                }
            }
        }
        (Ty::Object(fs), Value::Map(_)) => check_object(fs, v, path, out),
        (Ty::ObjectSet(fs), Value::List(items)) => {
            for (i, item) in items.iter().enumerate() {
                check_object(fs, item, &index_path(path, i), out);
            }
        }
        (Ty::Str | Ty::SecretStr, _) => wrong("a string", out),
        (Ty::Bool, _) => wrong("true or false", out),
        (Ty::Int, _) => wrong("an integer", out),
        (Ty::StrSet, _) => wrong("a list of strings", out),
        (Ty::Tags, _) => wrong("a map of strings", out),
        (Ty::Object(_), _) => wrong("a map", out),
        (Ty::ObjectSet(_), _) => wrong("a list of maps", out),
    }
}

#[cfg(test)]
mod tests {
    use super::super::check;
    use super::*;

    fn body(j: serde_json::Value) -> Value {
        Value::from_json(j)
    }

    #[test]
    fn a_complete_instance_passes() {
        let b = body(serde_json::json!({
            "ami": "ami-1", "instanceType": "t3.micro", "subnetId": "subnet-1",
            "securityGroupIds": ["sg-1"], "metadata": {"httpTokens": "required"},
            "rootVolume": {"sizeGiB": 20, "encrypted": true}, "tags": {"owner": "x"}
        }));
        assert_eq!(check("instance", &b), vec![]);
    }

    #[test]
    fn unknown_and_missing_fields_and_wrong_types_are_named() {
        let b = body(serde_json::json!({"cidrBlock": 5, "enableDns": true}));
        let p = check("vpc", &b);
        let paths: Vec<_> = p
            .iter()
            .map(|p| (p.path.as_str(), p.message.as_str()))
            .collect();
        assert_eq!(
            paths,
            vec![
                (
                    "cidrBlock",
                    "`cidrBlock` must be a string, found an integer"
                ),
                ("enableDns", "unknown field `enableDns`"),
            ]
        );
        let p = check("subnet", &body(serde_json::json!({"vpcId": "v"})));
        assert_eq!(p[0].message, "missing required field `cidrBlock`");
    }

    #[test]
    fn rules_need_ports_and_a_source() {
        let b = body(serde_json::json!({
            "vpcId": "v", "groupName": "g", "description": "d",
            "ingress": [{"protocol": "tcp", "fromPort": 443}, {"protocol": "ftp", "cidrBlocks": ["0.0.0.0/0"]}]
        }));
        let p = check("security_group", &b);
        let msgs: Vec<_> = p
            .iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect();
        assert_eq!(msgs.len(), 3, "{msgs:?}");
        assert!(msgs[0].starts_with("ingress[1].protocol: `protocol` must be one of"));
        assert!(msgs[1].starts_with("ingress[0]: a tcp rule needs"));
        assert!(msgs[2].starts_with("ingress[0]: the rule has no source"));
    }

    #[test]
    fn unknown_values_pass_and_secrets_only_in_user_data() {
        let b = Value::Map(
            [
                (
                    "vpcId".to_string(),
                    Value::Unknown("resource.vpc.id".into()),
                ),
                ("cidrBlock".into(), Value::String("10.0.1.0/24".into())),
                (
                    "availabilityZone".into(),
                    Value::Sensitive(crate::sensitive::Sensitive::from_string("x".into())),
                ),
            ]
            .into_iter()
            .collect(),
        );
        let p = check("subnet", &b);
        assert_eq!(
            p.len(),
            1,
            "a secret is reported once, not also as a wrong type: {p:?}"
        );
        assert_eq!(p[0].path, "availabilityZone");
        assert_eq!(p[0].message, "`availabilityZone` cannot hold a secret");
        assert!(check("load_balancer", &Value::Null)[0].fix.contains("vpc"));
    }

    #[test]
    fn value_rules_come_from_the_one_value_check() {
        let b = body(serde_json::json!({
            "vpcId": "v", "groupName": "g", "description": "d",
            "ingress": [{"protocol": "tcp", "fromPort": 22, "toPort": 22, "cidrBlocks": ["192.0.256.0/24"]}],
            "tags": {"managed-by": "me"}
        }));
        let p = check("security_group", &b);
        let kind = super::super::kinds::find("security_group").unwrap();
        assert_eq!(p, super::super::values::check(kind, &b));
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(p[0].path, "ingress[0].cidrBlocks[0]");
        assert_eq!(p[1].path, "tags.managed-by");
    }
}
