//! Who signed a commit, checked against a trust list that lives outside the
//! repository (whoever can push to the repo must not be able to trust
//! themselves). Git stores the signature in the commit's `gpgsig` header:
//! either an SSH signature (`gpg.format ssh`, an SshSig over namespace
//! "git") verified with `ssh-key`, or an OpenPGP detached signature verified
//! with `pgp`. No cryptography is written here.

use git2::{Oid, Repository};
use pgp::composed::{Deserializable, DetachedSignature, SignedPublicKey};
use pgp::types::KeyDetails;
use ssh_key::{HashAlg, PublicKey, SshSig};

use super::{Error, Result};

/// The namespace git uses for SSH commit signatures.
const GIT_NAMESPACE: &str = "git";

/// An SSH public key trusted to sign commits, with a name for status output.
#[derive(Debug, Clone)]
pub struct TrustedSshKey {
    pub name: String,
    pub key: PublicKey,
}

/// An OpenPGP public key (primary and subkeys) trusted to sign commits.
#[derive(Debug, Clone)]
pub struct TrustedPgpKey {
    pub name: String,
    pub key: SignedPublicKey,
}

/// The keys trusted to sign commits; loaded from tidegate's own
/// configuration, never from the repository being verified.
#[derive(Debug, Clone, Default)]
pub struct TrustList {
    pub ssh: Vec<TrustedSshKey>,
    pub pgp: Vec<TrustedPgpKey>,
}

impl TrustList {
    /// Add SSH keys from OpenSSH public key lines (`ssh-ed25519 AAAA... comment`;
    /// blank lines and `#` comments skipped). The comment becomes the name.
    pub fn add_ssh_keys(&mut self, origin: &str, text: &str) -> Result<()> {
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let key = PublicKey::from_openssh(line).map_err(|source| Error::TrustedSshKey {
                at: format!("{origin}:{}", n + 1),
                source,
            })?;
            let name = if key.comment().is_empty() {
                key.fingerprint(HashAlg::Sha256).to_string()
            } else {
                key.comment().to_string()
            };
            self.ssh.push(TrustedSshKey { name, key });
        }
        Ok(())
    }

    /// Add one ASCII-armored OpenPGP public key; its first user id is the name.
    pub fn add_pgp_key(&mut self, origin: &str, armored: &str) -> Result<()> {
        let (key, _) = SignedPublicKey::from_string(armored).map_err(|e| Error::TrustedPgpKey {
            at: origin.to_string(),
            reason: e.to_string(),
        })?;
        let name = key
            .details
            .users
            .first()
            .map(|u| String::from_utf8_lossy(u.id.id()).into_owned())
            .unwrap_or_else(|| format!("{:X}", key.fingerprint()));
        self.pgp.push(TrustedPgpKey { name, key });
        Ok(())
    }
}

/// What an environment demands of the commit it is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SignaturePolicy {
    /// Apply any commit (signatures are still reported).
    #[default]
    Off,
    /// Apply only commits with a valid signature by a trusted key.
    RequireTrusted,
}

impl SignaturePolicy {
    /// Whether a commit with this verification may be applied.
    pub fn allows(&self, v: &Verification) -> bool {
        match self {
            SignaturePolicy::Off => true,
            SignaturePolicy::RequireTrusted => matches!(v, Verification::Trusted { .. }),
        }
    }
}

/// The result of checking one commit's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// Valid signature by a trusted key.
    Trusted { fingerprint: String, signer: String },
    /// The commit carries no signature.
    Unsigned,
    /// A well-formed signature, but not by a trusted key.
    Untrusted { reason: String },
    /// The signature does not verify or cannot be parsed.
    Invalid { reason: String },
}

impl std::fmt::Display for Verification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verification::Trusted {
                fingerprint,
                signer,
            } => write!(f, "signed by {signer} ({fingerprint})"),
            Verification::Unsigned => write!(f, "commit is not signed"),
            Verification::Untrusted { reason } => write!(f, "untrusted signature: {reason}"),
            Verification::Invalid { reason } => write!(f, "invalid signature: {reason}"),
        }
    }
}

/// Check the signature of `commit` in `repo` against `trust`.
pub fn verify_commit(repo: &Repository, commit: Oid, trust: &TrustList) -> Result<Verification> {
    let (sig, data) = match repo.extract_signature(&commit, None) {
        Ok(pair) => pair,
        Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(Verification::Unsigned),
        Err(source) => {
            return Err(Error::ReadCommit {
                commit: commit.to_string(),
                source,
            })
        }
    };
    Ok(verify(&sig, &data, trust))
}

