//! How tidegate proves who it is to a Git remote and checks who the remote
//! is. HTTPS tokens and passwords come from a file or an environment
//! variable (never from the config itself, so they never land in Git); SSH
//! keys come from a file and the server's host key must be listed in a
//! known_hosts file: there is no "accept any host key" mode. libgit2 asks
//! for credentials again after each rejection, so the callback counts and
//! gives up after a bounded number of attempts instead of looping.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use git2::cert::Cert;
use git2::{CertificateCheckStatus, Cred, CredentialType, RemoteCallbacks};
use hmac::{Hmac, Mac};
use ssh_key::known_hosts::{Entry, HostPatterns};

use super::{Error, Result};
use crate::sensitive::Sensitive;

/// Where a secret (token, password, passphrase) is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretFrom {
    /// A file; trailing newlines are stripped.
    File(PathBuf),
    /// An environment variable.
    Env(String),
    /// Held in memory: the password or token a remote URL carried
    /// ([`super::url::split_credentials`]).
    Inline(Sensitive),
}

impl SecretFrom {
    /// Read the secret now. Errors name the file or variable, never the value.
    pub fn read(&self) -> Result<Sensitive> {
        let text = match self {
            SecretFrom::File(path) => {
                std::fs::read_to_string(path).map_err(|source| Error::ReadSecret {
                    from: path.display().to_string(),
                    source,
                })?
            }
            SecretFrom::Env(var) => {
                std::env::var(var).map_err(|_| Error::MissingSecret { var: var.clone() })?
            }
            SecretFrom::Inline(secret) => return Ok(secret.clone()),
        };
        Ok(Sensitive::from_string(
            text.trim_end_matches(['\r', '\n']).to_string(),
        ))
    }
}

/// HTTPS basic authentication (a token is a password with any user name).
#[derive(Clone, PartialEq, Eq)]
pub struct HttpsAuth {
    /// User name; forges accept `x-access-token` (the default) with a token.
    pub username: Option<String>,
    pub password: SecretFrom,
}

impl std::fmt::Debug for HttpsAuth {
    // The user name may itself be a token (`https://TOKEN:x-oauth-basic@...`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsAuth")
            .field(
                "username",
                &self.username.as_ref().map(|_| crate::sensitive::MASK),
            )
            .field("password", &self.password)
            .finish()
    }
}

/// SSH public-key authentication plus the host keys the server must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshAuth {
    /// User name when the URL names none (default `git`).
    pub username: Option<String>,
    pub private_key: PathBuf,
    pub passphrase: Option<SecretFrom>,
    /// known_hosts file (plain or hashed host names, `[host]:port` form for
    /// ports other than 22).
    pub known_hosts: PathBuf,
}

/// Everything needed to talk to one remote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub https: Option<HttpsAuth>,
    pub ssh: Option<SshAuth>,
    /// The credentials callback fails after this many calls per operation.
    pub max_attempts: u32,
}

impl Default for Credentials {
    fn default() -> Self {
        Credentials {
            https: None,
            ssh: None,
            max_attempts: 3,
        }
    }
}

/// Why a callback refused, kept because libgit2 replaces some callback
/// errors with a generic message ("invalid or unknown remote ssh hostkey").
pub type Refusal = Rc<RefCell<Option<String>>>;

/// Callbacks for one remote operation against `url`; a refusal reason is
/// left in `refusal`.
pub fn callbacks<'a>(creds: &'a Credentials, url: &str, refusal: Refusal) -> RemoteCallbacks<'a> {
    let mut cbs = RemoteCallbacks::new();
    let mut attempts = 0u32;
    let note = refusal.clone();
    cbs.credentials(move |_url, user_from_url, allowed| {
        attempts += 1;
        let result = if attempts > creds.max_attempts {
            Err(format!(
                "authentication failed {} times; giving up (check the credentials configured for this remote)",
                creds.max_attempts
            ))
        } else {
            credential(creds, user_from_url, allowed).map_err(|e| e.to_string())
        };
        result.map_err(|msg| refuse(&note, msg))
    });
    let port = ssh_port(url);
    cbs.certificate_check(move |cert, host| {
        check_certificate(creds, cert, host, port).map_err(|msg| refuse(&refusal, msg))
    });
    cbs
}

