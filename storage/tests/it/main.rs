//! Integration tests of remix-storage (one test binary, ripgrep style).

mod basic;
mod corruption;
mod enospc;
mod format;
mod kill9;
mod model;
mod restart;
mod sim;
mod support;
mod tail;
mod truncation;
