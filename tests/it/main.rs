//! Integration tests of the `remix` binary (one test binary for the package).

mod log_cli;
mod support;
