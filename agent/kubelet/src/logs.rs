//! The `binary://` URI that makes containerd's shim run `basalt-container-log` for a
//! container, writing its output to a CRI-format file (see the `container-log` crate).

use std::path::Path;

/// The `binary://` URI that makes the shim start the log writer `program` writing to `path`.
pub fn uri(program: &Path, path: &Path) -> String {
    format!(
        "binary://{}?container-log={}",
        escape(&program.to_string_lossy()),
        escape(&path.to_string_lossy())
    )
}

/// Percent-encodes what would end or split a URI's path or query.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '%' | '?' | '#' | '&' | '=' | '+' | ' ' => {
                escaped.push_str(&format!("%{:02X}", character as u32))
            }
            other => escaped.push(other),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_escape_what_would_break_them() {
        let uri = uri(Path::new("/bin/log"), Path::new("/logs/a b&c/0.log"));
        assert_eq!(uri, "binary:///bin/log?container-log=/logs/a%20b%26c/0.log");
    }
}
