//! A real `fd-node` process against a scripted aggregator (a real libp2p peer in this test): the
//! node's query policy refuses what it does not allow with a reason code in its receipt, keeps
//! its rounds strictly increasing across a SIGKILL and a restart, answers a resumed round with
//! the very answer it gave, sends its sample count only when asked and allowed, and never takes
//! a reference set other than the pinned one. The node logs JSON lines (`--log-format json`) and
//! serves its metrics, scraped in its first life. The test waits for messages and exit statuses,
//! with deadlines, never for a duration.
#![allow(clippy::unwrap_used)] // tests and benches: a panic is the failure report

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use learning::Architecture;
use learning::data::DataSpec;
use node::NodeConfig;
use node::policy::{ANSWERS_FILE, Answers, QueryPolicy};
use protocol::*;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const REFERENCE_ROWS: usize = 150;
const DIGITS_ROWS: u64 = 1797;
const WAIT: Duration = Duration::from_secs(120);

/// What the scripted aggregator saw.
#[derive(Debug)]
enum Seen {
    Joined,
    Submission(Box<Submission>),
}

/// The aggregator's side: a libp2p peer that accepts the node's hello (naming `announced` as
/// the federation's reference set), serves chunks of the set it holds, and acknowledges
/// submissions; the test sends announcements through `client`.
struct Aggregator {
    client: net::Client,
    node: ParticipantId,
    seen: mpsc::Receiver<Seen>,
    announced: Arc<Mutex<ReferenceSetId>>,
    /// Chunk requests for a set other than the one it holds.
    foreign_chunk_requests: Arc<Mutex<usize>>,
    addr: net::multiaddr::Multiaddr,
}

