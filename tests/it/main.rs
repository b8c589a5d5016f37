//! Integration tests of the `remix` binary (one test binary for the package).

mod architecture;
mod bad_input;
mod conformance;
mod dataset_export;
mod golden;
mod kill9;
mod log_cli;
mod memory;
mod my_source;
mod observability;
mod pg_crash;
mod pg_doctor;
mod pg_plain;
mod pg_relation;
mod pg_source;
mod pg_target;
mod pg_tls;
mod pg_to_s3;
mod pg_toast;
mod pipeline;
mod retention;
mod rewind;
mod stripe;
mod support;
