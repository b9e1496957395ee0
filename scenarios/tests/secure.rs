//! Secure aggregation in real `fd-aggregator` and `fd-node` processes on 127.0.0.1 (issue #22):
//! members killed after sending their masked vector, the round completing with the survivors'
//! sum, and below the threshold nothing released; what leaves a node in a secure round; a
//! per-round cohort smaller than the roster as the masking group.
//!
//! The tests wait for files the processes write (the nodes' egress ledgers, the aggregator's
//! metrics) and for exit statuses, with deadlines.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use std::path::Path;
use std::process::Child;
use std::time::Duration;

use aggregator::config::{Cohort, SecureAggregation};
use common::{PreparedDir, Procs, egress, metrics, node_toml, scenario, spawn_args, wait_exit, wait_until};
use scenarios::setup::{self, Prepared};

/// `n` nodes, `rounds` rounds, secure aggregation with threshold `threshold`, quorum 4; node 0 a
/// straggler (each answer 3 s late), so the other members have sent their masked vectors well
/// before a round can close.
fn secure(name: &str, n: usize, rounds: u64, threshold: usize) -> (PreparedDir, Procs) {
    let s = scenario(name, n, rounds);
    let mut p = common::prepare(&s, "secure");
    p.aggregator.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    p.aggregator.round.quorum = Some(4);
    p.aggregator.round.deadline_secs = 10.0;
    p.aggregator.round.secure_aggregation =
        Some(SecureAggregation { threshold: Some(threshold), degree: None, scale: 255, stage_secs: 5.0 });
    setup::write_toml(&p.dir.federation(), &p.aggregator).unwrap();
    let procs = Procs(vec![start(&mut p)]);
    let dir = p.dir.clone();
    let straggler = scenarios::faults::Simulation { delay_ms: 3000, ..Default::default() };
    let sim = dir.root().join("straggler.toml");
    setup::write_toml(&sim, &straggler).unwrap();
    let mut procs = procs;
    procs.0.push(spawn_args(
        "fd-sim-node",
        &["--config".as_ref(), node_toml(&dir, 0).as_os_str(), "--simulation".as_ref(), sim.as_os_str()],
        &dir.node_log(0),
    ));
    for i in 1..n {
        procs.0.push(common::spawn_run("fd-node", None, &node_toml(&dir, i), &dir.node_log(i)));
    }
    (p, procs)
}

/// Starts the aggregator and writes each node's config with its address.
fn start(p: &mut Prepared) -> Child {
    let addr_file = p.dir.aggregator_addrs();
    let mut agg = common::spawn_aggregator_in(p, None, &addr_file);
    let addrs = common::wait_for_addrs(&mut agg, &addr_file, &p.dir.aggregator_log());
    for (i, n) in p.nodes.iter_mut().enumerate() {
        n.aggregator = addrs[0].clone();
        setup::write_toml(&node_toml(&p.dir, i), n).unwrap();
    }
    agg
}

/// Whether the node has sent its masked vector for `round` (its one request of that kind).
fn sent_masked(state_dir: &Path, round: u64) -> bool {
    egress(state_dir).iter().any(|e| e.direction == "request" && e.kind == "SecureReply" && e.round == Some(round))
}

fn names(m: &aggregator::RoundMetrics) -> Vec<&str> {
    m.participants.iter().map(String::as_str).collect()
}

#[test]
fn members_killed_after_their_masked_vector_are_still_summed_and_never_sent_labels_in_the_clear() {
    let (p, mut procs) = secure("dropouts", 5, 3, 3);
    // Node 4 dies once its masked vector of round 2 has left, before the straggler answers and
    // so before the round asks the survivors to unmask.
    let state = p.nodes[4].state_dir.clone();
    wait_until("node 4's masked vector of round 2", Duration::from_secs(180), || sent_masked(&state, 2));
    procs.0[5].kill().unwrap();
    procs.0[5].wait().unwrap();
    let status = wait_exit(&mut procs.0[0], Duration::from_secs(300));
    let log = std::fs::read_to_string(p.dir.aggregator_log()).unwrap_or_default();
    assert!(status.success(), "aggregator: {status}\n{log}");
    let m = metrics(&p);
    assert_eq!(m.len(), 3, "{m:?}");
    let all = ["node-00", "node-01", "node-02", "node-03", "node-04"];
    assert_eq!(names(&m[0]), all);
    // Round 2 sums node 4's vector: its self-mask was rebuilt from its neighbours' shares.
    assert_eq!(names(&m[1]), all, "round 2 counts the member that died after sending");
    assert_eq!(names(&m[2]), &all[..4], "round 3 goes on without it");
    // No node ever sent a plain submission: only masked vectors and the protocol's replies.
    for (i, n) in p.nodes.iter().enumerate() {
        let sent = egress(&n.state_dir);
        assert!(sent.iter().all(|e| e.kind != "Submission"), "node {i} sent soft labels in the clear");
        assert!(sent_masked(&n.state_dir, 1), "node {i} took part in round 1");
    }
}

