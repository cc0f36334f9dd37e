//! All integration tests, in one binary so heavy dependencies link once.
//! Each concern is a module; shared setup (tool lookup, stand-ins) is in `support`,
//! `support_moto` and `stand`.

mod aws;
mod aws_more;
mod aws_net;
mod cli_golden;
mod differential;
mod example;
mod execute;
mod fault;
mod fixtures;
mod fuzz_corpus;
mod history;
mod import;
mod kubernetes;
mod notify;
mod notify_plan;
mod ownership;
mod plan;
mod policy;
mod preview;
mod promotion;
mod real_kube;
mod reconcile;
mod repeat;
mod saved_plan;
mod secrets;
mod security;
mod security_source;
mod source;
mod sources;
mod stand;
mod support;
mod support_moto;
mod switch;
mod target;
