//! The egress ledger: one JSON line for every message this participant sends, so that a data
//! holder can audit exactly what left the machine (time, peer, kind, round, bytes, SHA-256).
//! With [`Ledger::open`]'s `keep_bytes`, the exact bytes of each message are kept too, in a
//! file named by their SHA-256 in a folder beside the ledger (`egress.jsonl` → `egress/`), so
//! that an auditor can decode and check them, not just their hash.
//!
//! A dedicated writer thread owns the file. Senders hand it an entry and wait for its
//! acknowledgement, which comes after the line (and the bytes, if kept) are on disk (fsync),
//! before the message leaves: what was sent is always recorded. Entries that arrive together
//! share one fsync, and the async side never blocks a runtime thread. The ledger, its folder
//! and the kept bytes are private to their owner (0600 files, 0700 folders).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use protocol::{Message, ReferenceSetId};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::clock::now_ms;

/// One sent message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// Unix time in milliseconds.
    pub time_unix_ms: u64,
    /// Receiving peer (base58 PeerId).
    pub peer: String,
    /// `request` or `response`.
    pub direction: String,
    /// Message kind.
    pub kind: String,
    /// Round, where the message has one.
    pub round: Option<u64>,
    /// Bytes on the wire (the encoded envelope).
    pub bytes: usize,
    /// SHA-256 of the encoded envelope, hex.
    pub sha256: String,
    /// Where the bytes sent are kept, relative to the ledger's folder (when it keeps them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_file: Option<String>,
}

impl LedgerEntry {
    /// The entry for `message`, encoded as `wire`, sent to `peer`.
    pub fn new(peer: &str, direction: &str, message: &Message, wire: &[u8]) -> Self {
        Self { kind: format!("{:?}", message.kind()), round: message.round(), ..Self::unsigned(peer, direction, wire) }
    }

    /// The entry for bytes sent to `peer` that are not a sealed message (kind `Raw`).
    pub fn unsigned(peer: &str, direction: &str, wire: &[u8]) -> Self {
        Self {
            time_unix_ms: now_ms(),
            peer: peer.to_owned(),
            direction: direction.to_owned(),
            kind: "Raw".into(),
            round: None,
            bytes: wire.len(),
            sha256: ReferenceSetId::digest(wire).to_hex(),
            bytes_file: None,
        }
    }
}

/// A line to append, the bytes to keep beside it (file, bytes), and where to acknowledge.
type Job = (Vec<u8>, Option<(PathBuf, Vec<u8>)>, oneshot::Sender<std::io::Result<()>>);

/// Most entries written under one fsync.
const BATCH: usize = 256;

/// Handle to the ledger's writer thread. Clonable; the thread ends with the last handle.
#[derive(Clone, Debug)]
pub struct Ledger {
    jobs: mpsc::Sender<Job>,
    /// Folder of the kept bytes, if they are kept.
    bytes_dir: Option<PathBuf>,
}

/// Creates `dir` (and parents) private to its owner.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
}

fn private_file(opts: &mut OpenOptions) -> &mut OpenOptions {
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(opts, 0o600);
    opts
}

