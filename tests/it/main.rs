//! Integration tests of the `remix` binary (one test binary for the package).

mod bad_input;
mod kill9;
mod log_cli;
mod pg_doctor;
mod pg_source;
mod pipeline;
mod rewind;
mod support;
