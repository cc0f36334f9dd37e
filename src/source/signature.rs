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

    /// Add the keys of a file in git's `gpg.ssh.allowedSignersFile` format:
    /// `principal[,principal...] [options] keytype base64 [comment]` per
    /// line. The first principal becomes the name; a `namespaces="..."`
    /// option without `git` excludes the key; `cert-authority`,
    /// `valid-after` and `valid-before` are refused (not supported).
    pub fn add_allowed_signers(&mut self, origin: &str, text: &str) -> Result<()> {
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = format!("{origin}:{}", n + 1);
            let tokens: Vec<&str> = line.split_whitespace().collect();
            let Some(k) = tokens.iter().position(|t| is_key_type(t)) else {
                return Err(Error::AllowedSigners {
                    at,
                    reason: "no key type (such as ssh-ed25519) on the line".into(),
                });
            };
            let options = if k >= 2 {
                tokens[1..k].join(" ")
            } else {
                String::new()
            };
            if let Some(bad) = ["cert-authority", "valid-after", "valid-before"]
                .into_iter()
                .find(|o| options.contains(o))
            {
                return Err(Error::AllowedSigners {
                    at,
                    reason: format!("the `{bad}` option is not supported; list the signing key itself without it"),
                });
            }
            if let Some(ns) = option_value(&options, "namespaces") {
                if !ns.split(',').any(|n| n.trim() == GIT_NAMESPACE) {
                    continue;
                }
            }
            let key_line = tokens[k..].join(" ");
            let key = PublicKey::from_openssh(&key_line)
                .map_err(|source| Error::TrustedSshKey { at, source })?;
            let name = match k {
                0 if !key.comment().is_empty() => key.comment().to_string(),
                0 => key.fingerprint(HashAlg::Sha256).to_string(),
                _ => tokens[0].split(',').next().unwrap_or_default().to_string(),
            };
            self.ssh.push(TrustedSshKey { name, key });
        }
        Ok(())
    }

    /// Add every ASCII-armored OpenPGP public key in `text` (one or several
    /// `-----BEGIN PGP PUBLIC KEY BLOCK-----` blocks).
    pub fn add_pgp_keys(&mut self, origin: &str, text: &str) -> Result<()> {
        const BEGIN: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----";
        let starts: Vec<usize> = text.match_indices(BEGIN).map(|(i, _)| i).collect();
        let blocks: Vec<&str> = starts
            .iter()
            .enumerate()
            .map(|(j, &i)| &text[i..starts.get(j + 1).copied().unwrap_or(text.len())])
            .collect();
        if blocks.is_empty() {
            return Err(Error::TrustedPgpKey {
                at: origin.to_string(),
                reason: format!("no {BEGIN} in the file"),
            });
        }
        for (i, block) in blocks.iter().enumerate() {
            let at = if blocks.len() == 1 {
                origin.to_string()
            } else {
                format!("{origin} (key {})", i + 1)
            };
            self.add_pgp_key(&at, block)?;
        }
        Ok(())
    }

    /// Whether no key at all is trusted.
    pub fn is_empty(&self) -> bool {
        self.ssh.is_empty() && self.pgp.is_empty()
    }

    /// The trust list of tidegate's configuration: an allowed_signers file
    /// and armored OpenPGP key files.
    pub fn from_files(
        allowed_signers: Option<&std::path::Path>,
        pgp_keys: &[std::path::PathBuf],
    ) -> Result<TrustList> {
        let read = |p: &std::path::Path| {
            std::fs::read_to_string(p).map_err(|source| Error::ReadTrustFile {
                path: p.display().to_string(),
                source,
            })
        };
        let mut trust = TrustList::default();
        if let Some(p) = allowed_signers {
            trust.add_allowed_signers(&p.display().to_string(), &read(p)?)?;
        }
        for p in pgp_keys {
            trust.add_pgp_keys(&p.display().to_string(), &read(p)?)?;
        }
        Ok(trust)
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

/// Key types of OpenSSH public key lines (plain and security-key).
fn is_key_type(t: &str) -> bool {
    ["ssh-", "ecdsa-sha2-", "sk-ssh-", "sk-ecdsa-sha2-"]
        .iter()
        .any(|p| t.starts_with(p))
        && !t.contains('=')
}

/// The value of `name="..."` or `name=...` in an allowed_signers options field.
fn option_value(options: &str, name: &str) -> Option<String> {
    let start = options.find(&format!("{name}="))? + name.len() + 1;
    let rest = &options[start..];
    Some(match rest.strip_prefix('"') {
        Some(q) => q.split('"').next().unwrap_or_default().to_string(),
        None => rest
            .split([',', ' '])
            .next()
            .unwrap_or_default()
            .to_string(),
    })
}

/// Check `commit` (hex id) in the Git repository holding `path` (a working
/// tree or a bare repository) against `trust`.
pub fn verify_in_repo(
    path: &std::path::Path,
    commit: &str,
    trust: &TrustList,
) -> Result<Verification> {
    let repo = Repository::discover(path).map_err(|source| Error::OpenRepo {
        path: path.display().to_string(),
        source,
    })?;
    let oid = Oid::from_str(commit).map_err(|source| Error::ReadCommit {
        commit: commit.to_string(),
        source,
    })?;
    verify_commit(&repo, oid, trust)
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
    fn allowed_signers_lines_principals_options_and_errors() {
        let key =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAII8KGSg3HkqXs7t3NOt97CWAJdw/MID6Dz9prabh45E9";
        let mut t = TrustList::default();
        let text = format!(
            "# ops\nops@example.com,alt@example.com {key} laptop\n\
             ci@example.com namespaces=\"file,git\" {key}\n\
             mail@example.com namespaces=\"file\" {key}\n\
             {key} bare-comment\n"
        );
        t.add_allowed_signers("signers", &text).unwrap();
        let names: Vec<&str> = t.ssh.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["ops@example.com", "ci@example.com", "bare-comment"]);

        let err = TrustList::default()
            .add_allowed_signers("signers", &format!("\nops cert-authority {key}\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("signers:2: the `cert-authority` option"),
            "{err}"
        );
        let err = TrustList::default()
            .add_allowed_signers("signers", "ops@example.com AAAA\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("signers:1: no key type"), "{err}");
        assert!(err.contains("allowed_signers format"), "{err}");
        let err = TrustList::default()
            .add_pgp_keys("keys.asc", "not a key")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("keys.asc: "), "{err}");
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