async fn aggregator(node: ParticipantId, reference: Vec<u8>, shutdown: &CancellationToken) -> Aggregator {
    let fed = FederationId::new("policy").unwrap();
    let identity = Identity::from_seed([7; 32]).unwrap();
    let me = identity.id();
    let (client, mut events, network) =
        net::spawn(identity, net::NetConfig::new(fed.clone(), vec![node]), shutdown).unwrap();
    let addr = client
        .listen("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .await
        .unwrap()
        .with(net::multiaddr::Protocol::P2p(net::peer_id(&me)));
    let held = ReferenceSetId::digest(&reference);
    let announced = Arc::new(Mutex::new(held));
    let foreign = Arc::new(Mutex::new(0));
    let (tx, seen) = mpsc::channel(16);
    let (announced2, foreign2) = (announced.clone(), foreign.clone());
    tokio::spawn(async move {
        let _network = network;
        while let Some(ev) = events.recv().await {
            let net::Event::Request { message, responder, .. } = ev else { continue };
            let receipt = |round| {
                Message::Receipt(Receipt {
                    federation: fed.clone(),
                    round,
                    status: ReceiptStatus::Accepted,
                    detail: String::new(),
                })
            };
            let reply = match message {
                Message::Hello(_) => {
                    let accepted = JoinAccepted {
                        current_round: 1,
                        reference_set: *announced2.lock().unwrap(),
                        reference_samples: REFERENCE_ROWS as u32,
                        classes: 10,
                        sample_count_wanted: true,
                    };
                    let _ = tx.send(Seen::Joined).await;
                    Message::JoinReply(JoinReply {
                        federation: fed.clone(),
                        outcome: Ok(accepted),
                        detail: String::new(),
                    })
                }
                Message::RefSetRequest(r) if r.reference_set == held => {
                    let start = (r.offset as usize).min(reference.len());
                    let end = (start + r.len as usize).min(reference.len());
                    Message::RefSetChunk(RefSetChunk {
                        federation: fed.clone(),
                        reference_set: held,
                        offset: start as u64,
                        total_len: reference.len() as u64,
                        data: reference[start..end].to_vec(),
                    })
                }
                Message::RefSetRequest(_) => {
                    *foreign2.lock().unwrap() += 1;
                    Message::Receipt(Receipt {
                        federation: fed.clone(),
                        round: 0,
                        status: ReceiptStatus::Refused(RefusalReason::WrongReferenceSet),
                        detail: String::new(),
                    })
                }
                Message::Submission(s) => {
                    let round = s.round;
                    let _ = tx.send(Seen::Submission(Box::new(s))).await;
                    receipt(round)
                }
                other => receipt(other.round().unwrap_or(0)),
            };
            let _ = responder.respond(reply).await;
        }
    });
    Aggregator { client, node, seen, announced, foreign_chunk_requests: foreign, addr }
}

impl Aggregator {
    async fn next(&mut self) -> Seen {
        tokio::time::timeout(WAIT, self.seen.recv())
            .await
            .expect("the node did not act in time")
            .expect("the aggregator stopped")
    }

    async fn joined(&mut self) {
        match self.next().await {
            Seen::Joined => {}
            other => panic!("expected a join, got {other:?}"),
        }
    }

    async fn submission(&mut self) -> Submission {
        match self.next().await {
            Seen::Submission(s) => *s,
            other => panic!("expected a submission, got {other:?}"),
        }
    }

    /// Sends an announcement; `None` if the node accepted it, its refusal reason otherwise.
    async fn announce(&self, ann: &RoundAnnouncement) -> Option<RefusalReason> {
        self.send(Message::RoundAnnouncement(ann.clone())).await
    }

    /// Sends `message`; `None` if the node accepted it, its refusal reason otherwise.
    async fn send(&self, message: Message) -> Option<RefusalReason> {
        match self.client.request(&self.node, &message).await.unwrap() {
            Message::Receipt(Receipt { status: ReceiptStatus::Accepted, .. }) => None,
            Message::Receipt(Receipt { status: ReceiptStatus::Refused(r), .. }) => Some(r),
            other => panic!("{other:?}"),
        }
    }
}

fn announcement(round: u64, reference: ReferenceSetId) -> RoundAnnouncement {
    RoundAnnouncement {
        federation: FederationId::new("policy").unwrap(),
        round,
        reference_set: reference,
        reference_samples: REFERENCE_ROWS as u32,
        selection: SampleSelection::Seeded { seed: 100 + round, count: 30 },
        classes: 10,
        temperature: 2.0,
        deadline_unix_ms: 1,
        encoding: Encoding::Q8,
        secure: None,
    }
}

/// The UCI digits shipped in `data/`, as a data holder's `node.toml` names them.
fn digits() -> DataSpec {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/digits/digits.csv.gz");
    toml::from_str(&format!(
        "format = \"csv\"\npath = {:?}\npreprocess = {{ kind = \"scale\", factor = 0.0625 }}",
        path.display().to_string()
    ))
    .unwrap()
}

fn config(dir: &Path, aggregator: &net::multiaddr::Multiaddr, pin: ReferenceSetId) -> NodeConfig {
    NodeConfig {
        federation: FederationId::new("policy").unwrap(),
        key: dir.join("node.key"),
        aggregator: aggregator.clone(),
        listen: Vec::new(),
        hole_punching: false,
        state_dir: dir.join("state"),
        reference: dir.join("state").join("reference.fdref"),
        seed: 1,
        backend: Default::default(),
        data: digits(),
        model: Architecture::Mlp { hidden: vec![16], dropout: 0.0 },
        train: learning::train::TrainConfig { epochs: 1, ..Default::default() },
        digest: Default::default(),
        abstain: None,
        policy: QueryPolicy { max_samples_per_round: 100, max_rounds: 3, ..QueryPolicy::pinned(pin) },
        privacy: None,
        ledger: Default::default(),
        padding: None,
        metrics: Some("127.0.0.1:0".parse().unwrap()),
        http: Default::default(),
    }
}

/// An `fd-node` process, SIGKILLed when dropped.
struct NodeProcess(Child);

impl NodeProcess {
    fn start(cfg: &NodeConfig, dir: &Path) -> Self {
        let path = dir.join("node.toml");
        std::fs::write(&path, toml::to_string_pretty(cfg).unwrap()).unwrap();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("node.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_fd-node"))
            .args(["--log-format", "json", "run", "--config"])
            .arg(&path)
            .env("RUST_LOG", "info,libp2p=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Self(child)
    }

    fn sigkill(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every line of `log` as JSON, each with a `level` and an object of `fields`.
fn json_lines(log: &str) -> Vec<serde_json::Value> {
    assert!(!log.trim().is_empty(), "nothing was logged");
    log.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
            assert!(v["level"].is_string() && v["fields"].is_object(), "no level or fields: {l}");
            v
        })
        .collect()
}

/// Scrapes the metrics of the node whose JSON log is `dir/node.log` (its endpoint's address is
/// the `addr` field of the event that reports it): `name{labels}` → value.
async fn node_metrics(dir: &Path) -> std::collections::HashMap<String, f64> {
    let log = std::fs::read_to_string(dir.join("node.log")).unwrap();
    let addr = json_lines(&log)
        .iter()
        .rev()
        .find_map(|v| v["fields"]["addr"].as_str().and_then(|a| a.parse::<std::net::SocketAddr>().ok()))
        .unwrap_or_else(|| panic!("no metrics address logged:\n{log}"));
    let text = net::metrics::http::scrape(addr).await.unwrap().unwrap();
    assert_eq!(text.lines().last(), Some("# EOF"));
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_owned(), value.parse().unwrap())
        })
        .collect()
}

