//! Fetching the public reference set from the aggregator, chunk by chunk.

use serde::{Deserialize, Serialize};

use crate::ids::{FederationId, ReferenceSetId};

/// Request for a chunk of the reference set's canonical bytes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RefSetRequest {
    /// Federation.
    pub federation: FederationId,
    /// Reference set wanted.
    pub reference_set: ReferenceSetId,
    /// Byte offset.
    pub offset: u64,
    /// Bytes wanted (at most [`MAX_CHUNK_BYTES`](crate::wire::MAX_CHUNK_BYTES)).
    pub len: u32,
}

/// A chunk of the reference set's canonical bytes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RefSetChunk {
    /// Federation.
    pub federation: FederationId,
    /// Reference set.
    pub reference_set: ReferenceSetId,
    /// Byte offset of `data`.
    pub offset: u64,
    /// Total length of the canonical bytes.
    pub total_len: u64,
    /// The bytes.
    #[serde(with = "crate::bounded::bytes")]
    pub data: Vec<u8>,
}
