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
//! - [`provider`]: the trait every target (Kubernetes, AWS) implements.
//! - [`source`]: Git remote → in-memory snapshots (poll, cache, signatures).

pub mod provider;
pub mod sensitive;
pub mod source;
pub mod value;