fn refuse(note: &Refusal, msg: String) -> git2::Error {
    let err = git2::Error::from_str(&msg);
    *note.borrow_mut() = Some(msg);
    err
}

fn credential(
    creds: &Credentials,
    user_from_url: Option<&str>,
    allowed: CredentialType,
) -> Result<Cred> {
    if allowed.contains(CredentialType::SSH_KEY) {
        if let Some(ssh) = &creds.ssh {
            let user = user_from_url.or(ssh.username.as_deref()).unwrap_or("git");
            let pass = ssh.passphrase.as_ref().map(SecretFrom::read).transpose()?;
            let pass = pass.as_ref().and_then(|p| p.expose_str());
            return Cred::ssh_key(user, None, &ssh.private_key, pass).map_err(Error::Credentials);
        }
    }
    if allowed.contains(CredentialType::USERNAME) {
        let user = creds.ssh.as_ref().and_then(|s| s.username.as_deref());
        return Cred::username(user_from_url.or(user).unwrap_or("git")).map_err(Error::Credentials);
    }
    if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
        if let Some(https) = &creds.https {
            let user = https
                .username
                .as_deref()
                .or(user_from_url)
                .unwrap_or("x-access-token");
            let secret = https.password.read()?;
            let pass = secret.expose_str().ok_or(Error::SecretNotUtf8)?;
            return Cred::userpass_plaintext(user, pass).map_err(Error::Credentials);
        }
    }
    Err(Error::NoCredentials {
        allowed: format!("{allowed:?}"),
    })
}

