//! `tidegate secrets encrypt|decrypt|updatekeys`: the operator's commands.
//! `main` hooks [`SecretsArgs`] in and calls [`run`].

use std::io::Write;
use std::path::{Path, PathBuf};

use super::encrypt::{self, Config};
use super::{find_config, read, Error, Identities, IdentityOptions, Result};

/// `tidegate secrets ...`
#[derive(Debug, clap::Args)]
pub struct SecretsArgs {
    #[command(subcommand)]
    pub command: SecretsCommand,
    #[command(flatten)]
    pub identities: IdentityOptions,
    /// Repository root holding `.sops.yaml` (default: the closest ancestor
    /// of FILE that has one).
    #[arg(long, global = true, value_name = "DIR")]
    pub repo: Option<PathBuf>,
}

/// The secrets subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum SecretsCommand {
    /// Encrypt a plaintext YAML/JSON file to the age recipients `.sops.yaml`
    /// names for its path (output to stdout unless --in-place).
    Encrypt {
        file: PathBuf,
        /// Replace FILE with its encrypted form.
        #[arg(long)]
        in_place: bool,
    },
    /// Decrypt a SOPS file to stdout (for operators; plaintext is printed).
    Decrypt { file: PathBuf },
    /// Re-wrap the data key for the recipients `.sops.yaml` now names,
    /// leaving values and MAC unchanged (in place).
    Updatekeys { file: PathBuf },
}

/// Runs one subcommand, writing to `out`.
pub fn run(args: &SecretsArgs, out: &mut dyn Write) -> Result<()> {
    match &args.command {
        SecretsCommand::Encrypt { file, in_place } => {
            encrypt_file(args.repo.as_deref(), file, *in_place, out)
        }
        SecretsCommand::Decrypt { file } => {
            let ids = Identities::from_env(&args.identities)?;
            decrypt_file(file, &ids, out)
        }
        SecretsCommand::Updatekeys { file } => {
            let ids = Identities::from_env(&args.identities)?;
            updatekeys_file(args.repo.as_deref(), file, &ids, out)
        }
    }
}

/// The `.sops.yaml` for `file` and `file`'s path relative to it.
fn config_for(repo: Option<&Path>, file: &Path) -> Result<(Config, String)> {
    let config_path = match repo {
        Some(r) => r.join(".sops.yaml"),
        None => {
            let abs = std::path::absolute(file).map_err(|source| Error::Read {
                path: file.display().to_string(),
                source,
            })?;
            find_config(&abs).ok_or_else(|| Error::Config {
                file: file.display().to_string(),
                message: "no .sops.yaml in this directory or any parent; create one with creation_rules (path_regex, age)".into(),
            })?
        }
    };
    let config = Config::load(&config_path)?;
    let base =
        std::path::absolute(config_path.parent().unwrap_or(Path::new("."))).unwrap_or_default();
    let abs = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
    let relative = abs.strip_prefix(&base).unwrap_or(&abs);
    let relative = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/");
    Ok((config, relative))
}

/// `tidegate secrets encrypt FILE [--in-place]`.
pub fn encrypt_file(
    repo: Option<&Path>,
    file: &Path,
    in_place: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let (config, relative) = config_for(repo, file)?;
    let rule = config.rule_for(&relative)?;
    let plaintext = read(file)?;
    let encrypted = encrypt::encrypt(&plaintext, &file.display().to_string(), rule)?;
    if in_place {
        write_atomic(file, encrypted.as_bytes())
    } else {
        write_out(out, encrypted.as_bytes())
    }
}

/// `tidegate secrets decrypt FILE`: plaintext to `out`.
pub fn decrypt_file(file: &Path, ids: &Identities, out: &mut dyn Write) -> Result<()> {
    let bytes = read(file)?;
    let plain = encrypt::decrypt_to_plaintext(&bytes, &file.display().to_string(), ids)?;
    write_out(out, plain.as_bytes())
}

/// `tidegate secrets updatekeys FILE`: re-key in place for the recipients
/// `.sops.yaml` names now; reports the new recipients on `out`.
pub fn updatekeys_file(
    repo: Option<&Path>,
    file: &Path,
    ids: &Identities,
    out: &mut dyn Write,
) -> Result<()> {
    let (config, relative) = config_for(repo, file)?;
    let rule = config.rule_for(&relative)?;
    let bytes = read(file)?;
    let rekeyed = encrypt::update_keys(&bytes, &file.display().to_string(), ids, &rule.age)?;
    write_atomic(file, rekeyed.as_bytes())?;
    write_out(
        out,
        format!(
            "{}: data key now wrapped for {}\n",
            file.display(),
            rule.age.join(", ")
        )
        .as_bytes(),
    )
}

fn write_out(out: &mut dyn Write, bytes: &[u8]) -> Result<()> {
    out.write_all(bytes).map_err(|source| Error::Write {
        path: "stdout".into(),
        source,
    })
}

/// Writes via a temporary file in the same directory and renames, so a
/// crash never leaves a half-written secret file.
fn write_atomic(file: &Path, bytes: &[u8]) -> Result<()> {
    let err = |source| Error::Write {
        path: file.display().to_string(),
        source,
    };
    let tmp = file.with_extension("tidegate-tmp");
    std::fs::write(&tmp, bytes).map_err(err)?;
    std::fs::rename(&tmp, file).map_err(err)
}
