//! `remix doctor`'s report: each check says what it found and, when something is wrong, what fixes
//! it. Connectors add their checks of the systems they name; the CLI prints the report.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked: `source shop_db`, `target warehouse`, `data directory`.
    pub subject: String,
    pub check: String,
    pub status: Status,
    pub message: String,
    /// What to run or change when the check did not pass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// The checks so far, in order.
#[derive(Debug, Default)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    pub fn add(
        &mut self,
        subject: &str,
        check: &str,
        status: Status,
        message: impl Into<String>,
        fix: Option<String>,
    ) {
        self.checks.push(Check {
            subject: subject.into(),
            check: check.into(),
            status,
            message: message.into(),
            fix,
        });
    }

    pub fn ok(&mut self, subject: &str, check: &str, message: impl Into<String>) {
        self.add(subject, check, Status::Ok, message, None);
    }

    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.status == Status::Fail)
    }
}

/// A directory the node cannot write in.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotWritable(pub String);

/// Creates `dir` if needed, then writes, syncs and removes a file in it.
pub fn writable(dir: &std::path::Path) -> Result<(), NotWritable> {
    use std::io::Write;
    std::fs::create_dir_all(dir).map_err(|e| NotWritable(format!("cannot create {}: {e}", dir.display())))?;
    let probe = dir.join(format!(".remix-doctor-{}", std::process::id()));
    let written =
        std::fs::File::create(&probe).and_then(|mut f| f.write_all(b"probe").and_then(|()| f.sync_all()));
    let removed = std::fs::remove_file(&probe);
    written.and(removed).map_err(|e| NotWritable(format!("cannot write in {}: {e}", dir.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_that_cannot_be_created_is_not_writable() {
        let dir = tempfile::tempdir().unwrap();
        assert!(writable(dir.path()).is_ok());
        std::fs::write(dir.path().join("file"), b"x").unwrap();
        let error = writable(&dir.path().join("file/sub")).unwrap_err();
        assert!(error.0.starts_with("cannot create"), "{error}");
    }
}