#[test]
fn below_the_threshold_nothing_is_released_and_the_run_says_so() {
    let (p, mut procs) = secure("threshold", 4, 3, 3);
    // Nodes 2 and 3 die after sending their masked vectors of round 2: two survivors remain to
    // unmask, one fewer than the threshold.
    for i in [2, 3] {
        let state = p.nodes[i].state_dir.clone();
        wait_until("a masked vector of round 2", Duration::from_secs(180), || sent_masked(&state, 2));
    }
    for c in [3, 4] {
        procs.0[c].kill().unwrap();
        procs.0[c].wait().unwrap();
    }
    let status = wait_exit(&mut procs.0[0], Duration::from_secs(300));
    assert!(!status.success(), "the aggregator released a round it could not unmask");
    // Round 1 completed; round 2 released nothing: no metrics, no consensus (its receipt would
    // be in the survivors' ledgers as an answer to a round-2 consensus, after their signature).
    let m = metrics(&p);
    assert_eq!(m.len(), 1, "{m:?}");
    for i in [0, 1] {
        let sent = egress(&p.nodes[i].state_dir);
        assert!(sent.iter().all(|e| e.kind != "Submission"), "node {i} sent soft labels in the clear");
    }
}

/// The words of a masked vector or of a plaintext one, `bytes` bytes each (little-endian).
fn words(bytes: &[u8], width: usize) -> Vec<u32> {
    bytes.chunks_exact(width).map(|w| w.iter().rev().fold(0u32, |acc, &b| (acc << 8) | u32::from(b))).collect()
}

/// Pearson's χ² of `bytes` against the uniform distribution over 256 values.
fn chi_square(bytes: &[u8]) -> f64 {
    let mut bins = [0f64; 256];
    bytes.iter().for_each(|&b| bins[b as usize] += 1.0);
    let expected = bytes.len() as f64 / 256.0;
    bins.iter().map(|&o| (o - expected).powi(2) / expected).sum()
}

fn correlation(a: &[u32], b: &[u32]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().map(|&x| f64::from(x)).sum::<f64>() / n, b.iter().map(|&x| f64::from(x)).sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(&x, &y)| (f64::from(x) - ma) * (f64::from(y) - mb)).sum();
    let va: f64 = a.iter().map(|&x| (f64::from(x) - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|&y| (f64::from(y) - mb).powi(2)).sum();
    cov / (va * vb).sqrt()
}

#[test]
fn every_byte_the_aggregator_receives_looks_uniform_and_tells_nothing_of_a_nodes_labels() {
    use protocol::message::Reply;
    use protocol::secagg::FixedPoint;

    let s = scenario("sees", 4, 1);
    let mut p = common::prepare(&s, "secure");
    p.aggregator.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    p.aggregator.round.secure_aggregation =
        Some(SecureAggregation { threshold: None, degree: None, scale: 255, stage_secs: 5.0 });
    setup::write_toml(&p.dir.federation(), &p.aggregator).unwrap();
    for n in &mut p.nodes {
        n.ledger.keep_bytes = true;
    }
    let mut procs = Procs(vec![start(&mut p)]);
    for i in 0..4 {
        procs.0.push(common::spawn_run("fd-node", None, &node_toml(&p.dir, i), &p.dir.node_log(i)));
    }
    let status = wait_exit(&mut procs.0[0], Duration::from_secs(300));
    assert!(status.success(), "{}", std::fs::read_to_string(p.dir.aggregator_log()).unwrap_or_default());

    // 4 members at scale 255: 16-bit words.
    let (classes, width) = (10, 2);
    let (mut masked_bytes, mut plain_bytes) = (Vec::new(), Vec::new());
    for (i, n) in p.nodes.iter().enumerate() {
        // Everything the node sent, which is everything the aggregator received from it.
        let sent = egress(&n.state_dir);
        assert!(sent.iter().all(|e| e.kind != "Submission"), "node {i} sent soft labels in the clear");
        let entry = sent.iter().find(|e| e.direction == "request" && e.kind == "SecureReply").unwrap();
        let wire = std::fs::read(n.state_dir.join(entry.bytes_file.as_ref().unwrap())).unwrap();
        let envelope = protocol::SignedEnvelope::from_bytes(&wire, &protocol::Limits::default()).unwrap();
        let Ok(protocol::Message::SecureReply(reply)) = envelope.open(&envelope.signer, &protocol::Limits::default())
        else {
            panic!("node {i}: not a secure reply");
        };
        let Reply::Masked(m) = reply.reply else { panic!("node {i}: not a masked vector") };
        // What the node would have sent in the clear: its recorded answer, as fixed-point words.
        let answers = node::policy::Answers::load(&n.state_dir.join(node::policy::ANSWERS_FILE)).unwrap();
        let sub = answers.last.unwrap();
        let probs = sub.labels.decode(&protocol::Limits::default()).unwrap();
        let samples = probs.len() / classes;
        let plain = FixedPoint::COARSE.encode(&probs, classes, &vec![false; samples]).unwrap();
        let masked = words(&m.words, width);
        assert_eq!(masked.len(), plain.len(), "node {i}");
        let r = correlation(&masked, &plain);
        assert!(r.abs() < 0.1, "node {i}: masked words correlate with its soft labels: r = {r}");
        masked_bytes.extend_from_slice(&m.words);
        plain_bytes.extend(plain.iter().flat_map(|w| w.to_le_bytes()[..width].to_vec()));
    }
    // χ² with 255 degrees of freedom (mean 255, std 22.6): above 370, five standard deviations
    // out, has probability below 10⁻⁵ for uniform bytes.
    let (masked, plain) = (chi_square(&masked_bytes), chi_square(&plain_bytes));
    assert!(masked < 370.0, "masked bytes are not uniform: χ² = {masked}");
    assert!(plain > 10_000.0, "the same labels in the clear are far from uniform: χ² = {plain}");
}

