//! A real aggregator on 127.0.0.1 and a real libp2p client that misbehaves: every bad message is
//! refused with a reason code, and the aggregator keeps running. The client is built with larger
//! size caps than the aggregator's, so that what is refused is refused by the aggregator, not by
//! the client's own codec. Wrong configs fail at start naming the field.
#![allow(clippy::unwrap_used)] // tests and benches: a panic is the failure report

mod support;

use std::time::Duration;

use aggregator::Aggregator;
use aggregator::config::AggregatorConfig;
use protocol::*;
use support::{accept_everything, dir, member, setup};
use tokio_util::sync::CancellationToken;

fn refusal(m: Message) -> RefusalReason {
    match m {
        Message::Receipt(Receipt { status: ReceiptStatus::Refused(r), .. }) => r,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_message_is_refused_with_a_reason_and_the_aggregator_keeps_going() {
    let tmp = dir("msgs");
    let d = tmp.path();
    let node_key = d.join("node.key");
    // The two other roster members submit only at the end: until then the round stays open, so
    // the duplicate below meets an open round and the aggregator is still running.
    let cfg = setup(d, &node_key);
    let shutdown = CancellationToken::new();
    let agg = Aggregator::start(cfg, &shutdown).await.unwrap();
    let agg_id = agg.id();
    let addr = agg.listen_addrs()[0].clone();
    let task = tokio::spawn(agg.run());

    let me = net::keys::read(&node_key).unwrap();
    let my_id = me.id();
    // This client's codec sends (and reads) frames of any size up to the default caps, far
    // above the aggregator's, which are those of its round's shape.
    let net_cfg = net::NetConfig::new(FederationId::new("bad-input").unwrap(), vec![agg_id]);
    let (client, mut events, _network) = net::spawn(me, net_cfg, &shutdown).unwrap();
    client.dial(addr.clone().with(net::multiaddr::Protocol::P2p(net::peer_id(&agg_id)))).await.unwrap();
    let fed = FederationId::new("bad-input").unwrap();
    let hello = Message::Hello(Hello {
        federation: fed.clone(),
        participant: my_id,
        protocol_version: PROTOCOL_VERSION,
        agent: "test".into(),
    });
    assert!(matches!(
        client.request(&agg_id, &hello).await.unwrap(),
        Message::JoinReply(JoinReply { outcome: Ok(_), .. })
    ));
    // The announcement of round 1 arrives as a request.
    let ann = loop {
        match tokio::time::timeout(Duration::from_secs(10), events.recv()).await.unwrap().unwrap() {
            net::Event::Request { message: Message::RoundAnnouncement(a), responder, .. } => {
                responder
                    .respond(Message::Receipt(Receipt {
                        federation: fed.clone(),
                        round: a.round,
                        status: ReceiptStatus::Accepted,
                        detail: String::new(),
                    }))
                    .await
                    .unwrap();
                break a;
            }
            _ => continue,
        }
    };
    // From now on, answer whatever the aggregator asks (the consensus) as a node would.
    accept_everything(events, fed.clone());
    let limits = Limits::default();
    let raw = |bytes: Vec<u8>| {
        let client = client.clone();
        async move {
            SignedEnvelope::from_bytes(&client.request_raw(&agg_id, bytes).await.unwrap(), &limits)
                .unwrap()
                .open(&agg_id, &limits)
                .unwrap()
        }
    };
    // Garbage.
    assert_eq!(refusal(raw(vec![1, 2, 3, 4, 5]).await), RefusalReason::Malformed);
    // Signed by a key that is not the connection's.
    let other = Identity::from_seed([9; 32]).unwrap();
    let forged = SignedEnvelope::seal(&hello, &other).unwrap().to_bytes().unwrap();
    assert_eq!(refusal(raw(forged).await), RefusalReason::BadSignature);
    // A flipped bit.
    let mut flipped = SignedEnvelope::seal(&hello, &net::keys::read(&node_key).unwrap()).unwrap().to_bytes().unwrap();
    let n = flipped.len();
    flipped[n - 70] ^= 1;
    assert_eq!(refusal(raw(flipped).await), RefusalReason::BadSignature);
    // A kind byte that names no message, validly signed by the connection's key: refused for its
    // kind (Malformed), after the signature was accepted.
    let me = net::keys::read(&node_key).unwrap();
    let body = codec::encode_body(&hello).unwrap();
    let unknown = SignedEnvelope::seal_raw(200, body.clone(), &me);
    assert_eq!(unknown.verify(), Ok(()));
    assert_eq!(refusal(raw(unknown.to_bytes().unwrap()).await), RefusalReason::Malformed);
    // Control: the same body, signed the same way under its own kind, is a hello the aggregator
    // accepts (it answers a node that joins again with its reply and the open round).
    let known = SignedEnvelope::seal_raw(MessageKind::Hello as u8, body, &me).to_bytes().unwrap();
    assert!(matches!(raw(known).await, Message::JoinReply(JoinReply { outcome: Ok(_), .. })));

    let rows = ann.selection.len();
    let probs: Vec<f32> = (0..rows * 3).map(|i| if i % 3 == 0 { 0.8 } else { 0.1 }).collect();
    let bound = ann.digest();
    let sub = |round, labels: SoftLabels| {
        Message::Submission(Submission {
            federation: fed.clone(),
            round,
            announcement: bound,
            reference_set: ann.reference_set,
            temperature: 2.0,
            local_samples: Some(5),
            labels,
            abstained: None,
        })
    };
    let good = SoftLabels::encode(&probs, rows, 3, Encoding::F32).unwrap();
    let code = |m: Message| refusal(m);
    assert_eq!(code(client.request(&agg_id, &sub(7, good.clone())).await.unwrap()), RefusalReason::WrongRound);
    // An answer to another question of this round (the same round, reseeded) is not counted.
    let SampleSelection::Seeded { seed, count } = ann.selection else {
        panic!("the aggregator draws seeded selections")
    };
    let reseeded =
        RoundAnnouncement { selection: SampleSelection::Seeded { seed: seed.wrapping_add(1), count }, ..ann.clone() };
    let Message::Submission(honest) = sub(1, good.clone()) else { unreachable!() };
    let stale = Message::Submission(Submission { announcement: reseeded.digest(), ..honest });
    assert_eq!(code(client.request(&agg_id, &stale).await.unwrap()), RefusalReason::WrongAnnouncement);
    let wrong_shape = SoftLabels::encode(&probs[..(rows - 1) * 3], rows - 1, 3, Encoding::F32).unwrap();
    assert_eq!(code(client.request(&agg_id, &sub(1, wrong_shape)).await.unwrap()), RefusalReason::WrongShape);
    let mut nan = good.clone();
    nan.data[0..4].copy_from_slice(&f32::NAN.to_le_bytes());
    assert_eq!(code(client.request(&agg_id, &sub(1, nan)).await.unwrap()), RefusalReason::InvalidValues);
    let q8 = SoftLabels::encode(&probs, rows, 3, Encoding::Q8).unwrap();
    assert_eq!(code(client.request(&agg_id, &sub(1, q8)).await.unwrap()), RefusalReason::WrongShape);
    // Oversized. Each kind has its own cap, and the aggregator's submission cap is its round's
    // shape (10 × 3 in f32) plus a kibibyte. A submission frame of exactly that cap is read,
    // then refused as malformed with a receipt; one byte more, or a hello frame that would fit a
    // submission but not a hello, is refused by the aggregator's codec before the rest is read:
    // the stream is closed without an answer. This client's own codec allows all of them.
    let agg_limits = Limits { max_samples: 10, max_classes: 3, encoding: Some(Encoding::F32), ..Limits::default() };
    let frame = |kind: MessageKind, n: usize| {
        let mut v = vec![0u8; n];
        v[0] = PROTOCOL_VERSION as u8;
        v[1] = kind as u8;
        v
    };
    let sub_cap = agg_limits.frame_cap(Some(MessageKind::Submission));
    assert!(sub_cap < 2048, "{sub_cap}");
    assert_eq!(refusal(raw(frame(MessageKind::Submission, sub_cap)).await), RefusalReason::Malformed);
    let hello_cap = agg_limits.frame_cap(Some(MessageKind::Hello));
    for over in [frame(MessageKind::Submission, sub_cap + 1), frame(MessageKind::Hello, hello_cap + 1)] {
        let answer = tokio::time::timeout(Duration::from_secs(30), client.request_raw(&agg_id, over))
            .await
            .expect("the aggregator closes the stream at once");
        assert!(answer.is_err(), "a frame over its kind's cap was answered: {answer:?}");
    }
    // The aggregator is still there: a good submission is accepted, a duplicate refused.
    let accepted = |m: Message| match m {
        Message::Receipt(r) => assert_eq!(r.status, ReceiptStatus::Accepted, "{}", r.detail),
        other => panic!("{other:?}"),
    };
    accepted(client.request(&agg_id, &sub(1, good.clone())).await.unwrap());
    assert_eq!(refusal(client.request(&agg_id, &sub(1, good.clone())).await.unwrap()), RefusalReason::Duplicate);
    // The two other members submit: the round closes with all three.
    let agg_addr = addr.with(net::multiaddr::Protocol::P2p(net::peer_id(&agg_id)));
    for name in ["m1", "m2"] {
        let member = member(&d.join(format!("{name}.key")), agg_addr.clone(), agg_id, &fed, &shutdown).await;
        accepted(member.request(&agg_id, &sub(1, good.clone())).await.unwrap());
    }
    let summary = tokio::time::timeout(Duration::from_secs(60), task).await.unwrap().unwrap().unwrap();
    assert_eq!(summary.rounds.len(), 1);
    assert_eq!(summary.rounds[0].participants, vec!["m1", "m2", "n"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_configs_fail_at_start_naming_the_field() {
    let tmp = dir("cfg");
    let d = tmp.path();
    let cfg = setup(d, &d.join("node.key"));
    let field = |c: AggregatorConfig| async move {
        match Aggregator::start(c, &CancellationToken::new()).await {
            Err(aggregator::Error::Config { field, detail }) => format!("{field}: {detail}"),
            Err(e) => panic!("not a config error: {e}"),
            Ok(_) => panic!("accepted a bad config"),
        }
    };
    let e = field(AggregatorConfig { key: d.join("missing.key"), ..cfg.clone() }).await;
    assert!(e.starts_with("key:") && e.contains("missing.key"), "{e}");
    std::fs::write(d.join("garbage.key"), "nonsense").unwrap();
    let private = |p: &std::path::Path, mode: u32| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    private(&d.join("garbage.key"), 0o600);
    assert!(field(AggregatorConfig { key: d.join("garbage.key"), ..cfg.clone() }).await.starts_with("key:"));
    // A good key that others may read is refused, naming the fix.
    std::fs::copy(&cfg.key, d.join("loose.key")).unwrap();
    private(&d.join("loose.key"), 0o644);
    let e = field(AggregatorConfig { key: d.join("loose.key"), ..cfg.clone() }).await;
    assert!(e.starts_with("key:") && e.contains("chmod 600"), "{e}");
    let mut self_roster = cfg.clone();
    self_roster.roster[0].peer_id = net::keys::read(&cfg.key).unwrap().id();
    assert!(field(self_roster).await.starts_with("roster:"));
    let mut wrong_hash = cfg.clone();
    wrong_hash.reference.sha256 = ReferenceSetId([0; 32]);
    assert!(field(wrong_hash).await.starts_with("reference.sha256:"));
    let mut missing_ref = cfg.clone();
    missing_ref.reference.path = d.join("nope.fdref");
    assert!(field(missing_ref).await.starts_with("reference.path:"));
    let mut quorum = cfg.clone();
    quorum.round.quorum = Some(5);
    assert!(field(quorum).await.starts_with("round.quorum:"));
    let mut no_samples = cfg.clone();
    no_samples.roster[0].samples = Some(0);
    assert!(field(no_samples).await.starts_with("roster.samples:"));
    let mut clip = cfg.clone();
    clip.round.sample_count_clip = 0.5;
    assert!(field(clip).await.starts_with("round.sample_count_clip:"));
    // Two submissions would give each node the other's labels: refused before anything runs.
    let mut two = cfg.clone();
    two.round.quorum = Some(2);
    assert!(field(two).await.starts_with("round.quorum:"));
    let mut trim = cfg.clone();
    trim.consensus.rule = learning::consensus::Rule::TrimmedMean { trim: 0.2 };
    let e = field(trim).await;
    assert!(e.starts_with("consensus.rule.trim:"), "three submissions × 0.2 trims nothing: {e}");
}

/// Values that cannot even be parsed are refused by `AggregatorConfig::load`, naming their key.
#[test]
fn unparsable_config_values_are_named_by_their_key() {
    let tmp = dir("toml");
    let d = tmp.path();
    let cfg = setup(d, &d.join("node.key"));
    let good = toml::to_string_pretty(&cfg).unwrap();
    let path = d.join("federation.toml");
    std::fs::write(&path, &good).unwrap();
    assert_eq!(AggregatorConfig::load(&path).unwrap(), cfg, "the written config loads back as it was");
    let cases = [
        ("listen = [\"/ip4/127.0.0.1/tcp/0\"]", "listen = [\"not an address\"]", "listen"),
        ("federation = \"bad-input\"", "federation = \"has space\"", "federation"),
        ("encoding = \"f32\"", "encoding = \"f8\"", "round.encoding"),
        ("quorum = 3", "quorum = -1", "round.quorum"),
        ("sample_count_clip = 2.0", "sample_count_clip = \"twice\"", "round.sample_count_clip"),
    ];
    for (from, to, key) in cases {
        assert!(good.contains(from), "the test's pattern `{from}` is in the file:\n{good}");
        std::fs::write(&path, good.replace(from, to)).unwrap();
        match AggregatorConfig::load(&path) {
            Err(aggregator::Error::Config { field, .. }) => assert_eq!(field, key, "{to}"),
            other => panic!("{to}: {other:?}"),
        }
    }
    let peer = net::keys::peer_id_string(&cfg.roster[0].peer_id);
    let sha = cfg.reference.sha256.to_hex();
    for (from, to, key) in
        [(peer.as_str(), "12D3KooWnotapeer", "roster.peer_id"), (sha.as_str(), "0000", "reference.sha256")]
    {
        std::fs::write(&path, good.replace(from, to)).unwrap();
        match AggregatorConfig::load(&path) {
            Err(aggregator::Error::Config { field, .. }) => {
                assert!(field.ends_with(key.rsplit('.').next().unwrap()), "{to}: {field}")
            }
            other => panic!("{to}: {other:?}"),
        }
    }
}
