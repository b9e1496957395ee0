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
    let mut v: Vec<f32> =
        (0..samples * classes).map(|i| (((i as u32).wrapping_mul(2654435761) ^ salt) % 1000) as f32 + 1.0).collect();
    for row in v.chunks_exact_mut(classes) {
        let s: f32 = row.iter().sum();
        row.iter_mut().for_each(|p| *p /= s);
    }
    v
}

fn encoding() -> impl Strategy<Value = Encoding> {
    proptest::sample::select(Encoding::ALL.to_vec())
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
        Just(RefusalReason::BudgetSpent),
        Just(RefusalReason::DataMismatch),
    ]
}

/// Every kind of message, with random but valid contents (one arm a kind: as long as the list of kinds).
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
            |(round, reference_set, reference_samples, classes, ok, r, sample_count_wanted)| Message::JoinReply(
                JoinReply {
                    federation: fed(),
                    outcome: if ok {
                        Ok(JoinAccepted {
                            current_round: round,
                            reference_set,
                            reference_samples,
                            classes,
                            sample_count_wanted,
                        })
                    } else {
                        Err(r)
                    },
                    detail: "ok".into()
                }
            )
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
                    secure: None,
                })
            }
        ),
        (
            any::<u64>(),
            rid.clone(),
            1usize..50,
            2usize..12,
            encoding(),
            0.1f32..20.0,
            proptest::option::of(1u64..),
            any::<[u8; 32]>()
        )
            .prop_map(
                |(round, reference_set, samples, classes, enc, temperature, local_samples, announcement)| {
                    Message::Submission(Submission {
                        federation: fed(),
                        round,
                        announcement: AnnouncementDigest(announcement),
                        reference_set,
                        temperature,
                        local_samples,
                        labels: SoftLabels::encode(&probs(samples, classes, round as u32), samples, classes, enc)
                            .unwrap(),
                        abstained: (round % 2 == 0).then(|| {
                            Mask::from_bools(&(0..samples as u64).map(|i| (i + round) % 3 == 0).collect::<Vec<_>>())
                        }),
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
                counts: (0..samples).map(|i| if i % 3 == 0 { 0 } else { 1 + (i % 3) as u16 }).collect(),
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
        (any::<u64>(), ".{0,40}").prop_map(|(rounds, detail)| Message::Finished(Finished {
            federation: fed(),
            rounds,
            detail
        })),
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
    fn every_message_fits_its_kinds_cap_and_its_kind_is_read_from_the_first_bytes(msg in message()) {
        let bytes = sealed(&msg, &identity(1));
        let limits = Limits::default();
        prop_assert!(bytes.len() <= limits.frame_cap(Some(msg.kind())), "{:?}: {} bytes", msg.kind(), bytes.len());
        prop_assert_eq!(codec::peek_kind(&bytes[..codec::ENVELOPE_HEADER_BYTES]), Some(msg.kind()));
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
    assert!(matches!(
        SignedEnvelope::from_bytes(&big, &limits),
        Err(protocol::Error::TooLarge { len: 1025, cap: 1024 })
    ));
}

/// A submission is capped at what the receiver's shape admits plus a kibibyte for its other
/// fields, and small kinds at that kibibyte: anything larger is refused before it is decoded,
/// and a matrix of any other shape that fits the frame is refused by its shape.
#[test]
fn each_kind_is_capped_at_its_own_size() {
    let alice = identity(1);
    let (samples, classes) = (1000, 10);
    for encoding in Encoding::ALL {
        let limits =
            Limits { max_samples: samples, max_classes: classes, encoding: Some(encoding), ..Limits::default() };
        let sub = |rows: usize| {
            let labels =
                SoftLabels::encode(&probs(rows, classes as usize, 3), rows, classes as usize, encoding).unwrap();
            // The largest values of every other field: the longest federation id and u64s.
            let federation = FederationId::new("f".repeat(ids::MAX_FEDERATION_ID_LEN)).unwrap();
            let m = Message::Submission(Submission {
                federation,
                round: u64::MAX,
                announcement: AnnouncementDigest([7; 32]),
                reference_set: ReferenceSetId([9; 32]),
                temperature: 2.0,
                local_samples: Some(u64::MAX),
                labels,
                abstained: None,
            });
            sealed(&m, &alice)
        };
        let exact = sub(samples as usize);
        let opened = SignedEnvelope::from_bytes(&exact, &limits).unwrap().open(&alice.id(), &limits);
        assert!(matches!(opened, Ok(Message::Submission(_))), "{encoding}: {opened:?}");
        // Rows for more than the frame's kibibyte of slack do not fit it; one row more fits, and
        // is refused by shape.
        let more = 100.max((8 * 1200usize).div_ceil(encoding.row_bits(classes as usize)));
        let over = sub(samples as usize + more);
        assert!(over.len() > limits.frame_cap(Some(MessageKind::Submission)), "{encoding}: {} bytes fit", over.len());
        assert!(matches!(SignedEnvelope::from_bytes(&over, &limits), Err(Error::TooLarge { .. })));
        let one_more =
            SignedEnvelope::from_bytes(&sub(samples as usize + 1), &limits).unwrap().open(&alice.id(), &limits);
        assert_eq!(one_more.unwrap_err().refusal_reason(), RefusalReason::WrongShape, "{encoding}");
        // A matrix in another encoding than the receiver's is refused by shape too.
        let other = Encoding::ALL.into_iter().find(|e| *e != encoding).unwrap();
        let labels = SoftLabels::encode(&probs(10, classes as usize, 3), 10, classes as usize, other).unwrap();
        let m = Message::Submission(Submission {
            federation: fed(),
            round: 1,
            announcement: AnnouncementDigest([7; 32]),
            reference_set: ReferenceSetId([9; 32]),
            temperature: 2.0,
            local_samples: Some(1),
            labels,
            abstained: None,
        });
        let opened = SignedEnvelope::from_bytes(&sealed(&m, &alice), &limits).unwrap().open(&alice.id(), &limits);
        assert_eq!(
            opened.unwrap_err().refusal_reason(),
            RefusalReason::WrongShape,
            "{other} to a receiver of {encoding}"
        );
    }
    // The smallest kinds: a hello with the longest allowed texts fits; one padded to 2 KiB does not.
    let limits = Limits::default();
    let hello = |agent: String| {
        let federation = FederationId::new("f".repeat(ids::MAX_FEDERATION_ID_LEN)).unwrap();
        sealed(
            &Message::Hello(Hello { federation, participant: alice.id(), protocol_version: PROTOCOL_VERSION, agent }),
            &alice,
        )
    };
    assert!(receive(&hello("a".repeat(message::MAX_DETAIL_LEN)), &alice.id()).is_ok());
    let big = hello("a".repeat(2048));
    assert_eq!(limits.frame_cap(Some(MessageKind::Hello)), payload::SMALL_BODY_BYTES + payload::ENVELOPE_OVERHEAD);
    assert!(matches!(SignedEnvelope::from_bytes(&big, &limits), Err(Error::TooLarge { .. })));
    assert!(limits.frame_cap(Some(MessageKind::Hello)) < limits.frame_cap(Some(MessageKind::Submission)) / 1000);
    // Unknown kinds and versions get the smallest cap of all.
    // The envelope starts with the protocol version (one varint byte while it is below 251)
    // and the kind byte.
    let v = u8::try_from(PROTOCOL_VERSION).unwrap();
    assert_eq!(codec::peek_kind(&[v, 200]), None);
    assert_eq!(codec::peek_kind(&[v + 1, 4]), None, "another version");
    assert_eq!(codec::peek_kind(&[v]), None, "too short to tell");
    assert_eq!(codec::peek_kind(&[v, 4]), Some(MessageKind::Submission));
}

/// A text or byte string whose length prefix claims more than the input holds is refused when
/// the bytes are missing; the claimed length is never allocated first (it is borrowed from the
/// input, then copied).
#[test]
fn claimed_lengths_beyond_the_input_are_malformed() {
    let alice = identity(1);
    let hello = Message::Hello(Hello {
        federation: fed(),
        participant: alice.id(),
        protocol_version: PROTOCOL_VERSION,
        agent: "abc".into(),
    });
    let mut body = codec::encode_body(&hello).unwrap();
    // The agent is the last field: replace its 1-byte length (3) by a varint of 60 MiB.
    let n = body.len();
    body.truncate(n - 4);
    body.push(0xFC);
    body.extend_from_slice(&(60u32 << 20).to_le_bytes());
    body.extend_from_slice(b"abc");
    let env = SignedEnvelope::seal_raw(MessageKind::Hello as u8, body, &alice);
    let limits = Limits::default();
    assert!(matches!(env.open(&alice.id(), &limits), Err(Error::Malformed(_))));
    // The same for the envelope's own body and for a local file.
    let mut bytes = vec![1u8, 4];
    bytes.extend_from_slice(&[7u8; 32]);
    bytes.push(0xFC);
    bytes.extend_from_slice(&(60u32 << 20).to_le_bytes());
    bytes.extend_from_slice(&[0u8; 100]);
    assert!(matches!(SignedEnvelope::from_bytes(&bytes, &limits), Err(Error::Malformed(_))));
    assert!(codec::from_file_bytes::<Vec<u8>>(&bytes[34..]).is_err());
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
    let msg = Message::Receipt(Receipt {
        federation: fed(),
        round: 1,
        status: ReceiptStatus::Accepted,
        detail: String::new(),
    });
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
    assert_eq!(
        SignedEnvelope::seal_raw(msg.kind() as u8, body, &alice).open(&alice.id(), &Limits::default()).unwrap(),
        msg
    );
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
        abstained: None,
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
        abstained: None,
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
        secure: None,
    };
    let good = Submission {
        federation: fed(),
        round: 3,
        announcement: ann.digest(),
        reference_set: ReferenceSetId([9; 32]),
        temperature: 2.0,
        local_samples: Some(5),
        labels: SoftLabels::encode(&probs(4, 3, 1), 4, 3, Encoding::Q8).unwrap(),
        abstained: None,
    };
    good.check_against(&ann).unwrap();
    let code = |s: Submission| s.check_against(&ann).unwrap_err().refusal_reason();
    assert_eq!(code(Submission { round: 2, ..good.clone() }), RefusalReason::WrongRound);
    assert_eq!(
        code(Submission { reference_set: ReferenceSetId([8; 32]), ..good.clone() }),
        RefusalReason::WrongReferenceSet
    );
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
    // An abstention mask covers exactly the announced samples, with no stray bit; abstaining
    // on every sample is a valid answer.
    Submission { abstained: Some(Mask::from_bools(&[true; 4])), ..good.clone() }.check_against(&ann).unwrap();
    assert_eq!(
        code(Submission { abstained: Some(Mask::from_bools(&[true; 9])), ..good.clone() }),
        RefusalReason::WrongShape
    );
    assert_eq!(
        code(Submission { abstained: Some(Mask::from_bytes(vec![0b1_0000])), ..good.clone() }),
        RefusalReason::InvalidValues
    );
    let other = FederationId::new("other").unwrap();
    assert_eq!(code(Submission { federation: other, ..good }), RefusalReason::WrongFederation);
}

#[test]
fn a_consensus_with_inconsistent_counts_is_refused() {
    let samples = 4;
    let good = Consensus {
        federation: fed(),
        round: 1,
        reference_set: ReferenceSetId([9; 32]),
        selection: SampleSelection::Seeded { seed: 1, count: samples as u32 },
        temperature: 2.0,
        labels: SoftLabels::encode(&probs(samples, 3, 1), samples, 3, Encoding::Q8).unwrap(),
        weights: vec![255, 255, 0, 255],
        participants: 3,
        counts: vec![3, 1, 0, 2],
    };
    let limits = Limits::default();
    Message::Consensus(good.clone()).validate(&limits).unwrap();
    let reason = |c: Consensus| Message::Consensus(c).validate(&limits).unwrap_err().refusal_reason();
    assert_eq!(reason(Consensus { counts: vec![3, 1, 0], ..good.clone() }), RefusalReason::WrongShape);
    assert_eq!(
        reason(Consensus { counts: vec![3, 4, 0, 2], ..good.clone() }),
        RefusalReason::InvalidValues,
        "more contributors than participants"
    );
    assert_eq!(
        reason(Consensus { counts: vec![0, 1, 0, 2], ..good }),
        RefusalReason::InvalidValues,
        "a sample nobody contributed to must be masked"
    );
}

/// A consensus whose every sample weighs 1 and has every participant may leave its weights and
/// counts out (`round.compact_consensus`): the receiver reads the same values, in fewer bytes;
/// any other consensus is left as it is, and half a compact form is refused.
#[test]
fn a_compact_consensus_reads_as_the_full_one() {
    let samples = 250;
    let full = Consensus {
        federation: fed(),
        round: 1,
        reference_set: ReferenceSetId([9; 32]),
        selection: SampleSelection::Seeded { seed: 1, count: samples as u32 },
        temperature: 2.0,
        labels: SoftLabels::encode(&probs(samples, 3, 1), samples, 3, Encoding::Top1).unwrap(),
        weights: vec![255; samples],
        participants: 10,
        counts: vec![10; samples],
    };
    let limits = Limits::default();
    let compact = full.clone().compact();
    assert!(compact.is_compact());
    assert_eq!(compact.weights(), full.weights());
    assert!((0..=samples).all(|i| compact.count(i) == full.count(i)));
    let (a, b) = (Message::Consensus(full.clone()), Message::Consensus(compact.clone()));
    a.validate(&limits).unwrap();
    b.validate(&limits).unwrap();
    let alice = identity(1);
    assert!(sealed(&b, &alice).len() + 2 * samples <= sealed(&a, &alice).len());
    let opened = SignedEnvelope::from_bytes(&sealed(&b, &alice), &limits).unwrap().open(&alice.id(), &limits).unwrap();
    assert_eq!(opened, b);
    // A masked sample, or one a node abstained on, keeps the full form.
    let mut masked = full.clone();
    masked.weights[3] = 0;
    assert_eq!(masked.clone().compact(), masked);
    let abstained = Consensus { counts: [vec![9], vec![10; samples - 1]].concat(), ..full.clone() };
    assert_eq!(abstained.clone().compact(), abstained);
    // Half a compact form, or one without participants, is refused.
    let reason = |c: Consensus| Message::Consensus(c).validate(&limits).unwrap_err().refusal_reason();
    assert_eq!(reason(Consensus { weights: vec![], ..full.clone() }), RefusalReason::WrongShape);
    assert_eq!(reason(Consensus { counts: vec![], ..full.clone() }), RefusalReason::WrongShape);
    assert_eq!(reason(Consensus { participants: 0, ..compact }), RefusalReason::InvalidValues);
}

/// Reason codes travel as their position in [`RefusalReason`]: a new reason is appended, and
/// every older one keeps its code (a peer built before it reads the older ones unchanged).
#[test]
fn refusal_reasons_keep_their_wire_codes() {
    use RefusalReason::*;
    let reasons = [
        WrongVersion,
        WrongFederation,
        NotOnRoster,
        Late,
        Duplicate,
        WrongRound,
        WrongReferenceSet,
        WrongShape,
        InvalidValues,
        BadSignature,
        Malformed,
        TooLarge,
        Unavailable,
        Policy,
        WrongAnnouncement,
        BudgetSpent,
        DataMismatch,
    ];
    for (code, reason) in reasons.into_iter().enumerate() {
        assert_eq!(codec::to_bytes(&reason).unwrap(), vec![code as u8], "{reason:?}");
        assert_eq!(codec::from_bytes::<RefusalReason>(&[code as u8], 8).unwrap(), reason);
    }
}
