//! The egress ledger: one JSON line for every message this participant sends, so that a data
//! holder can audit exactly what left the machine (time, peer, kind, round, bytes, SHA-256).
//!
//! A dedicated writer thread owns the file. Senders hand it an entry and wait for its
//! acknowledgement, which comes after the line is on disk (fsync), before the message leaves:
//! what was sent is always recorded. Entries that arrive together share one fsync, and the
//! async side never blocks a runtime thread.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use protocol::{Message, ReferenceSetId};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

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
}

impl LedgerEntry {
    /// The entry for `message`, encoded as `wire`, sent to `peer`.
    pub fn new(peer: &str, direction: &str, message: &Message, wire: &[u8]) -> Self {
        Self {
            time_unix_ms: now_ms(),
            peer: peer.to_owned(),
            direction: direction.to_owned(),
            kind: format!("{:?}", message.kind()),
            round: message.round(),
            bytes: wire.len(),
            sha256: ReferenceSetId::digest(wire).to_hex(),
        }
    }
}

type Job = (Vec<u8>, oneshot::Sender<std::io::Result<()>>);

/// Most entries written under one fsync.
const BATCH: usize = 256;

/// Handle to the ledger's writer thread. Clonable; the thread ends with the last handle.
#[derive(Clone, Debug)]
pub struct Ledger {
    jobs: mpsc::Sender<Job>,
}

impl Ledger {
    /// Opens (creating if needed) the ledger at `path` for appending and starts its writer.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = OpenOptions::new().create(true).append(true).open(path)?;
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
                for (line, _) in &batch {
                    text.extend_from_slice(line);
                }
                let written = file.write_all(&text).and_then(|()| file.sync_data());
                for (_, ack) in batch.drain(..) {
                    let _ = ack.send(match &written {
                        Ok(()) => Ok(()),
                        Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
                    });
                }
            }
        })?;
        Ok(Self { jobs })
    }

    /// Records a message about to be sent and returns once it is on disk. An error means the
    /// caller must not send the message.
    pub async fn record(&self, entry: &LedgerEntry) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let (ack, done) = oneshot::channel();
        let stopped = || std::io::Error::other("the ledger writer has stopped");
        self.jobs.send((line, ack)).await.map_err(|_| stopped())?;
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

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{FederationId, Finished};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_records_are_all_on_disk_when_acknowledged() {
        let dir = std::env::temp_dir().join(format!("net-ledger-{}", std::process::id()));
        let path = dir.join("egress.jsonl");
        let _ = std::fs::remove_file(&path);
        let ledger = Ledger::open(&path).unwrap();
        let msg = Message::Finished(Finished { federation: FederationId::new("f").unwrap(), rounds: 3, detail: String::new() });
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..50u8 {
            let (l, m) = (ledger.clone(), msg.clone());
            tasks.spawn(async move { l.record(&LedgerEntry::new(&format!("peer-{i}"), "request", &m, &[i; 10])).await });
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
        assert!(entries.iter().all(|e| e.kind == "Finished" && e.round == Some(3) && e.bytes == 10));
    }
}
