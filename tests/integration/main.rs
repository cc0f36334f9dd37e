//! All integration tests, in one binary so heavy dependencies link once.
//! Each concern is a module; shared setup (tool lookup, stand-ins) is in `support`.

mod source;
mod support;
