//! Round trips, tampering and garbage for every message, through the public API.
#![allow(clippy::unwrap_used)] // tests and benches: a panic is the failure report

use proptest::prelude::*;
use protocol::*;

fn identity(seed: u8) -> Identity {
    Identity::from_seed([seed; 32]).unwrap()
}

fn fed() -> FederationId {
    FederationId::new("test-federation").unwrap()
}

fn probs(samples: usize, classes: usize, salt: u32) -> Vec<f32> {
    let mut v: Vec<f32> = (0..samples * classes)
        .map(|i| (((i as u32).wrapping_mul(2654435761) ^ salt) % 1000) as f32 + 1.0)
        .collect();
    for row in v.chunks_exact_mut(classes) {
        let s: f32 = row.iter().sum();
        row.iter_mut().for_each(|p| *p /= s);
    }
    v
}

fn encoding() -> impl Strategy<Value = Encoding> {
    prop_oneof![Just(Encoding::F32), Just(Encoding::F16), Just(Encoding::Q8)]
}

fn selection() -> impl Strategy<Value = SampleSelection> {
    prop_oneof![
        proptest::collection::vec(0u32..100, 1..20).prop_map(SampleSelection::Indices),
        (any::<u64>(), 1u32..50).prop_map(|(seed, count)| SampleSelection::Seeded { seed, count }),
    ]
}

fn reason() -> impl Strategy<Value = RefusalReason> {
    prop_oneof![
        Just(RefusalReason::Late),
        Just(RefusalReason::Duplicate),
        Just(RefusalReason::WrongRound),
        Just(RefusalReason::WrongShape),
        Just(RefusalReason::InvalidValues),
        Just(RefusalReason::BadSignature),
        Just(RefusalReason::NotOnRoster),
        Just(RefusalReason::Policy),
        Just(RefusalReason::WrongAnnouncement),
    ]
}

/// Every kind of message, with random but valid contents.
fn message() -> impl Strategy<Value = Message> {
    let rid = any::<[u8; 32]>().prop_map(ReferenceSetId);
    prop_oneof![
        (any::<[u8; 32]>(), "[a-z0-9 ./-]{0,40}").prop_map(|(k, agent)| Message::Hello(Hello {
            federation: fed(),
            participant: ParticipantId(k),
            protocol_version: PROTOCOL_VERSION,
            agent
        })),
        (any::<u64>(), rid.clone(), 100u32..1000, 2u32..20, any::<bool>(), reason(), any::<bool>()).prop_map(
            |(round, reference_set, reference_samples, classes, ok, r, sample_count_wanted)| Message::JoinReply(JoinReply {
                federation: fed(),
                outcome: if ok {
                    Ok(JoinAccepted { current_round: round, reference_set, reference_samples, classes, sample_count_wanted })
                } else {
                    Err(r)
                },
                detail: "ok".into()
            })
        ),
        (any::<u64>(), rid.clone(), selection(), 2u32..20, 0.1f32..20.0, any::<u64>(), encoding()).prop_map(
            |(round, reference_set, selection, classes, temperature, deadline_unix_ms, encoding)| {
                Message::RoundAnnouncement(RoundAnnouncement {
                    federation: fed(),
                    round,
                    reference_set,
                    reference_samples: 100,
                    selection,
                    classes,
                    temperature,
                    deadline_unix_ms,
                    encoding,
                })
            }
        ),
        (any::<u64>(), rid.clone(), 1usize..50, 2usize..12, encoding(), 0.1f32..20.0, proptest::option::of(1u64..), any::<[u8; 32]>()).prop_map(
            |(round, reference_set, samples, classes, enc, temperature, local_samples, announcement)| {
                Message::Submission(Submission {
                    federation: fed(),
                    round,
                    announcement: AnnouncementDigest(announcement),
                    reference_set,
                    temperature,
                    local_samples,
                    labels: SoftLabels::encode(&probs(samples, classes, round as u32), samples, classes, enc).unwrap(),
                })
            }
        ),
        (any::<u64>(), rid.clone(), 1usize..50, 2usize..12, encoding(), 0.1f32..20.0).prop_map(
            |(round, reference_set, samples, classes, enc, temperature)| Message::Consensus(Consensus {
                federation: fed(),
                round,
                reference_set,
                selection: SampleSelection::Seeded { seed: round, count: samples as u32 },
                temperature,
                labels: SoftLabels::encode(&probs(samples, classes, 7), samples, classes, enc).unwrap(),
                weights: (0..samples).map(|i| (i % 3) as u8 * 127).collect(),
                participants: 3,
            })
        ),
        (any::<u64>(), prop_oneof![Just(ReceiptStatus::Accepted), reason().prop_map(ReceiptStatus::Refused)]).prop_map(
            |(round, status)| Message::Receipt(Receipt { federation: fed(), round, status, detail: "why".into() })
        ),
        (rid.clone(), any::<u64>(), 1u32..100_000).prop_map(|(reference_set, offset, len)| Message::RefSetRequest(
            RefSetRequest { federation: fed(), reference_set, offset, len }
        )),
        (rid, proptest::collection::vec(any::<u8>(), 0..300)).prop_map(|(reference_set, data)| Message::RefSetChunk(
            RefSetChunk { federation: fed(), reference_set, offset: 10, total_len: 10 + data.len() as u64 + 5, data }
        )),
        (any::<u64>(), ".{0,40}").prop_map(|(rounds, detail)| Message::Finished(Finished { federation: fed(), rounds, detail })),
    ]
}

