//! Key files and peer-id strings shared by the node and aggregator binaries.
//!
//! A key file holds one line, `ed25519-seed:<64 hex digits>`, the 32-byte secret seed that is
//! both the libp2p identity and the envelope signing key. It is created with mode 0600.

use std::io::Write;
use std::path::Path;
use std::str::FromStr;

use libp2p::PeerId;
use protocol::{Identity, ParticipantId};

const PREFIX: &str = "ed25519-seed:";

/// Errors reading or writing keys.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// File system error.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not a key file.
    #[error("{path}: not a key file ({detail})")]
    Format {
        /// File.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// A peer id string does not parse.
    #[error("`{0}` is not an Ed25519 libp2p peer id")]
    PeerId(String),
}

/// Generates a key, writes it to `path` (mode 0600, refusing to overwrite) and returns it.
pub fn generate(path: &Path) -> Result<Identity, KeyError> {
    let io = |e| KeyError::Io { path: path.display().to_string(), source: e };
    let id = Identity::generate().map_err(|e| KeyError::Format { path: path.display().to_string(), detail: e.to_string() })?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(io)?;
    let hex: String = id.seed().iter().map(|b| format!("{b:02x}")).collect();
    f.write_all(format!("{PREFIX}{hex}\n").as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    Ok(id)
}

/// Reads a key file.
pub fn read(path: &Path) -> Result<Identity, KeyError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| KeyError::Io { path: p.clone(), source: e })?;
    let fmt = |detail: &str| KeyError::Format { path: p.clone(), detail: detail.into() };
    let hex = text.trim().strip_prefix(PREFIX).ok_or_else(|| fmt("missing `ed25519-seed:` prefix"))?;
    if hex.len() != 64 {
        return Err(fmt("the seed must be 64 hex digits"));
    }
    let mut seed = [0u8; 32];
    for (i, b) in seed.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| fmt("the seed is not hex"))?;
    }
    Identity::from_seed(seed).map_err(|e| fmt(&e.to_string()))
}

/// The base58 PeerId of a participant, as printed by `keygen` and written in configs.
pub fn peer_id_string(p: &ParticipantId) -> String {
    crate::peer_id(p).to_base58()
}

/// Parses a base58 PeerId into the participant's key.
pub fn parse_peer_id(s: &str) -> Result<ParticipantId, KeyError> {
    let pid = PeerId::from_str(s.trim()).map_err(|_| KeyError::PeerId(s.to_owned()))?;
    crate::participant(&pid).ok_or_else(|| KeyError::PeerId(s.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_with_private_permissions_and_peer_ids_match_libp2p() {
        let dir = std::env::temp_dir().join(format!("net-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.key");
        let _ = std::fs::remove_file(&path);
        let id = generate(&path).unwrap();
        assert!(generate(&path).is_err(), "never overwrite a key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let back = read(&path).unwrap();
        assert_eq!(back.id(), id.id());
        // Our PeerId conversion agrees with libp2p's own derivation from the keypair.
        let mut seed = *id.seed();
        let kp = libp2p::identity::Keypair::ed25519_from_bytes(&mut seed).unwrap();
        assert_eq!(kp.public().to_peer_id(), crate::peer_id(&id.id()));
        let s = peer_id_string(&id.id());
        assert_eq!(parse_peer_id(&s).unwrap(), id.id());
        assert!(parse_peer_id("not-a-peer").is_err());
        std::fs::write(dir.join("bad.key"), "hello").unwrap();
        assert!(read(&dir.join("bad.key")).unwrap_err().to_string().contains("bad.key"));
    }
}
