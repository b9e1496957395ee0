//! Where a run's figures come from: the command that made them, the day, and the commit of the
//! source tree, recorded into its `results.json` so that a table made from it later
//! (`fd-scenarios table`) says what to run to measure it again.

use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

/// What made a run's figures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// The command line, e.g. `fd-scenarios run quickstart --seeds 0,1,2`.
    pub command: String,
    /// The day the run started, UTC, `YYYY-MM-DD`.
    pub date: String,
    /// `git rev-parse --short HEAD` of the source tree the binary was built from, with `-dirty`
    /// if tracked files differed from it; `unknown` where git or the tree is not there.
    pub commit: String,
}

/// What [`Provenance::commit`] says when git cannot tell.
pub const UNKNOWN: &str = "unknown";

impl Provenance {
    /// The provenance of a run started now by `command` (the words of its command line; the
    /// first is the program, written `fd-scenarios` whatever the path it was started by).
    pub fn now<S: AsRef<str>>(command: &[S]) -> Self {
        let words: Vec<String> = command
            .iter()
            .enumerate()
            .map(|(i, w)| if i == 0 { "fd-scenarios".to_owned() } else { quote(w.as_ref()) })
            .collect();
        let days = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() / 86_400) as i64;
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        Self { command: words.join(" "), date: date(days), commit: commit(&source).unwrap_or_else(|| UNKNOWN.into()) }
    }
}

/// A command-line word as a shell reads it back: quoted if it holds anything but plain characters.
fn quote(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_.,/=:+@%".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The short commit of the git tree at `dir`, `-dirty` if tracked files differ from it.
fn commit(dir: &Path) -> Option<String> {
    let git = |args: &[&str]| {
        let out = Command::new("git").arg("-C").arg(dir).args(args).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let head = git(&["rev-parse", "--short", "HEAD"]).filter(|h| !h.is_empty())?;
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{head}-dirty") } else { head })
}

/// `YYYY-MM-DD` of the day `days` after 1970-01-01 (the proleptic Gregorian calendar).
fn date(days: i64) -> String {
    // Howard Hinnant's `civil_from_days`: eras of 400 years (146,097 days) starting on 1 March.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_become_calendar_dates() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(59), "1970-03-01");
        assert_eq!(date(11_016), "2000-02-29");
        assert_eq!(date(11_017), "2000-03-01");
        assert_eq!(date(19_782), "2024-02-29");
        assert_eq!(date(20_454), "2026-01-01");
    }

    #[test]
    fn the_command_reads_back_as_typed() {
        let p = Provenance::now(&["target/release/fd-scenarios", "run", "my file.toml", "--seeds", "0,1,2"]);
        assert_eq!(p.command, "fd-scenarios run 'my file.toml' --seeds 0,1,2");
        assert_eq!(p.date.len(), 10);
        assert!(!p.commit.is_empty());
    }
}