/// Check a detached signature (the `gpgsig` header) over the signed commit data.
pub fn verify(signature: &[u8], signed: &[u8], trust: &TrustList) -> Verification {
    let Ok(text) = std::str::from_utf8(signature) else {
        return invalid("signature is not text");
    };
    if text
        .trim_start()
        .starts_with("-----BEGIN SSH SIGNATURE-----")
    {
        verify_ssh(text, signed, trust)
    } else if text
        .trim_start()
        .starts_with("-----BEGIN PGP SIGNATURE-----")
    {
        verify_pgp(text, signed, trust)
    } else {
        invalid("unknown signature format (supported: SSH, OpenPGP; not X.509)")
    }
}

fn invalid(reason: &str) -> Verification {
    Verification::Invalid {
        reason: reason.into(),
    }
}

fn verify_ssh(text: &str, signed: &[u8], trust: &TrustList) -> Verification {
    let sig = match SshSig::from_pem(text) {
        Ok(sig) => sig,
        Err(e) => return invalid(&format!("unreadable SSH signature: {e}")),
    };
    if sig.namespace() != GIT_NAMESPACE {
        return invalid(&format!(
            "SSH signature namespace is {:?}, not \"git\"",
            sig.namespace()
        ));
    }
    let signer = PublicKey::from(sig.public_key().clone());
    let fingerprint = signer.fingerprint(HashAlg::Sha256).to_string();
    let Some(trusted) = trust
        .ssh
        .iter()
        .find(|t| t.key.key_data() == sig.public_key())
    else {
        return Verification::Untrusted {
            reason: format!("SSH key {fingerprint} is not in the trust list"),
        };
    };
    match trusted.key.verify(GIT_NAMESPACE, signed, &sig) {
        Ok(()) => Verification::Trusted {
            fingerprint,
            signer: trusted.name.clone(),
        },
        Err(e) => invalid(&format!(
            "SSH signature by {fingerprint} does not verify: {e}"
        )),
    }
}

fn verify_pgp(text: &str, signed: &[u8], trust: &TrustList) -> Verification {
    let sig = match DetachedSignature::from_string(text) {
        Ok((sig, _)) => sig.signature,
        Err(e) => return invalid(&format!("unreadable OpenPGP signature: {e}")),
    };
    let issuers: Vec<String> = sig
        .issuer_fingerprint()
        .iter()
        .map(|f| format!("{f:X}"))
        .chain(
            sig.issuer_key_id()
                .iter()
                .map(|k| hex::encode_upper(k.as_ref())),
        )
        .collect();
    let mut last_err = None;
    for trusted in &trust.pgp {
        let primary = &trusted.key.primary_key;
        let candidates = std::iter::once((primary.fingerprint(), sig.verify(primary, signed)))
            .chain(
                trusted
                    .key
                    .public_subkeys
                    .iter()
                    .map(|s| (s.key.fingerprint(), sig.verify(&s.key, signed))),
            );
        for (fp, res) in candidates {
            let fp = format!("{fp:X}");
            let named = issuers.iter().any(|i| fp.ends_with(i.as_str()));
            match res {
                Ok(()) => {
                    return Verification::Trusted {
                        fingerprint: fp,
                        signer: trusted.name.clone(),
                    }
                }
                Err(e) if named => {
                    last_err = Some(format!("OpenPGP signature by {fp} does not verify: {e}"))
                }
                Err(_) => {}
            }
        }
    }
    match last_err {
        Some(reason) => Verification::Invalid { reason },
        None => Verification::Untrusted {
            reason: format!(
                "OpenPGP key {} is not in the trust list",
                issuers.first().map(String::as_str).unwrap_or("(no issuer)")
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_gates_only_trusted() {
        let trusted = Verification::Trusted {
            fingerprint: "SHA256:x".into(),
            signer: "ops".into(),
        };
        let p = SignaturePolicy::RequireTrusted;
        assert!(p.allows(&trusted));
        assert!(!p.allows(&Verification::Unsigned));
        assert!(!p.allows(&Verification::Untrusted { reason: "x".into() }));
        assert!(!p.allows(&Verification::Invalid { reason: "x".into() }));
        assert!(SignaturePolicy::Off.allows(&Verification::Unsigned));
    }

    #[test]
    fn garbage_signatures_are_invalid_not_errors() {
        let t = TrustList::default();
        assert!(matches!(
            verify(b"nonsense", b"data", &t),
            Verification::Invalid { .. }
        ));
        let bad_ssh = b"-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----\n";
        assert!(matches!(
            verify(bad_ssh, b"data", &t),
            Verification::Invalid { .. }
        ));
        let bad_pgp = b"-----BEGIN PGP SIGNATURE-----\n\nAAAA\n-----END PGP SIGNATURE-----\n";
        assert!(matches!(
            verify(bad_pgp, b"data", &t),
            Verification::Invalid { .. }
        ));
    }

    #[test]
    fn bad_trusted_key_names_the_line() {
        let mut t = TrustList::default();
        let err = t
            .add_ssh_keys("trust.pub", "# c\n\nssh-ed25519 notbase64!\n")
            .unwrap_err();
        assert!(err.to_string().contains("trust.pub:3"), "{err}");
    }
}
