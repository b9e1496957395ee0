//! Key files and peer-id strings shared by the node and aggregator binaries.
//!
//! A key file holds one line, `ed25519-seed:<64 hex digits>`, the 32-byte secret seed that is
//! both the libp2p identity and the envelope signing key. It is created with mode 0600, and a
//! key file that others may read or write is refused.

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
    /// The key file is open to other users.
    #[error("{path} has mode {mode:o}: others may read or change this secret key; run `chmod 600 {path}`")]
    Permissions {
        /// File.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
}

/// Generates a key, writes it to `path` (mode 0600, refusing to overwrite) and returns it.
pub fn generate(path: &Path) -> Result<Identity, KeyError> {
    let io = |e| KeyError::Io { path: path.display().to_string(), source: e };
    let id = Identity::generate()
        .map_err(|e| KeyError::Format { path: path.display().to_string(), detail: e.to_string() })?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(io)?;
    f.write_all(format!("{PREFIX}{}\n", protocol::hex::encode(id.seed())).as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    Ok(id)
}

/// Writes a new key file (see [`generate`]) and returns its PeerId, for the roster or the
/// nodes' configs. Node and aggregator binaries both use it for `keygen`.
pub fn keygen(path: &Path) -> Result<String, KeyError> {
    Ok(peer_id_string(&generate(path)?.id()))
}

/// Reads a key file, refusing one that users other than its owner may read or write.
pub fn read(path: &Path) -> Result<Identity, KeyError> {
    let p = path.display().to_string();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode =
            std::fs::metadata(path).map_err(|e| KeyError::Io { path: p.clone(), source: e })?.permissions().mode()
                & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions { path: p, mode });
        }
    }
    let text = std::fs::read_to_string(path).map_err(|e| KeyError::Io { path: p.clone(), source: e })?;
    let fmt = |detail: &str| KeyError::Format { path: p.clone(), detail: detail.into() };
    let hex = text.trim().strip_prefix(PREFIX).ok_or_else(|| fmt("missing `ed25519-seed:` prefix"))?;
    let seed = protocol::hex::decode::<32>(hex).ok_or_else(|| fmt("the seed must be 64 hex digits"))?;
    Identity::from_seed(seed).map_err(|e| fmt(&e.to_string()))
}

/// The base58 PeerId of a participant, as printed by `keygen` and written in configs.
pub fn peer_id_string(p: &ParticipantId) -> String {
    crate::ids::peer_id(p).to_base58()
}

/// Parses a base58 PeerId into the participant's key.
pub fn parse_peer_id(s: &str) -> Result<ParticipantId, KeyError> {
    let pid = PeerId::from_str(s.trim()).map_err(|_| KeyError::PeerId(s.to_owned()))?;
    crate::ids::participant(&pid).ok_or_else(|| KeyError::PeerId(s.to_owned()))
}

/// Serde for a participant written as its base58 PeerId in config files:
/// `#[serde(with = "net::keys::peer_id_text")]`.
pub mod peer_id_text {
    use protocol::ParticipantId;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the base58 PeerId.
    pub fn serialize<S: Serializer>(p: &ParticipantId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::keys::peer_id_string(p))
    }

    /// Reads a base58 PeerId of an Ed25519 key.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ParticipantId, D::Error> {
        let text = String::deserialize(d)?;
        crate::keys::parse_peer_id(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_with_private_permissions_and_peer_ids_match_libp2p() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let path = dir.join("a.key");
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
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.join("bad.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        assert!(matches!(read(&dir.join("bad.key")), Err(KeyError::Format { .. })));
        assert!(read(&dir.join("bad.key")).unwrap_err().to_string().contains("bad.key"));
    }

    #[cfg(unix)]
    #[test]
    fn key_files_open_to_others_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        let id = generate(&path).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660, 0o602] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            match read(&path) {
                Err(KeyError::Permissions { mode: m, .. }) => assert_eq!(m, mode),
                other => panic!("mode {mode:o} accepted: {other:?}"),
            }
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert_eq!(read(&path).unwrap().id(), id.id(), "owner-only modes are fine");
    }
}
