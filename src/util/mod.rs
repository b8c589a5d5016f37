//! Small helpers shared by several connectors and the runtime, each written once: durable small-file
//! writes, text excerpts of remote answers, hex, and error chains.

use std::io::{self, Write};
use std::path::Path;

/// A boxed future that can cross threads (what object-safe async interfaces return).
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Writes a small file so that a crash leaves either the old or the new contents: a temp file beside
/// it, written and fsynced, renamed over it, and the directory fsynced.
pub fn write_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = tmp_path(path);
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_data()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    sync_dir(dir)
}

/// The temp file a durable write of `path` goes through (`<name>.tmp`, which recovery and
/// `open`s clean up).
pub fn tmp_path(path: &Path) -> std::path::PathBuf {
    remix_storage::fs::tmp_path(path)
}

/// Makes a directory's entries (creations, renames, removals) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// At most `chars_max` characters of `text` on one line (whitespace runs become one space), with
/// `...` when cut: how an error quotes a remote system's answer.
pub fn excerpt(text: &str, chars_max: usize) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(chars_max) {
        Some((end, _)) => format!("{}...", &flat[..end]),
        None => flat,
    }
}

/// Lowercase or uppercase hex to bytes; `None` for odd lengths or other characters.
pub fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect()
}

/// An error and its causes, `: `-separated (tokio-postgres and reqwest put the interesting part in
/// the causes).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_short_and_on_one_line() {
        assert_eq!(excerpt("a\n  b\tc", 200), "a b c");
        let long = "é".repeat(500);
        assert_eq!(excerpt(&long, 200).chars().count(), 203);
    }

    #[test]
    fn hex_decodes_pairs_only() {
        assert_eq!(decode_hex("0aFF"), Some(vec![10, 255]));
        assert_eq!(decode_hex("0a0"), None);
        assert_eq!(decode_hex("zz"), None);
    }
}
