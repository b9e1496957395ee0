//! The egress ledger: one JSON line for every message this participant sends, so that a data
//! holder can audit exactly what left the machine (time, peer, kind, round, bytes, SHA-256).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use protocol::{Message, ReferenceSetId};
use serde::{Deserialize, Serialize};

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

/// Append-only ledger file.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    file: Mutex<File>,
}

impl Ledger {
    /// Opens (creating if needed) the ledger at `path` for appending.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self { path: path.to_owned(), file: Mutex::new(file) })
    }

    /// Records a sent message. A ledger that cannot be written is an error for the caller, who
    /// must not send the message.
    pub fn record(&self, peer: &str, direction: &str, message: &Message, wire: &[u8]) -> std::io::Result<()> {
        let entry = LedgerEntry {
            time_unix_ms: now_ms(),
            peer: peer.to_owned(),
            direction: direction.to_owned(),
            kind: format!("{:?}", message.kind()),
            round: message.round(),
            bytes: wire.len(),
            sha256: ReferenceSetId::digest(wire).to_hex(),
        };
        let mut line = serde_json::to_vec(&entry).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        f.write_all(&line)?;
        f.sync_data()
    }

    /// Path of the ledger file.
    pub fn path(&self) -> &Path {
        &self.path
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
