//! An Elastic IP entry point: the address stays, its association moves
//! (AssociateAddress with AllowReassociation, one call: the address is
//! never unassociated in between). There is no weighted form: an address
//! points at one instance, so it moves at the last step of a switch.

use aws_sdk_ec2::Client;

use super::{Error, Result};

fn ec2_err(operation: &str, e: impl std::fmt::Display) -> Error {
    Error::Ec2 {
        operation: operation.to_string(),
        message: e.to_string(),
    }
}

/// Associates the address `allocation` with `instance`, taking it from
/// whichever instance has it.
pub async fn associate(client: &Client, allocation: &str, instance: &str) -> Result<()> {
    client
        .associate_address()
        .allocation_id(allocation)
        .instance_id(instance)
        .allow_reassociation(true)
        .send()
        .await
        .map_err(|e| {
            ec2_err(
                &format!("AssociateAddress {allocation} with {instance}"),
                aws_sdk_ec2::error::DisplayErrorContext(e),
            )
        })?;
    Ok(())
}

/// The instance the address `allocation` is associated with now.
pub async fn associated(client: &Client, allocation: &str) -> Result<Option<String>> {
    let out = client
        .describe_addresses()
        .allocation_ids(allocation)
        .send()
        .await
        .map_err(|e| {
            ec2_err(
                &format!("DescribeAddresses {allocation}"),
                aws_sdk_ec2::error::DisplayErrorContext(e),
            )
        })?;
    Ok(out
        .addresses()
        .first()
        .and_then(|a| a.instance_id())
        .filter(|i| !i.is_empty())
        .map(str::to_string))
}
