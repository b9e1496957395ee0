//! The node's copy of the public reference set: the set whose SHA-256 `node.toml` pins
//! (`policy.reference_sha256`) and no other. A local copy is checked against the pin before the
//! node starts; without one, the pinned set is fetched from the aggregator in chunks, checked,
//! and written atomically. A copy is never replaced: a file that does not match the pin stops
//! the node with an error that names the setting.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use net::Client;
use protocol::{FederationId, Message, ParticipantId, RefSetChunk, RefSetRequest, ReferenceSet, ReferenceSetId};

use crate::error::Error;

/// Largest reference set a node fetches.
const MAX_REFERENCE_BYTES: u64 = 4 << 30;
/// Bytes asked for in one chunk request.
const CHUNK: u32 = 1 << 20;

fn bad(detail: impl Into<String>) -> Error {
    Error::Reference { detail: detail.into() }
}

/// Reads the local copy at `path`, if there is one, and checks it against the pin. Blocking.
pub(crate) fn read_pinned(path: &Path, pin: ReferenceSetId) -> Result<Option<ReferenceSet>, Error> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(Error::Io { path: path.to_owned(), source }),
    };
    let id = ReferenceSetId::digest(&bytes);
    if id != pin {
        return Err(Error::config(
            "policy.reference_sha256",
            format!(
                "the reference set at {} has SHA-256 {id}, not the pinned {pin}; it is not replaced: correct the pin, or remove the file to fetch the pinned set",
                path.display()
            ),
        ));
    }
    ReferenceSet::from_bytes(&bytes, usize::MAX).map(Some).map_err(|e| bad(format!("{}: {e}", path.display())))
}

/// Refuses a reference set whose rows are not as wide as the private data's.
pub(crate) fn check_features(data: usize, rs: &ReferenceSet) -> Result<(), Error> {
    if rs.features != data {
        return Err(Error::FeatureCount { data, reference: rs.features });
    }
    Ok(())
}

/// Fetches the pinned set `pin` from the aggregator, checks that its rows have `features`
/// features (the private data's), and only then saves it at `path`, atomically. A set that does
/// not fit is not written ([`Error::FeatureCount`]), so nothing is left behind for a later start
/// to trip over. A copy is never overwritten: a file at `path` that matches the pin (written
/// meanwhile, e.g. by an earlier attempt) is used, any other is refused.
pub(crate) async fn fetch(
    client: &Client,
    aggregator: &ParticipantId,
    federation: &FederationId,
    path: &Path,
    pin: ReferenceSetId,
    features: usize,
) -> Result<Arc<ReferenceSet>, Error> {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let req = Message::RefSetRequest(RefSetRequest {
            federation: federation.clone(),
            reference_set: pin,
            offset: buf.len() as u64,
            len: CHUNK,
        });
        match client.request(aggregator, &req).await? {
            Message::RefSetChunk(RefSetChunk { offset, total_len, data, reference_set, .. }) => {
                if reference_set != pin
                    || offset != buf.len() as u64
                    || total_len > MAX_REFERENCE_BYTES
                    || (data.is_empty() && (buf.len() as u64) < total_len)
                {
                    return Err(bad("inconsistent reference-set chunk"));
                }
                buf.extend_from_slice(&data);
                if buf.len() as u64 >= total_len {
                    break;
                }
            }
            other => return Err(Error::Unexpected { request: "RefSetRequest", got: other.kind() }),
        }
    }
    let path: PathBuf = path.to_owned();
    let rs = tokio::task::spawn_blocking(move || save_fetched(&path, &buf, pin, features)).await??;
    Ok(Arc::new(rs))
}

/// Checks fetched bytes against the pin and the private data's feature count, then writes them
/// at `path` unless a copy of the pinned set is there already. Blocking.
fn save_fetched(path: &Path, buf: &[u8], pin: ReferenceSetId, features: usize) -> Result<ReferenceSet, Error> {
    if ReferenceSetId::digest(buf) != pin {
        return Err(bad("the fetched reference set does not match the pinned hash"));
    }
    let rs = ReferenceSet::from_bytes(buf, usize::MAX).map_err(|e| bad(e.to_string()))?;
    check_features(features, &rs)?;
    if read_pinned(path, pin)?.is_some() {
        return Ok(rs);
    }
    learning::fs::atomic_write(path, buf)?;
    tracing::info!(bytes = buf.len(), path = %path.display(), "fetched the reference set");
    Ok(rs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_copy_is_used_only_if_it_matches_the_pin_and_is_left_alone_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reference.fdref");
        let rs = ReferenceSet::new(3, 2, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
        let bytes = rs.to_bytes();
        let pin = ReferenceSetId::digest(&bytes);
        assert!(read_pinned(&path, pin).unwrap().is_none(), "no copy yet: fetch it");
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(read_pinned(&path, pin).unwrap(), Some(rs));
        match read_pinned(&path, ReferenceSetId([9; 32])) {
            Err(Error::Config { field, .. }) => assert_eq!(field, "policy.reference_sha256"),
            other => panic!("a copy that does not match the pin was accepted: {other:?}"),
        }
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "the copy is left as it was");
    }

    #[test]
    fn a_fetched_set_that_does_not_fit_the_data_is_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reference.fdref");
        let rs = ReferenceSet::new(3, 2, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
        let bytes = rs.to_bytes();
        let pin = ReferenceSetId::digest(&bytes);
        match save_fetched(&path, &bytes, pin, 1) {
            Err(Error::FeatureCount { data: 1, reference: 2 }) => {}
            other => panic!("a set of 2 features was taken for data of 1: {other:?}"),
        }
        assert!(!path.exists(), "nothing is written for a later start to trip over");
        assert_eq!(save_fetched(&path, &bytes, pin, 2).unwrap(), rs);
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        // Fetched again (a retry after the first copy was written): the copy is used.
        assert_eq!(save_fetched(&path, &bytes, pin, 2).unwrap(), rs);
        assert!(save_fetched(&path, &bytes, ReferenceSetId([9; 32]), 2).is_err(), "a set off the pin");
    }
}
