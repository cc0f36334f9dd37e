//! Where age identities (private keys) come from: the I/O edge of
//! decryption.
//!
//! Sources, all combined like sops does: `--age-key-file` (a file, or a
//! directory of `*.agekey` files such as a mounted Kubernetes Secret),
//! `--age-key-dir`, `SOPS_AGE_KEY_FILE`, `SOPS_AGE_KEY` (the key text), and,
//! when none of those is given, sops' default `$XDG_CONFIG_HOME/sops/age/keys.txt`
//! (`~/.config/sops/age/keys.txt`). Only X25519 identities
//! (`AGE-SECRET-KEY-1...`) are accepted; a malformed line is an error naming
//! the source and line, never its content.

use std::fmt;
use std::path::{Path, PathBuf};

use age::secrecy::ExposeSecret;

use super::{Error, Result};

/// Where to look for identities, besides the environment.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct IdentityOptions {
    /// Age identity file, or a directory of `*.agekey` files (a mounted
    /// Kubernetes Secret).
    #[arg(long, value_name = "FILE|DIR", global = true)]
    pub age_key_file: Option<PathBuf>,
    /// Directory of `*.agekey` files.
    #[arg(long, value_name = "DIR", global = true)]
    pub age_key_dir: Option<PathBuf>,
}

/// Loaded age X25519 identities and where they came from.
#[derive(Default)]
pub struct Identities {
    keys: Vec<age::x25519::Identity>,
    sources: Vec<String>,
}

impl fmt::Debug for Identities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identities")
            .field("recipients", &self.recipients())
            .field("sources", &self.sources)
            .finish()
    }
}

impl Identities {
    /// Parses identity text (`#` comments and blank lines allowed).
    pub fn parse(text: &str, source: &str) -> Result<Self> {
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let key = line
                .parse::<age::x25519::Identity>()
                .map_err(|_| Error::IdentitySyntax {
                    source_name: source.to_string(),
                    line: i + 1,
                })?;
            keys.push(key);
        }
        Ok(Identities {
            keys,
            sources: vec![source.to_string()],
        })
    }

    /// Loads every configured source; `env` reads environment variables
    /// (pass `|k| std::env::var(k).ok()`).
    pub fn load(opts: &IdentityOptions, env: &dyn Fn(&str) -> Option<String>) -> Result<Self> {
        let mut all = Identities::default();
        if let Some(p) = &opts.age_key_file {
            all.extend(load_path(p)?);
        }
        if let Some(d) = &opts.age_key_dir {
            all.extend(load_dir(d)?);
        }
        if let Some(f) = env("SOPS_AGE_KEY_FILE").filter(|s| !s.is_empty()) {
            all.extend(load_path(Path::new(&f))?);
        }
        if let Some(text) = env("SOPS_AGE_KEY").filter(|s| !s.is_empty()) {
            all.extend(Identities::parse(&text, "SOPS_AGE_KEY")?);
        }
        if all.sources.is_empty() {
            if let Some(default) = default_keys_file(env).filter(|p| p.is_file()) {
                all.extend(load_path(&default)?);
            }
        }
        Ok(all)
    }

    /// Loads from the process environment.
    pub fn from_env(opts: &IdentityOptions) -> Result<Self> {
        Self::load(opts, &|k| std::env::var(k).ok())
    }

    fn extend(&mut self, other: Identities) {
        self.keys.extend(other.keys);
        self.sources.extend(other.sources);
    }

    /// True when no identity is loaded.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Where the identities came from (file paths, variable names).
    pub fn sources(&self) -> &[String] {
        &self.sources
    }

    /// The public keys (`age1...`) of the loaded identities.
    pub fn recipients(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| k.to_public().to_string())
            .collect()
    }

    pub(crate) fn as_age(&self) -> impl Iterator<Item = &dyn age::Identity> {
        self.keys.iter().map(|k| k as &dyn age::Identity)
    }

    /// The identity text, for tests that hand keys to the real `sops`.
    pub fn to_text(&self) -> age::secrecy::SecretString {
        let lines: Vec<String> = self
            .keys
            .iter()
            .map(|k| k.to_string().expose_secret().to_string())
            .collect();
        age::secrecy::SecretString::from(lines.join("\n"))
    }
}

