//! The node's copy of the public reference set: used if its hash matches the announced one,
//! else fetched from the aggregator in chunks, checked, and written atomically.

use std::path::PathBuf;
use std::sync::Arc;

use net::Client;
use protocol::{FederationId, Message, ParticipantId, RefSetChunk, RefSetRequest, ReferenceSet, ReferenceSetId};

use crate::Error;

/// Largest reference set a node fetches.
const MAX_REFERENCE_BYTES: u64 = 4 << 30;
/// Bytes asked for in one chunk request.
const CHUNK: u32 = 1 << 20;

fn bad(detail: impl Into<String>) -> Error {
    Error::Reference { detail: detail.into() }
}

/// Reads the local copy at `path` if it exists and has the hash `id` (off the runtime).
async fn local_copy(path: PathBuf, id: ReferenceSetId) -> Result<Option<ReferenceSet>, Error> {
    tokio::task::spawn_blocking(move || {
        let Ok(bytes) = std::fs::read(&path) else { return Ok(None) };
        if ReferenceSetId::digest(&bytes) != id {
            tracing::warn!(path = %path.display(), "local reference set does not match the announced hash; fetching it");
            return Ok(None);
        }
        ReferenceSet::from_bytes(&bytes, usize::MAX).map(Some).map_err(|e| bad(format!("{}: {e}", path.display())))
    })
    .await?
}

/// The reference set `id`, from `path` or fetched from the aggregator (then saved at `path`).
pub(crate) async fn ensure(client: &Client, aggregator: &ParticipantId, federation: &FederationId, path: &PathBuf, id: ReferenceSetId) -> Result<Arc<ReferenceSet>, Error> {
    if let Some(rs) = local_copy(path.clone(), id).await? {
        return Ok(Arc::new(rs));
    }
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let req = Message::RefSetRequest(RefSetRequest { federation: federation.clone(), reference_set: id, offset: buf.len() as u64, len: CHUNK });
        match client.request(aggregator, &req).await? {
            Message::RefSetChunk(RefSetChunk { offset, total_len, data, reference_set, .. }) => {
                if reference_set != id || offset != buf.len() as u64 || total_len > MAX_REFERENCE_BYTES || (data.is_empty() && (buf.len() as u64) < total_len) {
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
    let path = path.clone();
    let rs = tokio::task::spawn_blocking(move || {
        if ReferenceSetId::digest(&buf) != id {
            return Err(bad("fetched reference set does not match its hash"));
        }
        let rs = ReferenceSet::from_bytes(&buf, usize::MAX).map_err(|e| bad(e.to_string()))?;
        learning::fs::atomic_write(&path, &buf)?;
        tracing::info!(bytes = buf.len(), path = %path.display(), "fetched the reference set");
        Ok(rs)
    })
    .await??;
    Ok(Arc::new(rs))
}