fn check_certificate(
    creds: &Credentials,
    cert: &Cert<'_>,
    host: &str,
    port: Option<u16>,
) -> std::result::Result<CertificateCheckStatus, String> {
    let Some(hostkey) = cert.as_hostkey() else {
        // TLS: let libgit2/OpenSSL verify the chain against the system roots.
        return Ok(CertificateCheckStatus::CertificatePassthrough);
    };
    let Some(ssh) = &creds.ssh else {
        return Err("SSH remote but no known_hosts file is configured".into());
    };
    let Some(key) = hostkey.hostkey() else {
        return Err("the SSH server sent no host key".into());
    };
    match host_key_known(&ssh.known_hosts, host, port, key) {
        Ok(true) => Ok(CertificateCheckStatus::CertificateOk),
        Ok(false) => Err(format!(
            "host key of {host} is not in known_hosts {}: add it (ssh-keyscan) after verifying it",
            ssh.known_hosts.display()
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// Whether `key` (SSH wire encoding) is listed for `host` (and `port`) in
/// the known_hosts file. `@revoked` entries reject; `@cert-authority` lines
/// are not supported and never match.
pub fn host_key_known(
    known_hosts: &Path,
    host: &str,
    port: Option<u16>,
    key: &[u8],
) -> Result<bool> {
    let entries = ssh_key::known_hosts::KnownHosts::read_file(known_hosts).map_err(|source| {
        Error::KnownHosts {
            path: known_hosts.display().to_string(),
            source,
        }
    })?;
    let name = match port {
        Some(p) if p != 22 => format!("[{host}]:{p}"),
        _ => host.to_string(),
    };
    let mut found = false;
    for entry in entries.iter().filter(|e| host_matches(e, &name)) {
        let same = entry.public_key().to_bytes().ok().as_deref() == Some(key);
        match entry.marker() {
            Some(ssh_key::known_hosts::Marker::Revoked) if same => return Ok(false),
            None if same => found = true,
            _ => {}
        }
    }
    Ok(found)
}

fn host_matches(entry: &Entry, name: &str) -> bool {
    match entry.host_patterns() {
        HostPatterns::Patterns(patterns) => {
            let hit = |p: &str| glob_match(p, name);
            let negated = patterns
                .iter()
                .any(|p| p.strip_prefix('!').is_some_and(hit));
            !negated && patterns.iter().any(|p| !p.starts_with('!') && hit(p))
        }
        HostPatterns::HashedName { salt, hash } => {
            let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(salt) else {
                return false;
            };
            mac.update(name.as_bytes());
            mac.verify_slice(hash).is_ok()
        }
    }
}

/// known_hosts glob: `*` any run, `?` any one character.
fn glob_match(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a.eq_ignore_ascii_case(b) => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

/// The port of an `ssh://` URL, if it names one (scp-like URLs use 22).
fn ssh_port(url: &str) -> Option<u16> {
    let rest = url.strip_prefix("ssh://")?;
    let authority = rest.split('/').next()?;
    let hostport = authority.rsplit('@').next()?;
    if hostport.starts_with('[') {
        return hostport.rsplit_once("]:").and_then(|(_, p)| p.parse().ok());
    }
    hostport.rsplit_once(':').and_then(|(_, p)| p.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_from_urls() {
        assert_eq!(
            ssh_port("ssh://git@127.0.0.1:2222/srv/repo.git"),
            Some(2222)
        );
        assert_eq!(ssh_port("ssh://host/repo"), None);
        assert_eq!(ssh_port("ssh://[::1]:22/repo"), Some(22));
        assert_eq!(ssh_port("git@host:repo.git"), None);
    }

    #[test]
    fn globs() {
        assert!(glob_match("*.example.com", "git.example.com"));
        assert!(glob_match("[127.0.0.1]:2?22", "[127.0.0.1]:2222"));
        assert!(!glob_match("*.example.com", "example.org"));
    }

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJj+X9XQINa6whWdP/TEvpYY8cJ940Pji9vlHmnaNdZQ";
    const OTHER: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIP8p5X5Rg6G/beELrIvoQuA5tWru71fFOpGv+XhWv3EP";

    fn wire(openssh: &str) -> Vec<u8> {
        let k = ssh_key::PublicKey::from_openssh(openssh).unwrap();
        k.to_bytes().unwrap()
    }

    #[test]
    fn known_hosts_plain_hashed_and_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("known_hosts");
        // A hashed `|1|salt|hash` entry for "[127.0.0.1]:2222".
        let salt = [7u8; 20];
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(&salt).unwrap();
        mac.update(b"[127.0.0.1]:2222");
        let hash = mac.finalize().into_bytes();
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let hashed = format!("|1|{}|{}", b64.encode(salt), b64.encode(hash));
        let text = format!("git.example.com,!bad.example.com {KEY}\n{hashed} {OTHER}\n@revoked evil.example.com {KEY}\n");
        std::fs::write(&file, text).unwrap();
        assert!(host_key_known(&file, "git.example.com", None, &wire(KEY)).unwrap());
        assert!(!host_key_known(&file, "git.example.com", None, &wire(OTHER)).unwrap());
        assert!(host_key_known(&file, "127.0.0.1", Some(2222), &wire(OTHER)).unwrap());
        assert!(!host_key_known(&file, "127.0.0.1", None, &wire(OTHER)).unwrap());
        assert!(!host_key_known(&file, "evil.example.com", None, &wire(KEY)).unwrap());
        assert!(!host_key_known(&file, "unknown.example.com", None, &wire(KEY)).unwrap());
    }

    #[test]
    fn secrets_from_env_and_file() {
        std::env::set_var("TIDEGATE_TEST_TOKEN_X", "tok\n");
        let s = SecretFrom::Env("TIDEGATE_TEST_TOKEN_X".into())
            .read()
            .unwrap();
        assert_eq!(s.expose(), b"tok");
        let err = SecretFrom::Env("TIDEGATE_TEST_NOT_SET_X".into())
            .read()
            .unwrap_err();
        assert!(err.to_string().contains("TIDEGATE_TEST_NOT_SET_X"));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t");
        std::fs::write(&f, "filetok\r\n").unwrap();
        assert_eq!(SecretFrom::File(f).read().unwrap().expose(), b"filetok");
    }
}