fn sealed(msg: &Message, who: &Identity) -> Vec<u8> {
    SignedEnvelope::seal(msg, who).unwrap().to_bytes().unwrap()
}

fn receive(bytes: &[u8], peer: &ParticipantId) -> Result<Message> {
    let limits = Limits::default();
    SignedEnvelope::from_bytes(bytes, &limits)?.open(peer, &limits)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn every_message_round_trips_through_a_signed_envelope(msg in message()) {
        let alice = identity(1);
        let bytes = sealed(&msg, &alice);
        let back = receive(&bytes, &alice.id()).unwrap();
        prop_assert_eq!(back, msg);
    }

    #[test]
    fn flipping_any_byte_breaks_the_envelope(msg in message(), pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let alice = identity(1);
        let mut bytes = sealed(&msg, &alice);
        let i = pos.index(bytes.len());
        bytes[i] ^= 1 << bit;
        prop_assert!(receive(&bytes, &alice.id()).is_err(), "flip at byte {} bit {} was accepted", i, bit);
    }

    #[test]
    fn a_message_signed_by_another_key_is_refused(msg in message()) {
        let (alice, mallory) = (identity(1), identity(2));
        let bytes = sealed(&msg, &mallory);
        // Mallory's valid signature, delivered over Alice's authenticated connection.
        let err = receive(&bytes, &alice.id()).unwrap_err();
        let mismatch = matches!(err, protocol::Error::SignerMismatch { .. });
        prop_assert!(mismatch, "unexpected error {:?}", err);
        prop_assert_eq!(err.refusal_reason(), RefusalReason::BadSignature);
    }

    #[test]
    fn random_bytes_and_truncations_are_errors_not_panics(msg in message(), garbage in proptest::collection::vec(any::<u8>(), 0..4096), cut in any::<prop::sample::Index>()) {
        let alice = identity(1);
        prop_assert!(receive(&garbage, &alice.id()).is_err());
        let bytes = sealed(&msg, &alice);
        let n = cut.index(bytes.len());
        prop_assert!(receive(&bytes[..n], &alice.id()).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        prop_assert!(matches!(receive(&longer, &alice.id()), Err(protocol::Error::TrailingBytes(1))));
    }
}

#[test]
fn oversized_input_is_refused_before_decoding() {
    let limits = Limits { max_message_bytes: 1024, ..Limits::default() };
    let big = vec![0u8; 1025];
    assert!(matches!(SignedEnvelope::from_bytes(&big, &limits), Err(protocol::Error::TooLarge { len: 1025, cap: 1024 })));
}

#[test]
fn a_length_prefix_claiming_gigabytes_does_not_allocate_them() {
    // version 2, kind 4, signer, then a body length prefix of 2^40 (varint 0xFD + u64).
    let mut bytes = vec![PROTOCOL_VERSION as u8, 4];
    bytes.extend_from_slice(&[0u8; 32]);
    bytes.push(0xFD);
    bytes.extend_from_slice(&(1u64 << 40).to_le_bytes());
    let err = SignedEnvelope::from_bytes(&bytes, &Limits::default()).unwrap_err();
    assert!(matches!(err, protocol::Error::Malformed(_)), "{err:?}");
}

#[test]
fn wrong_version_and_unknown_kind_are_refused_with_codes() {
    let alice = identity(1);
    let msg = Message::Receipt(Receipt { federation: fed(), round: 1, status: ReceiptStatus::Accepted, detail: String::new() });
    let mut env = SignedEnvelope::seal(&msg, &alice).unwrap();
    env.version = 99;
    let err = env.open(&alice.id(), &Limits::default()).unwrap_err();
    assert_eq!(err.refusal_reason(), RefusalReason::WrongVersion);

    // A kind byte that names no message, validly signed: refused for its kind, not its signature.
    let body = codec::encode_body(&msg).unwrap();
    let unknown = SignedEnvelope::seal_raw(42, body.clone(), &alice);
    assert_eq!(unknown.verify(), Ok(()));
    let err = unknown.open(&alice.id(), &Limits::default()).unwrap_err();
    assert_eq!(err, Error::Kind(42));
    assert_eq!(err.refusal_reason(), RefusalReason::Malformed);
    // The same body under its own kind opens: only the kind was wrong.
    assert_eq!(SignedEnvelope::seal_raw(msg.kind() as u8, body, &alice).open(&alice.id(), &Limits::default()).unwrap(), msg);
    // A kind changed after signing breaks the signature, which is checked first.
    let mut env = SignedEnvelope::seal(&msg, &alice).unwrap();
    env.kind = 42;
    assert_eq!(env.open(&alice.id(), &Limits::default()).unwrap_err(), Error::BadSignature);
}

#[test]
fn non_finite_values_and_temperatures_are_refused_as_invalid() {
    let alice = identity(1);
    let bad = SoftLabels {
        samples: 1,
        classes: 2,
        encoding: Encoding::F32,
        data: [f32::INFINITY.to_le_bytes(), 0f32.to_le_bytes()].concat(),
    };
    let msg = Message::Submission(Submission {
        federation: fed(),
        round: 1,
        announcement: AnnouncementDigest([0; 32]),
        reference_set: ReferenceSetId([0; 32]),
        temperature: 2.0,
        local_samples: Some(10),
        labels: bad,
    });
    // The envelope is sound; the values are refused when they are read.
    let Message::Submission(sub) = receive(&sealed(&msg, &alice), &alice.id()).unwrap() else { panic!("kind") };
    let err = sub.labels.decode(&Limits::default()).unwrap_err();
    assert_eq!(err.refusal_reason(), RefusalReason::InvalidValues);

    let msg = Message::Submission(Submission {
        federation: fed(),
        round: 1,
        announcement: AnnouncementDigest([0; 32]),
        reference_set: ReferenceSetId([0; 32]),
        temperature: f32::NAN,
        local_samples: Some(10),
        labels: SoftLabels::encode(&[0.5, 0.5], 1, 2, Encoding::F32).unwrap(),
    });
    let err = receive(&sealed(&msg, &alice), &alice.id()).unwrap_err();
    assert!(matches!(err, protocol::Error::Field { field: "temperature", .. }));
}

#[test]
fn submissions_are_checked_against_the_announcement() {
    let ann = RoundAnnouncement {
        federation: fed(),
        round: 3,
        reference_set: ReferenceSetId([9; 32]),
        reference_samples: 100,
        selection: SampleSelection::Seeded { seed: 1, count: 4 },
        classes: 3,
        temperature: 2.0,
        deadline_unix_ms: 0,
        encoding: Encoding::Q8,
    };
    let good = Submission {
        federation: fed(),
        round: 3,
        announcement: ann.digest(),
        reference_set: ReferenceSetId([9; 32]),
        temperature: 2.0,
        local_samples: Some(5),
        labels: SoftLabels::encode(&probs(4, 3, 1), 4, 3, Encoding::Q8).unwrap(),
    };
    good.check_against(&ann).unwrap();
    let code = |s: Submission| s.check_against(&ann).unwrap_err().refusal_reason();
    assert_eq!(code(Submission { round: 2, ..good.clone() }), RefusalReason::WrongRound);
    assert_eq!(code(Submission { reference_set: ReferenceSetId([8; 32]), ..good.clone() }), RefusalReason::WrongReferenceSet);
    assert_eq!(code(Submission { temperature: 1.0, ..good.clone() }), RefusalReason::WrongShape);
    let wrong_rows = SoftLabels::encode(&probs(5, 3, 1), 5, 3, Encoding::Q8).unwrap();
    assert_eq!(code(Submission { labels: wrong_rows, ..good.clone() }), RefusalReason::WrongShape);
    let wrong_enc = SoftLabels::encode(&probs(4, 3, 1), 4, 3, Encoding::F32).unwrap();
    assert_eq!(code(Submission { labels: wrong_enc, ..good.clone() }), RefusalReason::WrongShape);
    // Bound to its announcement: an answer to another question of the same round is refused,
    // an answer to the same question with another deadline is not.
    let reseeded = RoundAnnouncement { selection: SampleSelection::Seeded { seed: 2, count: 4 }, ..ann.clone() };
    assert_eq!(code(Submission { announcement: reseeded.digest(), ..good.clone() }), RefusalReason::WrongAnnouncement);
    let later = RoundAnnouncement { deadline_unix_ms: 5_000, ..ann.clone() };
    Submission { announcement: later.digest(), ..good.clone() }.check_against(&ann).unwrap();
    // A sample count is optional, but never 0.
    Submission { local_samples: None, ..good.clone() }.check_against(&ann).unwrap();
    assert_eq!(code(Submission { local_samples: Some(0), ..good.clone() }), RefusalReason::InvalidValues);
    let other = FederationId::new("other").unwrap();
    assert_eq!(code(Submission { federation: other, ..good }), RefusalReason::WrongFederation);
}
