#![no_main]
//! Decoding, opening and reading arbitrary bytes must never panic, and must refuse what it
//! cannot read with an error.
//!
//! Two ways in: the input as a whole frame off the wire (most inputs stop at the envelope or its
//! signature), and the input as a kind byte and a body that a fixed test key signs, so that body
//! decoding, structural validation and soft-label decoding see fuzzed bytes behind a valid
//! signature, as they would from a roster member.

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use protocol::{Identity, Limits, Message, MessageKind, ParticipantId, ReferenceSet, SignedEnvelope};

/// The fuzzer's own roster member.
static MEMBER: LazyLock<Identity> = LazyLock::new(|| Identity::from_seed([7; 32]).expect("a fixed seed makes a key"));

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_message_bytes: 1 << 20, ..Limits::default() };
    // A frame off the wire.
    if let Ok(env) = SignedEnvelope::from_bytes(data, &limits) {
        let peer = env.signer;
        let _ = env.open(&peer, &limits);
        let _ = env.open(&ParticipantId([0; 32]), &limits);
    }
    // A signed body: the first byte picks the kind (every known kind, and one unknown).
    if let Some((&kind, body)) = data.split_first() {
        let kind = kind % (MessageKind::ALL.len() as u8 + 2);
        let env = SignedEnvelope::seal_raw(kind, body.to_vec(), &MEMBER);
        let opened = env.open(&MEMBER.id(), &limits);
        // The same envelope through the wire encoding opens the same way.
        if let Ok(bytes) = env.to_bytes()
            && let Ok(back) = SignedEnvelope::from_bytes(&bytes, &limits)
        {
            assert_eq!(back.open(&MEMBER.id(), &limits).is_ok(), opened.is_ok(), "the wire encoding changes what opens");
        }
        match opened {
            Ok(Message::Submission(s)) => {
                let _ = s.labels.decode(&limits);
            }
            Ok(Message::Consensus(c)) => {
                let _ = c.labels.decode(&limits);
            }
            Ok(Message::RoundAnnouncement(a)) => {
                let _ = a.selection.resolve(a.reference_samples);
                let _ = a.digest();
            }
            _ => {}
        }
    }
    let _ = ReferenceSet::from_bytes(data, 1 << 20);
});