/// A fresh folder for the test's files, removed when the test ends (also when it fails).
fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("node-policy-").tempdir().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_query_policy_holds_across_a_sigkill_and_a_restart() {
    // Declared before the node processes, so that it outlives them (they are killed when dropped).
    let tmp = temp_dir();
    let dir = tmp.path();
    let node_id = net::keys::generate(&dir.join("node.key")).unwrap().id();
    let values: Vec<f32> = (0..REFERENCE_ROWS * 64).map(|i| ((i * 7) % 17) as f32 / 16.0).collect();
    let reference = ReferenceSet::new(REFERENCE_ROWS, 64, values).unwrap().to_bytes();
    let pin = ReferenceSetId::digest(&reference);
    let other_set = ReferenceSetId([0xAB; 32]);
    let shutdown = CancellationToken::new();
    let mut agg = aggregator(node_id, reference.clone(), &shutdown).await;
    let mut cfg = config(dir, &agg.addr, pin);

    // First life: the node joins, fetches the pinned set (it has no copy) and answers round 1,
    // without its sample count: asked for, but not allowed by default.
    let node = NodeProcess::start(&cfg, dir);
    agg.joined().await;
    let ann1 = announcement(1, pin);
    assert_eq!(agg.announce(&ann1).await, None);
    let first = agg.submission().await;
    assert_eq!((first.round, first.announcement, first.local_samples), (1, ann1.digest(), None));
    assert_eq!(std::fs::read(&cfg.reference).unwrap(), reference, "the pinned set was fetched and saved");
    // What the policy does not allow is refused, each with its reason.
    assert_eq!(
        agg.announce(&RoundAnnouncement { encoding: Encoding::F32, ..announcement(2, pin) }).await,
        Some(RefusalReason::Policy),
        "f32 is off by default"
    );
    assert_eq!(
        agg.announce(&RoundAnnouncement { temperature: 0.5, ..announcement(2, pin) }).await,
        Some(RefusalReason::Policy),
        "below min_temperature"
    );
    let many = RoundAnnouncement { selection: SampleSelection::Seeded { seed: 1, count: 101 }, ..announcement(2, pin) };
    assert_eq!(agg.announce(&many).await, Some(RefusalReason::Policy), "over max_samples_per_round");
    assert_eq!(agg.announce(&announcement(2, other_set)).await, Some(RefusalReason::WrongReferenceSet));
    let reseeded = RoundAnnouncement { selection: SampleSelection::Seeded { seed: 9, count: 30 }, ..ann1.clone() };
    assert_eq!(agg.announce(&reseeded).await, Some(RefusalReason::Policy), "round 1 asked again with another question");
    // A consensus whose counts contradict its weights (a sample nobody contributed to, yet
    // weighted) is refused, and not learnt from (no consensus received, below).
    let contradicting = Consensus {
        federation: ann1.federation.clone(),
        round: 1,
        reference_set: pin,
        selection: ann1.selection.clone(),
        temperature: 2.0,
        labels: SoftLabels::encode(&[0.1; 300], 30, 10, Encoding::Q8).unwrap(),
        weights: vec![255; 30],
        participants: 3,
        counts: vec![0; 30],
    };
    assert_eq!(agg.send(Message::Consensus(contradicting)).await, Some(RefusalReason::InvalidValues));
    let s = node_metrics(dir).await;
    assert_eq!(s["fd_joins_total"], 1.0);
    assert_eq!(s["fd_submissions_accepted_total"], 1.0);
    assert_eq!(s["fd_round"], 1.0);
    assert_eq!(s["fd_work_seconds_count"], 1.0);
    assert_eq!(s["fd_requests_declined_total{reason=\"Policy\"}"], 4.0);
    assert_eq!(s["fd_requests_declined_total{reason=\"WrongReferenceSet\"}"], 1.0);
    assert_eq!(s["fd_consensus_received_total"], 0.0);
    let sent = |kind: &str| s[&format!("fd_sent_messages_total{{peer=\"aggregator\",kind=\"{kind}\"}}")];
    assert_eq!(
        (sent("Hello"), sent("Submission"), sent("Receipt")),
        (1.0, 1.0, 7.0),
        "a hello, one answer, a receipt per announcement and consensus"
    );
    assert!(sent("RefSetRequest") >= 1.0, "the pinned set was fetched");
    assert!(
        s["fd_sent_bytes_total{peer=\"aggregator\",kind=\"Submission\"}"] > 30.0 * 10.0,
        "30 samples × 10 classes, a byte each (q8)"
    );
    node.sigkill();

    // Second life, now allowed to share its count. The record of answers survived the kill.
    assert_eq!(Answers::load(&cfg.state_dir.join(ANSWERS_FILE)).unwrap().count, 1);
    cfg.policy.share_sample_count = true;
    let node = NodeProcess::start(&cfg, dir);
    agg.joined().await;
    // A resumed round 1 (same question, new deadline) gets the same answer, without training
    // again; another question for round 1, and an older round, are refused.
    assert_eq!(agg.announce(&RoundAnnouncement { deadline_unix_ms: 2, ..ann1.clone() }).await, None);
    assert_eq!(agg.submission().await, first, "the very answer given before the kill");
    assert_eq!(agg.announce(&reseeded).await, Some(RefusalReason::Policy));
    assert_eq!(agg.announce(&announcement(0, pin)).await, Some(RefusalReason::Policy));
    // New rounds: asked and allowed, the count goes out.
    for round in [2, 3] {
        let ann = announcement(round, pin);
        assert_eq!(agg.announce(&ann).await, None);
        let s = agg.submission().await;
        assert_eq!((s.round, s.announcement, s.local_samples), (round, ann.digest(), Some(DIGITS_ROWS)));
    }
    assert_eq!(agg.announce(&announcement(4, pin)).await, Some(RefusalReason::Policy), "max_rounds = 3");
    node.sigkill();

    // Third life: the federation now names another reference set. The node stays joined but
    // refuses its rounds, asks for none of it, and keeps its copy of the pinned one.
    *agg.announced.lock().unwrap() = other_set;
    cfg.policy.max_rounds = 10;
    let node = NodeProcess::start(&cfg, dir);
    agg.joined().await;
    assert_eq!(agg.announce(&announcement(4, other_set)).await, Some(RefusalReason::WrongReferenceSet));
    assert_eq!(*agg.foreign_chunk_requests.lock().unwrap(), 0, "the node never asked for another set");
    assert_eq!(std::fs::read(&cfg.reference).unwrap(), reference, "its copy is the pinned set, unchanged");
    assert_eq!(Answers::load(&cfg.state_dir.join(ANSWERS_FILE)).unwrap().count, 3);
    node.sigkill();
    shutdown.cancel();
    json_lines(&std::fs::read_to_string(dir.join("node.log")).unwrap());
}
