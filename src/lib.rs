//! tidegate: a GitOps reconciler for Kubernetes and AWS EC2.
//!
//! The pipeline, one module per box, I/O only at the edges:
//!
//! ```text
//! source (git, I/O) → load (pure) → secrets (pure) → graph (pure)
//!   → provider::observe (I/O, batched) → plan (pure) → execute (I/O)
//! ```
//!
//! - [`value`]: the value tree carried from the loader to the providers.
//! - [`sensitive`]: secret plaintext that never prints.
//! - [`diff`]: field-level changes between two values, secrets masked.
//! - [`provider`]: the trait every target (Kubernetes, AWS) implements.
//! - [`secrets`]: SOPS-compatible age decryption/encryption of secret files.
//! - [`policy`]: production-readiness checks, per-environment severity, waivers.

pub mod diff;
pub mod policy;
pub mod provider;
pub mod secrets;
pub mod sensitive;
pub mod value;
