//! Row-index files: one 0-based index per line, selecting rows of a shared data file.

use std::fmt::Write as _;
use std::path::Path;

use crate::Error;

use super::Result;

/// Reads a row-index file (one index per line; blank lines and `#` comments ignored).
pub fn read_rows(path: &Path, len: usize) -> Result<Vec<usize>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.to_owned(), source })?;
    let mut rows = Vec::new();
    for (no, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let i: usize = t.parse().map_err(|_| Error::Csv {
            path: path.to_owned(),
            line: no + 1,
            column: 1,
            detail: format!("`{t}` is not a row index"),
        })?;
        if i >= len {
            return Err(Error::Csv {
                path: path.to_owned(),
                line: no + 1,
                column: 1,
                detail: format!("row {i} is beyond the {len} rows of the data"),
            });
        }
        rows.push(i);
    }
    Ok(rows)
}

/// Writes a row-index file.
pub fn write_rows(path: &Path, rows: &[usize]) -> Result<()> {
    let mut s = String::with_capacity(rows.len() * 6);
    for r in rows {
        let _ = writeln!(s, "{r}");
    }
    std::fs::write(path, s).map_err(|source| Error::Io { path: path.to_owned(), source })
}
