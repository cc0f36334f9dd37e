//! What tidegate knows of EC2 resources without calling EC2: their
//! attributes (from the schema table), which field changes replace a
//! resource, and the order pruned types are deleted in (what lives in a
//! VPC before the VPC). EC2 resources are ordered by their references, so
//! nothing is placed or ordered implicitly. Each answer looks the kind up
//! in the registry (`kinds::find`) and asks it, or the rules that take it.

use super::{kinds, model, values, AwsProvider};
use crate::provider::{
    Arrangement, BodyShape, Declared, EnvTarget, Field, Problem, Provider, ProviderKind, Result,
    Spec,
};
use crate::value::Value;

/// The AWS provider's [`Spec`].
pub struct AwsSpec;

#[async_trait::async_trait]
impl Spec for AwsSpec {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Aws
    }

    fn body_shape(&self) -> BodyShape {
        BodyShape::Typed
    }

    fn types(&self) -> &'static [&'static str] {
        kinds::TYPES.as_slice()
    }

    fn fields(&self, kind: &str) -> Option<&'static [Field]> {
        kinds::find(kind).map(|k| k.fields())
    }

    fn configured(&self, target: &EnvTarget) -> bool {
        target.aws.is_some()
    }

    async fn connect(&self, target: &EnvTarget) -> Result<Box<dyn Provider>> {
        Ok(Box::new(AwsProvider::connect(target).await?))
    }

    fn has_attribute(&self, kind: &str, _body: &Value, attr: &str) -> bool {
        let Some(k) = kinds::find(kind) else {
            return false;
        };
        let first = attr.split('.').next().unwrap_or_default();
        let (attributes, fields) = (k.attributes(), k.fields());
        [attr, first]
            .iter()
            .any(|a| attributes.contains(a) || fields.iter().any(|f| f.name == *a))
    }

    fn attributes_hint(&self, kind: &str) -> String {
        match kinds::find(kind) {
            Some(k) => k.attributes().join(", ") + " or a spec field",
            None => String::new(),
        }
    }

    fn order_fields(&self, _kind: &str) -> &'static [&'static str] {
        &[]
    }

    fn arrange(&self, _declared: &[Declared]) -> Arrangement {
        Arrangement::default()
    }

    fn replace_reasons(&self, kind: &str, before: &Value, after: &Value) -> Vec<String> {
        kinds::find(kind).map_or_else(Vec::new, |k| model::replace_reasons(k, before, after))
    }

    fn check_values(&self, kind: &str, body: &Value) -> Vec<Problem> {
        kinds::find(kind).map_or_else(Vec::new, |k| values::check(k, body))
    }

    fn delete_wave(&self, kind: &str) -> u8 {
        kinds::find(kind).map_or(0, kinds::delete_wave)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_include_contract_names_and_spec_fields() {
        let has = |attr: &str| AwsSpec.has_attribute("instance", &Value::Null, attr);
        assert!(has("privateIp"));
        assert!(has("instanceType"));
        assert!(has("rootVolume.sizeGiB"));
        assert!(!has("arn"));
        assert!(!AwsSpec.has_attribute("no_such_type", &Value::Null, "id"));
    }

    /// Prune deletes what uses or lives in a resource first: addresses,
    /// instances, route tables and key pairs, security groups, subnets,
    /// gateways, VPCs.
    #[test]
    fn delete_waves_run_from_users_to_what_they_use() {
        let order = [
            &["eip"][..],
            &["instance"],
            &["route_table", "key_pair"],
            &["security_group"],
            &["subnet"],
            &["internet_gateway"],
            &["vpc"],
        ];
        let wave = |k: &str| AwsSpec.delete_wave(k);
        for pair in order.windows(2) {
            for a in pair[0] {
                for b in pair[1] {
                    assert!(wave(a) < wave(b), "{a} before {b}");
                }
            }
        }
        assert_eq!(wave("route_table"), wave("key_pair"));
    }
}