fn load_path(p: &Path) -> Result<Identities> {
    if p.is_dir() {
        return load_dir(p);
    }
    let text = std::fs::read_to_string(p).map_err(|source| Error::Read {
        path: p.display().to_string(),
        source,
    })?;
    let text = zeroize::Zeroizing::new(text);
    Identities::parse(&text, &p.display().to_string())
}

/// Every `*.agekey` file of a directory (a mounted Secret's `..data`
/// entries are skipped; symlinks are followed).
fn load_dir(d: &Path) -> Result<Identities> {
    let read_err = |source| Error::Read {
        path: d.display().to_string(),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(d)
        .map_err(read_err)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.ends_with(".agekey") && !name.starts_with("..") && p.is_file()
        })
        .collect();
    files.sort();
    let mut all = Identities::default();
    for f in files {
        all.extend(load_path(&f)?);
    }
    if all.sources.is_empty() {
        all.sources
            .push(format!("{} (no *.agekey files)", d.display()));
    }
    Ok(all)
}

fn default_keys_file(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let config = env("XDG_CONFIG_HOME")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| Path::new(&h).join(".config")))?;
    Some(config.join("sops/age/keys.txt"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> (String, String) {
        let id = age::x25519::Identity::generate();
        (
            id.to_string().expose_secret().to_string(),
            id.to_public().to_string(),
        )
    }

    #[test]
    fn parses_key_files_with_comments() {
        let (secret, public) = key();
        let text = format!("# created: now\n# public key: {public}\n{secret}\n\n");
        let ids = Identities::parse(&text, "keys.txt").unwrap();
        assert_eq!(ids.recipients(), vec![public]);
        let e = Identities::parse("# ok\nAGE-SECRET-KEY-1BAD\n", "k.txt")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("k.txt:2:") && !e.contains("BAD"), "{e}");
    }

    #[test]
    fn reads_a_kubernetes_secret_volume_layout() {
        // A mounted Secret: the key file is a symlink into a timestamped
        // directory reached through `..data`.
        let dir = tempfile::tempdir().unwrap();
        let (secret, public) = key();
        let stamp = dir.path().join("..2026_11_22_04_00_00.1");
        std::fs::create_dir(&stamp).unwrap();
        std::fs::write(stamp.join("identity.agekey"), &secret).unwrap();
        std::os::unix::fs::symlink("..2026_11_22_04_00_00.1", dir.path().join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/identity.agekey", dir.path().join("identity.agekey"))
            .unwrap();
        let opts = IdentityOptions {
            age_key_file: None,
            age_key_dir: Some(dir.path().to_path_buf()),
        };
        let ids = Identities::load(&opts, &|_| None).unwrap();
        assert_eq!(ids.recipients(), vec![public]);
    }

    #[test]
    fn loads_all_sources_and_mounted_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let (s1, p1) = key();
        let (s2, p2) = key();
        let (s3, p3) = key();
        let mount = dir.path().join("mount");
        std::fs::create_dir(&mount).unwrap();
        std::fs::write(mount.join("a.agekey"), &s1).unwrap();
        std::fs::write(mount.join("ignored.txt"), "garbage").unwrap();
        let file = dir.path().join("keys.txt");
        std::fs::write(&file, &s2).unwrap();
        let opts = IdentityOptions {
            age_key_file: Some(mount.clone()),
            age_key_dir: None,
        };
        let env = |k: &str| match k {
            "SOPS_AGE_KEY_FILE" => Some(file.display().to_string()),
            "SOPS_AGE_KEY" => Some(s3.clone()),
            _ => None,
        };
        let ids = Identities::load(&opts, &env).unwrap();
        assert_eq!(ids.recipients(), vec![p1, p2, p3]);
        assert_eq!(ids.sources().len(), 3);
        assert!(!format!("{ids:?}").contains("AGE-SECRET"));
        let none = Identities::load(&IdentityOptions::default(), &|_| None).unwrap();
        assert!(none.is_empty());
        let e = Identities::load(
            &IdentityOptions {
                age_key_file: Some(dir.path().join("missing")),
                age_key_dir: None,
            },
            &|_| None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("missing"));
    }
}
