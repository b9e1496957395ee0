//! `fd-aggregator roster add` / `roster remove`: edits the `[[roster]]` tables of a
//! `federation.toml` in place with `toml_edit`, so that the rest of the file (its comments, its
//! order, its formatting) stays as the operator left it. An edit is checked before it is
//! written (a valid PeerId, no name or PeerId twice, the result still a federation config) and
//! written atomically (a temporary file, then a rename): a failed edit leaves the file as it was.

use std::path::Path;

use protocol::ParticipantId;
use toml_edit::{ArrayOfTables, DocumentMut, Item, Table};

use crate::config::AggregatorConfig;
use crate::error::Error;
pub use crate::error::RosterError;

fn parse(text: &str) -> Result<DocumentMut, RosterError> {
    text.parse::<DocumentMut>().map_err(|e| RosterError::Parse(e.to_string()))
}

/// The roster's tables, created if absent (an empty inline `roster = []` is replaced).
fn roster(doc: &mut DocumentMut) -> Result<&mut ArrayOfTables, RosterError> {
    let empty_inline = doc.get("roster").and_then(Item::as_array).is_some_and(|a| a.is_empty());
    if empty_inline || doc.get("roster").is_none() {
        doc.insert("roster", Item::ArrayOfTables(ArrayOfTables::new()));
    }
    doc.get_mut("roster")
        .and_then(Item::as_array_of_tables_mut)
        .ok_or_else(|| RosterError::Parse("`roster` must be [[roster]] tables".into()))
}

fn entry_str<'t>(t: &'t Table, key: &str) -> &'t str {
    t.get(key).and_then(Item::as_str).unwrap_or_default()
}

/// `text` with the node `name` (PeerId `peer`, optionally its declared sample count) added.
pub fn add(text: &str, name: &str, peer: &str, samples: Option<u64>) -> Result<String, RosterError> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        return Err(RosterError::Name(name.to_owned()));
    }
    if samples == Some(0) {
        return Err(RosterError::ZeroSamples);
    }
    let id: ParticipantId = net::keys::parse_peer_id(peer)?;
    let mut doc = parse(text)?;
    let tables = roster(&mut doc)?;
    for t in tables.iter() {
        if entry_str(t, "name") == name {
            return Err(RosterError::DuplicateName(name.to_owned()));
        }
        if net::keys::parse_peer_id(entry_str(t, "peer_id")).is_ok_and(|other| other == id) {
            return Err(RosterError::DuplicatePeer(entry_str(t, "name").to_owned()));
        }
    }
    let mut t = Table::new();
    t["name"] = toml_edit::value(name);
    t["peer_id"] = toml_edit::value(net::keys::peer_id_string(&id));
    if let Some(n) = samples {
        t["samples"] =
            toml_edit::value(i64::try_from(n).map_err(|_| RosterError::Parse(format!("{n} samples is too many")))?);
    }
    tables.push(t);
    Ok(doc.to_string())
}

/// `text` without the node `name`.
pub fn remove(text: &str, name: &str) -> Result<String, RosterError> {
    let mut doc = parse(text)?;
    let tables = roster(&mut doc)?;
    let i = tables
        .iter()
        .position(|t| entry_str(t, "name") == name)
        .ok_or_else(|| RosterError::Unknown(name.to_owned()))?;
    tables.remove(i);
    if tables.is_empty() {
        doc.remove("roster");
    }
    Ok(doc.to_string())
}

/// Applies `edit` to the config file at `path`: checks that the result still reads as a
/// federation config, then replaces the file atomically. Blocking.
///
/// Two edits at once would each read the file and the second write would drop the first's
/// node: an edit holds an exclusive lock on `.NAME.lock` beside the file from its read to its
/// rename, and one that finds it held is refused ([`RosterError::Busy`]). A `path` that is a
/// symbolic link stays one: the file it points to is replaced.
pub fn edit_file(path: &Path, edit: impl FnOnce(&str) -> Result<String, RosterError>) -> Result<(), Error> {
    let io = |source| Error::Io { path: path.to_owned(), source };
    let target = std::fs::canonicalize(path).map_err(io)?;
    let lock_path = lock_file(&target);
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| Error::Io { path: lock_path.clone(), source })?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Err(RosterError::Busy(lock_path).into()),
        Err(std::fs::TryLockError::Error(source)) => return Err(Error::Io { path: lock_path, source }),
    }
    let text = std::fs::read_to_string(&target).map_err(io)?;
    let edited = edit(&text)?;
    net::cli::parse_toml::<AggregatorConfig>(path, &edited)?;
    learning::fs::atomic_write(&target, edited.as_bytes())?;
    drop(lock);
    Ok(())
}

