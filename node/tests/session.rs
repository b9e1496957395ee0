//! An in-process node against a scripted aggregator (a real libp2p peer in this test) that keeps
//! answering its submission `Unavailable`: the node resends it, and meanwhile still answers the
//! next announcement at once, instead of after its resends. The test waits for messages, with
//! deadlines, never for a duration.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use learning::Architecture;
use learning::data::DataSpec;
use node::NodeConfig;
use node::policy::QueryPolicy;
use protocol::*;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const REFERENCE_ROWS: usize = 150;
/// Far longer than the test waits: a node that answered the announcement only after its resends
/// (until this deadline) fails the test.
const DEADLINE: Duration = Duration::from_secs(600);
const WAIT: Duration = Duration::from_secs(60);

fn fed() -> FederationId {
    FederationId::new("session").unwrap()
}

/// What the scripted aggregator saw.
#[derive(Debug, PartialEq)]
enum Seen {
    Joined,
    /// A submission for this round, and whether it was accepted.
    Submission(u64, bool),
}

/// A libp2p peer that lets the node join, serves the reference set, and answers submissions
/// `Unavailable` while `busy` is set (accepted after); it reports joins and submissions on
/// `seen`.
async fn aggregator(
    node: ParticipantId,
    reference: Vec<u8>,
    busy: Arc<AtomicBool>,
    shutdown: &CancellationToken,
) -> (net::Client, mpsc::Receiver<Seen>, net::multiaddr::Multiaddr) {
    let identity = Identity::from_seed([7; 32]).unwrap();
    let me = identity.id();
    let (client, mut events, network) = net::spawn(identity, net::NetConfig::new(fed(), vec![node]), shutdown).unwrap();
    let addr = client
        .listen("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .await
        .unwrap()
        .with(net::multiaddr::Protocol::P2p(net::peer_id(&me)));
    let held = ReferenceSetId::digest(&reference);
    let (tx, seen) = mpsc::channel(64);
    tokio::spawn(async move {
        let _network = network;
        while let Some(ev) = events.recv().await {
            let net::Event::Request { message, responder, .. } = ev else { continue };
            let receipt =
                |round, status| Message::Receipt(Receipt { federation: fed(), round, status, detail: String::new() });
            let reply = match message {
                Message::Hello(_) => {
                    let _ = tx.send(Seen::Joined).await;
                    Message::JoinReply(JoinReply {
                        federation: fed(),
                        outcome: Ok(JoinAccepted {
                            current_round: 1,
                            reference_set: held,
                            reference_samples: REFERENCE_ROWS as u32,
                            classes: 10,
                            sample_count_wanted: false,
                        }),
                        detail: String::new(),
                    })
                }
                Message::RefSetRequest(r) => {
                    let start = (r.offset as usize).min(reference.len());
                    let end = (start + r.len as usize).min(reference.len());
                    Message::RefSetChunk(RefSetChunk {
                        federation: fed(),
                        reference_set: held,
                        offset: start as u64,
                        total_len: reference.len() as u64,
                        data: reference[start..end].to_vec(),
                    })
                }
                Message::Submission(s) => {
                    let accepted = !busy.load(Ordering::SeqCst);
                    let _ = tx.send(Seen::Submission(s.round, accepted)).await;
                    match accepted {
                        true => receipt(s.round, ReceiptStatus::Accepted),
                        false => receipt(s.round, ReceiptStatus::Refused(RefusalReason::Unavailable)),
                    }
                }
                other => receipt(other.round().unwrap_or(0), ReceiptStatus::Accepted),
            };
            let _ = responder.respond(reply).await;
        }
    });
    (client, seen, addr)
}

fn announcement(round: u64, reference: ReferenceSetId) -> RoundAnnouncement {
    RoundAnnouncement {
        federation: fed(),
        round,
        reference_set: reference,
        reference_samples: REFERENCE_ROWS as u32,
        selection: SampleSelection::Seeded { seed: 100 + round, count: 30 },
        classes: 10,
        temperature: 2.0,
        deadline_unix_ms: net::clock::now_ms() + DEADLINE.as_millis() as u64,
        encoding: Encoding::Q8,
        secure: None,
    }
}

fn config(dir: &Path, aggregator: &net::multiaddr::Multiaddr, pin: ReferenceSetId) -> NodeConfig {
    let digits = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/digits/digits.csv.gz");
    let data: DataSpec = toml::from_str(&format!(
        "format = \"csv\"\npath = {:?}\npreprocess = {{ kind = \"scale\", factor = 0.0625 }}",
        digits.display().to_string()
    ))
    .unwrap();
    NodeConfig {
        federation: fed(),
        key: dir.join("node.key"),
        aggregator: aggregator.clone(),
        listen: Vec::new(),
        hole_punching: false,
        state_dir: dir.join("state"),
        reference: dir.join("state").join("reference.fdref"),
        seed: 1,
        backend: Default::default(),
        data,
        model: Architecture::Mlp { hidden: vec![16], dropout: 0.0 },
        train: learning::train::TrainConfig { epochs: 1, ..Default::default() },
        digest: Default::default(),
        abstain: None,
        policy: QueryPolicy { max_samples_per_round: 100, ..QueryPolicy::pinned(pin) },
        privacy: None,
        ledger: Default::default(),
        padding: None,
        metrics: None,
        http: Default::default(),
    }
}

/// Ask `agg`'s node something; `None` if it accepted.
async fn ask(agg: &net::Client, node: &ParticipantId, message: Message) -> Option<RefusalReason> {
    let answer = tokio::time::timeout(WAIT, agg.request(node, &message)).await.expect("answered in time").unwrap();
    match answer {
        Message::Receipt(Receipt { status: ReceiptStatus::Accepted, .. }) => None,
        Message::Receipt(Receipt { status: ReceiptStatus::Refused(r), .. }) => Some(r),
        other => panic!("{other:?}"),
    }
}

async fn next(seen: &mut mpsc::Receiver<Seen>) -> Seen {
    tokio::time::timeout(WAIT, seen.recv()).await.expect("the node acted in time").expect("the aggregator runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_announcement_is_answered_while_a_submission_is_being_resent() {
    let tmp = tempfile::Builder::new().prefix("node-session-").tempdir().unwrap();
    let dir = tmp.path();
    let node_id = net::keys::generate(&dir.join("node.key")).unwrap().id();
    let values: Vec<f32> = (0..REFERENCE_ROWS * 64).map(|i| ((i * 7) % 17) as f32 / 16.0).collect();
    let reference = ReferenceSet::new(REFERENCE_ROWS, 64, values).unwrap().to_bytes();
    let pin = ReferenceSetId::digest(&reference);
    let shutdown = CancellationToken::new();
    let busy = Arc::new(AtomicBool::new(true));
    let (agg, mut seen, addr) = aggregator(node_id, reference, busy.clone(), &shutdown).await;
    let node = tokio::spawn(node::run(config(dir, &addr, pin), shutdown.child_token()));

    // The node joins (it takes the announcement once it has fetched the set) and answers round
    // 1; its answer is refused as `Unavailable`, so it sends it again, and again.
    assert_eq!(next(&mut seen).await, Seen::Joined);
    assert_eq!(ask(&agg, &node_id, Message::RoundAnnouncement(announcement(1, pin))).await, None);
    assert_eq!(next(&mut seen).await, Seen::Submission(1, false));
    assert_eq!(next(&mut seen).await, Seen::Submission(1, false), "resent after an Unavailable");

    // Round 2 is answered while round 1's answer is still being resent (the aggregator is
    // still busy): the announcement does not wait behind the resends, which would go on until
    // round 1's deadline.
    assert_eq!(ask(&agg, &node_id, Message::RoundAnnouncement(announcement(2, pin))).await, None);
    assert!(busy.load(Ordering::SeqCst), "answered while every submission was still refused");

    // Once the aggregator takes submissions, both rounds' answers are accepted.
    busy.store(false, Ordering::SeqCst);
    let mut accepted = Vec::new();
    while accepted.len() < 2 {
        if let Seen::Submission(round, true) = next(&mut seen).await {
            accepted.push(round);
        }
    }
    accepted.sort();
    assert_eq!(accepted, [1, 2]);
    let finished = Finished { federation: fed(), rounds: 2, detail: String::new() };
    assert_eq!(ask(&agg, &node_id, Message::Finished(finished)).await, None);
    shutdown.cancel();
    let summary = tokio::time::timeout(WAIT, node).await.expect("the node stops").unwrap().unwrap();
    let mut rounds = summary.accepted_rounds.clone();
    rounds.sort();
    assert_eq!(rounds, [1, 2], "{summary:?}");
    assert_eq!(summary.finished_after, Some(2));
}

/// Holds the node's training of a round (on the trainer's thread) until told to go on, and says
/// when it got there.
struct Held {
    reached: mpsc::Sender<u64>,
    go: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

impl node::Faults for Held {
    fn tamper(&self, round: u64, _: &mut [f32], _: usize) {
        let _ = self.reached.blocking_send(round);
        let _ = self.go.lock().unwrap().recv_timeout(WAIT);
    }
}

/// The aggregator declares the federation finished while the node trains round 1: the training
/// is paid for, so its answer is still recorded and sent (it was dropped, and the node stopped
/// with round 1 unanswered), and the node then stops on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_being_trained_when_the_federation_finishes_is_still_answered() {
    let tmp = tempfile::Builder::new().prefix("node-session-").tempdir().unwrap();
    let dir = tmp.path();
    let node_id = net::keys::generate(&dir.join("node.key")).unwrap().id();
    let values: Vec<f32> = (0..REFERENCE_ROWS * 64).map(|i| ((i * 7) % 17) as f32 / 16.0).collect();
    let reference = ReferenceSet::new(REFERENCE_ROWS, 64, values).unwrap().to_bytes();
    let pin = ReferenceSetId::digest(&reference);
    let shutdown = CancellationToken::new();
    let (agg, mut seen, addr) = aggregator(node_id, reference, Arc::new(AtomicBool::new(false)), &shutdown).await;
    let (reached, mut training) = mpsc::channel(4);
    let (go, held) = std::sync::mpsc::channel();
    let faults = Arc::new(Held { reached, go: std::sync::Mutex::new(held) });
    let node = tokio::spawn(node::run_with(config(dir, &addr, pin), faults, shutdown.child_token()));

    assert_eq!(next(&mut seen).await, Seen::Joined);
    assert_eq!(ask(&agg, &node_id, Message::RoundAnnouncement(announcement(1, pin))).await, None);
    let round = tokio::time::timeout(WAIT, training.recv()).await.expect("training started").unwrap();
    assert_eq!(round, 1);
    let finished = Finished { federation: fed(), rounds: 1, detail: String::new() };
    assert_eq!(ask(&agg, &node_id, Message::Finished(finished)).await, None);
    go.send(()).unwrap();
    assert_eq!(next(&mut seen).await, Seen::Submission(1, true), "the paid-for answer is sent");
    let summary = tokio::time::timeout(WAIT, node).await.expect("the node stops on its own").unwrap().unwrap();
    assert_eq!((summary.accepted_rounds, summary.finished_after), (vec![1], Some(1)));
    let answers = std::fs::read_to_string(dir.join("state").join(node::policy::ANSWERS_FILE)).unwrap();
    assert!(!answers.is_empty(), "the answer is recorded");
    shutdown.cancel();
}