#[test]
fn a_cohort_smaller_than_the_roster_is_each_rounds_masking_group() {
    // Six nodes, four drawn a round: only they mask, and the round sums them all.
    let (n, rounds) = (6, 3);
    let s = scenario("cohort", n, rounds);
    let mut p = common::prepare(&s, "secure");
    p.aggregator.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    p.aggregator.round.cohort = Some(Cohort::Count(4));
    p.aggregator.round.quorum = Some(4);
    p.aggregator.round.secure_aggregation =
        Some(SecureAggregation { threshold: None, degree: None, scale: 255, stage_secs: 5.0 });
    setup::write_toml(&p.dir.federation(), &p.aggregator).unwrap();
    let mut procs = Procs(vec![start(&mut p)]);
    for i in 0..n {
        procs.0.push(common::spawn_run("fd-node", None, &node_toml(&p.dir, i), &p.dir.node_log(i)));
    }
    let status = wait_exit(&mut procs.0[0], Duration::from_secs(300));
    assert!(status.success(), "{}", std::fs::read_to_string(p.dir.aggregator_log()).unwrap_or_default());
    let m = metrics(&p);
    assert_eq!(m.len(), rounds as usize, "{m:?}");
    let names: Vec<String> = p.aggregator.roster.iter().map(|e| e.name.clone()).collect();
    let mut rejoined = 0;
    for r in &m {
        let drawn = aggregator::cohort::draw(&names, Some(4), p.aggregator.seed, r.round);
        assert_eq!(r.cohort, drawn, "round {}: the drawn cohort is recorded", r.round);
        assert_eq!(r.participants, drawn, "round {}: the sum is the whole cohort's", r.round);
        for (i, node) in p.nodes.iter().enumerate() {
            let sent = egress(&node.state_dir);
            assert!(sent.iter().all(|e| e.kind != "Submission"), "node {i} sent soft labels in the clear");
            let member = drawn.contains(&names[i]);
            assert_eq!(sent_masked(&node.state_dir, r.round), member, "round {}: node {i} masked {}", r.round, !member);
            // A member left out of the round before acknowledges that round's consensus (sent to
            // it before this round's announcement) before its masked vector.
            if member && r.round > 1 && !m[r.round as usize - 2].cohort.contains(&names[i]) {
                let at = |f: &dyn Fn(&net::ledger::LedgerEntry) -> bool| sent.iter().position(f);
                let taught = at(&|e| e.direction == "response" && e.kind == "Receipt" && e.round == Some(r.round - 1));
                let masked = at(&|e| e.kind == "SecureReply" && e.direction == "request" && e.round == Some(r.round));
                assert!(
                    taught.is_some() && taught < masked,
                    "round {}: node {i} was not taught round {} first",
                    r.round,
                    r.round - 1
                );
                rejoined += 1;
            }
        }
    }
    assert!(rejoined > 0, "some node sat a round out and was drawn again");
}
