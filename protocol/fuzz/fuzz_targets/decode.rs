#![no_main]
//! Decoding and opening arbitrary bytes must never panic.

use libfuzzer_sys::fuzz_target;
use protocol::{Limits, ParticipantId, ReferenceSet, SignedEnvelope};

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_message_bytes: 1 << 20, ..Limits::default() };
    if let Ok(env) = SignedEnvelope::from_bytes(data, &limits) {
        let peer = env.signer;
        let _ = env.open(&peer, &limits);
        let _ = env.open(&ParticipantId([0; 32]), &limits);
    }
    let _ = ReferenceSet::from_bytes(data, 1 << 20);
});
