//! Turns a scenario into real files: the split, each node's row file, the reference set, keys,
//! and the `federation.toml` / `node.toml` configs that `fd-aggregator` and `fd-node` run.

use std::path::{Path, PathBuf};

use aggregator::config::{AggregatorConfig, ReferenceConfig, RosterEntry};
use anyhow::Context;
use learning::data::{self, Dataset, Preprocess, Split};
use node::config::NodeConfig;
use node::policy::QueryPolicy;
use protocol::ReferenceSet;
use protocol::seed::{Stream, derive};

use crate::faults::Simulation;
use crate::spec::Scenario;

/// Everything a run needs, on disk and in memory.
pub struct Prepared {
    /// The scenario with derived values filled in (e.g. standardisation statistics).
    pub scenario: Scenario,
    /// The whole data set, preprocessed.
    pub dataset: Dataset,
    /// Test / reference / private rows.
    pub split: Split,
    /// Private rows of each node.
    pub parts: Vec<Vec<usize>>,
    /// Aggregator config (listen addresses to be set by the runner).
    pub aggregator: AggregatorConfig,
    /// Node configs (aggregator address to be set by the runner).
    pub nodes: Vec<NodeConfig>,
    /// Each node's simulated faults (honest: the default).
    pub faults: Vec<Simulation>,
    /// Output folder.
    pub dir: PathBuf,
}

/// Writes the run's files under `dir`.
pub fn prepare(scenario: &Scenario, dir: &Path) -> anyhow::Result<Prepared> {
    let mut s = scenario.clone();
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut raw_spec = s.data.clone();
    raw_spec.preprocess = Preprocess::None;
    let raw = raw_spec.load().context("loading the scenario's data")?;
    let split = data::split(raw.len(), s.split.test, s.split.reference, derive(s.seed, Stream::Split, 0))?;
    // Standardisation statistics come from the public reference inputs only, and are written
    // into the resolved config so that every node applies the same map.
    if let Preprocess::Standardise { mean, .. } = &s.data.preprocess
        && mean.is_empty()
    {
        s.data.preprocess = Preprocess::standardise_from(&raw.subset(&split.reference).features, raw.dim);
    }
    let mut dataset = raw;
    s.data.preprocess.apply(&mut dataset.features, dataset.dim)?;
    let parts = data::partition(
        &split.private,
        &dataset.labels,
        dataset.classes,
        s.split.nodes,
        &s.split.partition,
        s.split.min_size,
        derive(s.seed, Stream::Split, 1),
    )?;

    let reference = ReferenceSet::new(split.reference.len(), dataset.dim, dataset.subset(&split.reference).features)?;
    let ref_path = dir.join("reference.fdref");
    let ref_id = aggregator::reference::write(&ref_path, &reference)?;
    let test_rows = dir.join("test-rows.txt");
    data::write_rows(&test_rows, &split.test)?;

    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys)?;
    let agg_key = keys.join("aggregator.key");
    let _ = std::fs::remove_file(&agg_key);
    net::keys::generate(&agg_key)?;
    let federation = protocol::FederationId::new(s.name.clone())
        .with_context(|| format!("scenario name `{}` as a federation id", s.name))?;
    let mut roster = Vec::new();
    let mut nodes = Vec::new();
    let mut faults = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let ndir = dir.join("nodes").join(format!("node-{i:02}"));
        std::fs::create_dir_all(&ndir)?;
        let _ = std::fs::remove_dir_all(ndir.join("state"));
        let key = keys.join(format!("node-{i:02}.key"));
        let _ = std::fs::remove_file(&key);
        let id = net::keys::generate(&key)?;
        // The runner made the partition, so it declares each node's count, as an operator would:
        // `weighted_by_samples` then weighs what the roster says, and no node is asked for it.
        let declared = scenario.nodes.declare_samples.then_some(part.len() as u64);
        roster.push(RosterEntry { name: format!("node-{i:02}"), peer_id: id.id(), samples: declared });
        data::write_rows(&ndir.join("rows.txt"), part)?;
        // The reference set is public: each node starts with its own copy (checked against the
        // announced hash). Without one, a node fetches it from the aggregator.
        if scenario.nodes.copy_reference {
            std::fs::create_dir_all(ndir.join("state"))?;
            std::fs::copy(&ref_path, ndir.join("state").join("reference.fdref"))?;
        }
        let mut spec = s.data.clone();
        spec.rows = Some(ndir.join("rows.txt"));
        spec.classes = Some(dataset.classes);
        let fault = s.faults.iter().find(|f| f.node == i);
        faults.push(Simulation {
            delay_ms: fault.map_or(0, |f| f.delay_ms),
            attack: fault.map_or(Default::default(), |f| f.attack),
            leave_at_round: fault.and_then(|f| f.drop_at),
            seed: derive(s.seed, Stream::Fault, i as u64),
            claim_samples: fault.and_then(|f| f.claim_samples),
        });
        nodes.push(NodeConfig {
            federation: federation.clone(),
            key,
            // Set by the runner once the aggregator has bound its address.
            aggregator: net::multiaddr::Multiaddr::empty(),
            listen: Vec::new(),
            state_dir: ndir.join("state"),
            reference: ndir.join("state").join("reference.fdref"),
            seed: derive(s.seed, Stream::Init, 1 + i as u64),
            backend: s.backend,
            data: spec,
            model: s.architecture(i).clone(),
            train: s.nodes.train.clone(),
            digest: s.nodes.digest.clone(),
            abstain: s.nodes.abstain.clone(),
            privacy: s.nodes.privacy.as_ref().and_then(|p| p.node(s.rounds, s.seed, i)),
            policy: policy(&s, ref_id),
            ledger: Default::default(),
            metrics: None,
        });
    }
    let mut validation = s.data.clone();
    validation.rows = Some(test_rows);
    validation.classes = Some(dataset.classes);
    let _ = std::fs::remove_dir_all(dir.join("aggregator"));
    let aggregator = AggregatorConfig {
        federation,
        key: agg_key,
        listen: Vec::new(),
        output: dir.join("aggregator"),
        rounds: s.rounds,
        seed: s.seed,
        backend: s.backend,
        classes: dataset.classes,
        roster,
        reference: ReferenceConfig { path: ref_path, sha256: ref_id },
        round: s.round.clone(),
        consensus: s.consensus.clone(),
        student: s.student.clone(),
        validation: Some(validation),
        metrics: None,
        // Every node of a simulation dials from the same address (127.0.0.1): room for all of
        // them to be in their handshake at once, rather than refusals and redials.
        connections: aggregator::config::ConnectionsConfig::for_one_address(s.split.nodes),
    };
    Ok(Prepared { scenario: s, dataset, split, parts, aggregator, nodes, faults, dir: dir.to_owned() })
}

/// A node's query policy in a simulation: the scenario's reference set pinned, and limits that
/// admit exactly what the scenario's aggregator asks (its temperature, its encoding, even `f32`,
/// its samples a round and its rounds) and nothing more.
fn policy(s: &Scenario, reference: protocol::ReferenceSetId) -> QueryPolicy {
    QueryPolicy {
        min_temperature: s.round.temperature,
        encodings: vec![s.round.encoding],
        max_samples_per_round: s.round.samples,
        max_rounds: s.rounds,
        share_sample_count: !s.nodes.declare_samples,
        ..QueryPolicy::pinned(reference)
    }
}

/// Writes a config as TOML.
pub fn write_toml<T: serde::Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let text = toml::to_string_pretty(value).context("serialising a config")?;
    learning::fs::atomic_write(path, text.as_bytes())?;
    Ok(())
}