/// Writes `bytes` to a new file at `path` and syncs it; a file already there holds the same
/// bytes (its name is their hash) and is left as it is.
fn keep(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    match private_file(OpenOptions::new().write(true).create_new(true)).open(path) {
        Ok(mut f) => f.write_all(bytes).and_then(|()| f.sync_all()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

impl Ledger {
    /// Opens (creating if needed) the ledger at `path` for appending and starts its writer.
    /// With `keep_bytes`, the bytes of every message are kept in the folder `path` names
    /// without its extension.
    pub fn open(path: &Path, keep_bytes: bool) -> std::io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            private_dir(dir)?;
        }
        let bytes_dir = if keep_bytes {
            let dir = path.with_extension("");
            private_dir(&dir)?;
            Some(dir)
        } else {
            None
        };
        let mut file = private_file(OpenOptions::new().create(true).append(true)).open(path)?;
        // The mode above applies only to a file created now: one left readable by others (copied
        // in, restored from a backup) is made private too, through the open file.
        #[cfg(unix)]
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        let (jobs, mut rx) = mpsc::channel::<Job>(BATCH);
        std::thread::Builder::new().name("egress-ledger".into()).spawn(move || {
            let mut batch: Vec<Job> = Vec::with_capacity(BATCH);
            while let Some(first) = rx.blocking_recv() {
                batch.push(first);
                while batch.len() < BATCH {
                    match rx.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                let mut text = Vec::new();
                for (line, _, _) in &batch {
                    text.extend_from_slice(line);
                }
                let kept = batch.iter().filter_map(|(_, b, _)| b.as_ref()).try_for_each(|(p, bytes)| keep(p, bytes));
                let written = kept.and_then(|()| file.write_all(&text)).and_then(|()| file.sync_data());
                for (_, _, ack) in batch.drain(..) {
                    let _ = ack.send(match &written {
                        Ok(()) => Ok(()),
                        Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
                    });
                }
            }
        })?;
        Ok(Self { jobs, bytes_dir })
    }

    /// Records a message about to be sent, whose bytes on the wire are `wire`, and returns once
    /// it is on disk. An error means the caller must not send the message.
    pub async fn record(&self, entry: &LedgerEntry, wire: &[u8]) -> std::io::Result<()> {
        let mut entry = entry.clone();
        let kept = self.bytes_dir.as_ref().map(|dir| {
            let name = format!("{}.bin", entry.sha256);
            let folder = dir.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
            entry.bytes_file = Some(format!("{folder}/{name}"));
            (dir.join(name), wire.to_vec())
        });
        let mut line = serde_json::to_vec(&entry).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let (ack, done) = oneshot::channel();
        let stopped = || std::io::Error::other("the ledger writer has stopped");
        self.jobs.send((line, kept, ack)).await.map_err(|_| stopped())?;
        done.await.map_err(|_| stopped())?
    }

    /// Reads every entry of a ledger file.
    pub fn read(path: &Path) -> std::io::Result<Vec<LedgerEntry>> {
        let text = std::fs::read_to_string(path)?;
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).map_err(std::io::Error::other))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{FederationId, Finished};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_records_are_all_on_disk_when_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("egress.jsonl");
        let ledger = Ledger::open(&path, false).unwrap();
        let msg = Message::Finished(Finished {
            federation: FederationId::new("f").unwrap(),
            rounds: 3,
            detail: String::new(),
        });
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..50u8 {
            let (l, m) = (ledger.clone(), msg.clone());
            tasks.spawn(async move {
                l.record(&LedgerEntry::new(&format!("peer-{i}"), "request", &m, &[i; 10]), &[i; 10]).await
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap().unwrap();
        }
        let entries = Ledger::read(&path).unwrap();
        assert_eq!(entries.len(), 50);
        let mut peers: Vec<String> = entries.iter().map(|e| e.peer.clone()).collect();
        peers.sort();
        peers.dedup();
        assert_eq!(peers.len(), 50);
        assert!(
            entries
                .iter()
                .all(|e| e.kind == "Finished" && e.round == Some(3) && e.bytes == 10 && e.bytes_file.is_none())
        );
    }

    #[tokio::test]
    async fn the_ledger_can_keep_the_bytes_sent_privately() {
        let tmp = tempfile::tempdir().unwrap();
        // A state folder that does not exist yet: the ledger makes it.
        let dir = tmp.path().join("state");
        let path = dir.join("egress.jsonl");
        let ledger = Ledger::open(&path, true).unwrap();
        let msg = Message::Finished(Finished {
            federation: FederationId::new("f").unwrap(),
            rounds: 1,
            detail: String::new(),
        });
        for wire in [b"first".as_slice(), b"second", b"first"] {
            ledger.record(&LedgerEntry::new("peer", "request", &msg, wire), wire).await.unwrap();
        }
        let entries = Ledger::read(&path).unwrap();
        assert_eq!(entries.len(), 3);
        for (e, wire) in entries.iter().zip([b"first".as_slice(), b"second", b"first"]) {
            let kept = std::fs::read(dir.join(e.bytes_file.as_ref().unwrap())).unwrap();
            assert_eq!(kept, wire, "the bytes kept are the bytes sent");
            assert_eq!(ReferenceSetId::digest(&kept).to_hex(), e.sha256);
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&path), 0o600);
            assert_eq!(mode(&dir.join("egress")), 0o700);
            assert_eq!(mode(&dir.join(entries[0].bytes_file.as_ref().unwrap())), 0o600);
        }
    }

    /// A ledger file that exists already, readable by others (copied in, restored from a
    /// backup), is made private when the ledger opens it; its records are kept.
    #[cfg(unix)]
    #[test]
    fn an_existing_ledger_is_made_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("egress.jsonl");
        std::fs::write(&path, b"").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(Ledger::open(&path, false).unwrap());
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
