//! Integration tests of remix-storage (one test binary, ripgrep style).

mod basic;
mod corruption;
mod format;
mod support;
mod truncation;
