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
//! - [`provider`]: the trait every target (Kubernetes, AWS) implements;
//!   [`provider::aws`] is the EC2 provider.
//! - [`secrets`]: SOPS-compatible age decryption/encryption of secret files.
//! - [`policy`]: production-readiness checks, per-environment severity, waivers.
//! - [`diag`]: file:line:column diagnostics, collected and sorted.
//! - [`load`]: repository files → resolved [`model::Model`] (two stages).
//! - [`model`]: environments, module instances, modules, resources.
//! - [`expr`]: `${...}` references: parsing and evaluation.
//! - [`render`]: model + known attributes + secrets → `provider::Desired`.
//! - [`observe`]: one environment's providers and its live state (batched).
//! - [`plan`]: the preview: desired vs live, nothing or another revision.
//! - [`graph`]: the dependency graph (petgraph), cycles, levels, DOT/Mermaid.
//! - [`source`]: Git remote → in-memory snapshots (poll, cache, signatures).
//! - [`execute`]: applies one environment in graph order (bounded parallelism, prune).
//! - [`state`]: per-environment records, the promotion gate, apply locks.
//! - [`pipeline`]: the steps `cli` and `reconcile` share (check, the signed
//!   commit gate, the record of an apply); neither imports the other.
//! - [`reconcile`]: the in-cluster loop (state machine, driver, webhooks,
//!   leases, its Prometheus series); [`server`]: its HTTP surface;
//!   [`notify`]: webhooks, Slack and commit statuses about what it does.
//! - [`tool`]: runs the external renderers (kustomize, helm): no network,
//!   a time limit, values through standard input.
//! - [`cli`]: the command implementations behind `src/main.rs`.

pub mod cli;
pub mod diag;
pub mod diff;
pub mod execute;
pub mod expr;
pub mod graph;
pub mod helm;
pub mod load;
pub mod model;
pub mod notify;
pub mod observe;
pub mod pipeline;
pub mod plan;
pub mod policy;
pub mod preview;
pub mod promotion;
pub mod provider;
pub mod reconcile;
pub mod render;
pub mod resource;
pub mod secrets;
pub mod sensitive;
pub mod server;
pub mod source;
pub mod state;
pub mod tool;
pub mod traffic;
pub mod value;

#[cfg(test)]
mod testutil;