/// The lock file of roster edits of the config file `target`: `.NAME.lock` beside it.
fn lock_file(target: &Path) -> std::path::PathBuf {
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    target.with_file_name(format!(".{name}.lock"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER_A: &str = "12D3KooWFmejLRTAYLmKRQRkfuLTApkdiLMtA7NqurgVrK4DQHrZ";
    const PEER_B: &str = "12D3KooWL8tjVq5vRK4cftCzpYzpGGsk2dbsZ3C4qDWcwqmzrW5R";
    const FILE: &str = "# the operator's note\nfederation = \"f\" # inline note\n\n# reference below\n[reference]\npath = \"r.fdref\"\n";

    #[test]
    fn add_and_remove_keep_the_rest_of_the_file_and_refuse_duplicates() {
        let one = add(FILE, "alice", PEER_A, Some(120)).unwrap();
        assert!(one.starts_with(FILE), "the file before the roster is unchanged:\n{one}");
        let two = add(&one, "bob", PEER_B, None).unwrap();
        let doc: toml::Table = toml::from_str(&two).unwrap();
        let names: Vec<_> =
            doc["roster"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap().to_owned()).collect();
        assert_eq!(names, ["alice", "bob"]);
        assert_eq!(doc["roster"][0]["samples"].as_integer(), Some(120));
        assert!(matches!(add(&two, "alice", PEER_B, None), Err(RosterError::DuplicateName(n)) if n == "alice"));
        assert!(matches!(add(&two, "carol", PEER_A, None), Err(RosterError::DuplicatePeer(n)) if n == "alice"));
        assert!(matches!(add(&two, "carol", "not-a-peer", None), Err(RosterError::PeerId(_))));
        assert!(matches!(add(&two, "a b", PEER_A, None), Err(RosterError::Name(_))));
        assert!(matches!(add(&two, "carol", PEER_A, Some(0)), Err(RosterError::ZeroSamples)));
        assert!(matches!(remove(&two, "carol"), Err(RosterError::Unknown(_))));
        let back = remove(&remove(&two, "bob").unwrap(), "alice").unwrap();
        assert_eq!(back.trim_end(), FILE.trim_end(), "adding and removing every node gives the file back");
        let inline = add("roster = []\n", "alice", PEER_A, None).unwrap();
        assert!(toml::from_str::<toml::Table>(&inline).unwrap()["roster"].as_array().unwrap().len() == 1, "{inline}");
    }

    fn federation_file(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("federation.toml");
        let text = format!(
            "federation = \"f\"\nkey = \"k\"\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\noutput = \"out\"\nrounds = 1\nclasses = 2\n[reference]\npath = \"r.fdref\"\nsha256 = \"{}\"\n[round]\nsamples = 2\ntemperature = 3.0\n[student.architecture]\nkind = \"mlp\"\nhidden = [4]\n",
            "00".repeat(32)
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A second edit while one holds the lock is refused, so that it cannot drop the first's
    /// node; once the lock is free it goes through.
    #[test]
    fn an_edit_while_another_holds_the_lock_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = federation_file(dir.path());
        let held = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(lock_file(&std::fs::canonicalize(&path).unwrap()))
            .unwrap();
        held.lock().unwrap();
        match edit_file(&path, |t| add(t, "alice", PEER_A, None)) {
            Err(Error::Roster(RosterError::Busy(_))) => {}
            other => panic!("an edit went ahead while another held the lock: {other:?}"),
        }
        drop(held);
        edit_file(&path, |t| add(t, "alice", PEER_A, None)).unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().contains(PEER_A));
    }

    /// A config that is a symbolic link (e.g. into a configuration repository) stays one.
    #[cfg(unix)]
    #[test]
    fn a_symlinked_config_stays_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let real = federation_file(dir.path());
        let link = dir.path().join("link.toml");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        edit_file(&link, |t| add(t, "alice", PEER_A, None)).unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the link was replaced by a file");
        assert!(std::fs::read_to_string(&real).unwrap().contains(PEER_A), "the file it points to was edited");
    }
}
