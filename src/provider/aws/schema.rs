//! The shape of every AWS resource spec, as one table.
//!
//! The same table answers three questions without a network call: is a body
//! well formed ([`check`]), which fields force a replacement, and which
//! fields are sets whose order does not matter. Keeping them in one place
//! means a new field is one line, and validate, plan and apply cannot
//! disagree about it.

use crate::provider::Problem;
use crate::value::{index_path, key_path, Value};

/// The resource types this provider manages, in creation order.
pub const TYPES: &[&str] = &[
    "vpc",
    "key_pair",
    "internet_gateway",
    "subnet",
    "security_group",
    "route_table",
    "instance",
    "eip",
];

pub use crate::resource::{Field, Ty};

const fn f(name: &'static str, ty: Ty) -> Field {
    Field {
        name,
        ty,
        required: false,
        immutable: false,
    }
}

const fn req(mut field: Field) -> Field {
    field.required = true;
    field
}

const fn fixed(mut field: Field) -> Field {
    field.immutable = true;
    field
}

const TAGS: Field = f("tags", Ty::Tags);

const VPC: &[Field] = &[
    req(fixed(f("cidrBlock", Ty::Str))),
    f("enableDnsHostnames", Ty::Bool),
    f("enableDnsSupport", Ty::Bool),
    TAGS,
];
const SUBNET: &[Field] = &[
    req(fixed(f("vpcId", Ty::Str))),
    req(fixed(f("cidrBlock", Ty::Str))),
    fixed(f("availabilityZone", Ty::Str)),
    f("mapPublicIpOnLaunch", Ty::Bool),
    TAGS,
];
const IGW: &[Field] = &[req(f("vpcId", Ty::Str)), TAGS];
const ROUTE: &[Field] = &[
    req(f("destinationCidrBlock", Ty::Str)),
    req(f("gatewayId", Ty::Str)),
];
const ROUTE_TABLE: &[Field] = &[
    req(fixed(f("vpcId", Ty::Str))),
    f("routes", Ty::ObjectSet(ROUTE)),
    f("subnetIds", Ty::StrSet),
    TAGS,
];
/// Protocols a rule may name.
pub const PROTOCOLS: &[&str] = &["tcp", "udp", "icmp", "-1"];
const RULE: &[Field] = &[
    req(f("protocol", Ty::Enum(PROTOCOLS))),
    f("fromPort", Ty::Int),
    f("toPort", Ty::Int),
    f("cidrBlocks", Ty::StrSet),
    f("sourceSecurityGroupIds", Ty::StrSet),
    f("description", Ty::Str),
];
const SECURITY_GROUP: &[Field] = &[
    req(fixed(f("vpcId", Ty::Str))),
    req(fixed(f("groupName", Ty::Str))),
    req(fixed(f("description", Ty::Str))),
    f("ingress", Ty::ObjectSet(RULE)),
    f("egress", Ty::ObjectSet(RULE)),
    TAGS,
];
const KEY_PAIR: &[Field] = &[
    req(fixed(f("keyName", Ty::Str))),
    req(fixed(f("publicKey", Ty::Str))),
    TAGS,
];
const METADATA: &[Field] = &[
    f("httpTokens", Ty::Enum(&["required", "optional"])),
    f("httpPutResponseHopLimit", Ty::Int),
];
const ROOT_VOLUME: &[Field] = &[
    f("sizeGiB", Ty::Int),
    f("encrypted", Ty::Bool),
    f(
        "volumeType",
        Ty::Enum(&["gp2", "gp3", "io1", "io2", "st1", "sc1", "standard"]),
    ),
];
const INSTANCE: &[Field] = &[
    req(fixed(f("ami", Ty::Str))),
    req(f("instanceType", Ty::Str)),
    req(fixed(f("subnetId", Ty::Str))),
    f("securityGroupIds", Ty::StrSet),
    fixed(f("keyName", Ty::Str)),
    fixed(f("userData", Ty::SecretStr)),
    f("metadata", Ty::Object(METADATA)),
    fixed(f("rootVolume", Ty::Object(ROOT_VOLUME))),
    fixed(f("privateIp", Ty::Str)),
    TAGS,
];
const EIP: &[Field] = &[f("instanceId", Ty::Str), TAGS];

/// The fields of a resource type, if it is one.
pub fn fields(kind: &str) -> Option<&'static [Field]> {
    Some(match kind {
        "vpc" => VPC,
        "subnet" => SUBNET,
        "internet_gateway" => IGW,
        "route_table" => ROUTE_TABLE,
        "security_group" => SECURITY_GROUP,
        "key_pair" => KEY_PAIR,
        "instance" => INSTANCE,
        "eip" => EIP,
        _ => return None,
    })
}

/// Attributes a reference may name on a resource of type `kind` besides its
/// spec fields: what observe reports once the resource exists.
pub fn attributes(kind: &str) -> &'static [&'static str] {
    match kind {
        "vpc" => &["id", "cidrBlock", "arn"],
        "subnet" => &["id", "availabilityZone", "cidrBlock", "arn"],
        "internet_gateway" | "route_table" => &["id"],
        "security_group" => &["id", "groupName"],
        "key_pair" => &["id", "keyName", "fingerprint"],
        "instance" => &["id", "privateIp", "publicIp", "privateDnsName"],
        "eip" => &["id", "publicIp"],
        _ => &[],
    }
}

/// The structural problems of the spec `body` of an AWS resource of type
/// `kind`: unknown type or field, wrong type, missing required field.
/// [`super::check`] adds the value rules. Pure; unresolved references
/// ([`Value::Unknown`]) pass.
pub fn check_structure(kind: &str, body: &Value) -> Vec<Problem> {
    let mut out = Vec::new();
    match fields(kind) {
        Some(fs) => check_object(fs, body, "", &mut out),
        None => out.push(problem(
            "",
            format!("unknown AWS resource type `{kind}`"),
            format!("use one of: {}", TYPES.join(", ")),
        )),
    }
    out
}

fn problem(path: &str, message: String, fix: String) -> Problem {
    Problem {
        path: path.to_string(),
        message,
        fix,
    }
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
        assert!(check("nat_gateway", &Value::Null)[0].fix.contains("vpc"));
    }

    #[test]
    fn value_rules_come_from_the_one_value_check() {
        let b = body(serde_json::json!({
            "vpcId": "v", "groupName": "g", "description": "d",
            "ingress": [{"protocol": "tcp", "fromPort": 22, "toPort": 22, "cidrBlocks": ["192.0.256.0/24"]}],
            "tags": {"managed-by": "me"}
        }));
        let p = check("security_group", &b);
        assert_eq!(p, super::super::values::check("security_group", &b));
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(p[0].path, "ingress[0].cidrBlocks[0]");
        assert_eq!(p[1].path, "tags.managed-by");
    }
}
