//! Turns a scenario into real files: the split, each node's row file, the reference set, keys,
//! and the `federation.toml` / `node.toml` configs that `fd-aggregator` and `fd-node` run (where
//! each goes: [`crate::layout`]).

use std::path::Path;

use aggregator::config::{AggregatorConfig, ReferenceConfig, RosterEntry};
use anyhow::Context;
use learning::data::{self, Dataset, Preprocess, Split};
use net::multiaddr::Multiaddr;
use node::config::NodeConfig;
use node::policy::QueryPolicy;
use protocol::seed::{Stream, derive};
use protocol::{FederationId, ReferenceSet, ReferenceSetId};

use crate::faults::Simulation;
use crate::layout::{RunDir, node_name};
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
    pub dir: RunDir,
}

/// Writes the run's files under `dir`: the data split, the reference set, the keys, then each
/// node's files and config and the aggregator's config.
pub fn prepare(scenario: &Scenario, dir: &Path) -> anyhow::Result<Prepared> {
    let dir = RunDir::new(dir);
    std::fs::create_dir_all(dir.root()).with_context(|| format!("cannot create {}", dir.root().display()))?;
    let Data { scenario: s, dataset, split, parts } = load(scenario)?;
    let reference = write_public(&dir, &dataset, &split)?;
    std::fs::create_dir_all(dir.keys())?;
    let _ = std::fs::remove_file(dir.aggregator_key());
    net::keys::generate(&dir.aggregator_key())?;
    let federation =
        FederationId::new(s.name.clone()).with_context(|| format!("scenario name `{}` as a federation id", s.name))?;
    let (mut roster, mut nodes, mut faults) = (Vec::new(), Vec::new(), Vec::new());
    for (i, part) in parts.iter().enumerate() {
        let (entry, config) = node_files(&s, &dir, i, part, &dataset, &federation, reference)?;
        roster.push(entry);
        nodes.push(config);
        faults.push(simulation(&s, i));
    }
    let aggregator = aggregator_config(&s, &dir, &dataset, federation, roster, reference);
    Ok(Prepared { scenario: s, dataset, split, parts, aggregator, nodes, faults, dir })
}

/// The run folder `dir` that [`prepare`] wrote and a federation has run in (its `node.toml`
/// files naming the aggregator), read back: the resolved scenario, its data divided as before
/// (the same seed, the same split), and the configs on disk.
pub fn reopen(dir: &Path) -> anyhow::Result<Prepared> {
    let dir = RunDir::new(dir);
    let scenario = Scenario::load(&dir.config())?;
    let Data { scenario: s, dataset, split, parts } = load(&scenario)?;
    let aggregator = AggregatorConfig::load(&dir.federation())?;
    let nodes = (0..parts.len())
        .map(|i| NodeConfig::load(&dir.node(i).config()).with_context(|| format!("node {}", node_name(i))))
        .collect::<anyhow::Result<_>>()?;
    let faults = (0..parts.len()).map(|i| simulation(&s, i)).collect();
    Ok(Prepared { scenario: s, dataset, split, parts, aggregator, nodes, faults, dir })
}

/// The data of a run, as [`load`] reads and divides it.
struct Data {
    /// The scenario, its standardisation statistics filled in.
    scenario: Scenario,
    dataset: Dataset,
    split: Split,
    parts: Vec<Vec<usize>>,
}

/// Loads the scenario's data, splits it into test, reference and private rows, preprocesses it
/// and spreads the private rows across the nodes.
fn load(scenario: &Scenario) -> anyhow::Result<Data> {
    let mut s = scenario.clone();
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
    Ok(Data { scenario: s, dataset, split, parts })
}

/// Writes the reference set and the test rows; returns the reference set's id.
fn write_public(dir: &RunDir, dataset: &Dataset, split: &Split) -> anyhow::Result<ReferenceSetId> {
    let reference = ReferenceSet::new(split.reference.len(), dataset.dim, dataset.subset(&split.reference).features)?;
    let id = aggregator::reference::write(&dir.reference(), &reference)?;
    data::write_rows(&dir.test_rows(), &split.test)?;
    Ok(id)
}

/// Writes node `i`'s folder (its rows, its key, its copy of the reference set); returns its
/// roster entry and its config.
fn node_files(
    s: &Scenario,
    dir: &RunDir,
    i: usize,
    part: &[usize],
    dataset: &Dataset,
    federation: &FederationId,
    reference: ReferenceSetId,
) -> anyhow::Result<(RosterEntry, NodeConfig)> {
    let ndir = dir.node(i);
    std::fs::create_dir_all(ndir.root())?;
    let _ = std::fs::remove_dir_all(ndir.state());
    let key = dir.node_key(i);
    let _ = std::fs::remove_file(&key);
    let id = net::keys::generate(&key)?;
    // The runner made the partition, so it declares each node's count, as an operator would:
    // `weighted_by_samples` then weighs what the roster says, and no node is asked for it.
    let declared = s.nodes.declare_samples.then_some(part.len() as u64);
    let entry = RosterEntry { name: node_name(i), peer_id: id.id(), samples: declared };
    data::write_rows(&ndir.rows(), part)?;
    // The reference set is public: each node starts with its own copy (checked against the
    // announced hash). Without one, a node fetches it from the aggregator.
    if s.nodes.copy_reference {
        std::fs::create_dir_all(ndir.state())?;
        std::fs::copy(dir.reference(), ndir.reference())?;
    }
    let mut spec = s.data.clone();
    spec.rows = Some(ndir.rows());
    spec.classes = Some(dataset.classes);
    let config = NodeConfig {
        federation: federation.clone(),
        key,
        // Set by the runner once the aggregator has bound its address.
        aggregator: Multiaddr::empty(),
        listen: Vec::new(),
        state_dir: ndir.state(),
        reference: ndir.reference(),
        seed: derive(s.seed, Stream::Init, 1 + i as u64),
        backend: s.backend,
        data: spec,
        model: s.architecture(i).clone(),
        train: s.nodes.train.clone(),
        digest: s.nodes.digest.clone(),
        abstain: s.nodes.abstain.clone(),
        privacy: s.nodes.privacy.as_ref().and_then(|p| p.node(s.rounds, s.seed, i)),
        policy: policy(s, reference),
        ledger: Default::default(),
        padding: None,
        metrics: None,
        http: Default::default(),
    };
    Ok((entry, config))
}

/// Node `i`'s simulated faults (honest where the scenario gives it none).
fn simulation(s: &Scenario, i: usize) -> Simulation {
    let fault = s.faults.iter().find(|f| f.node == i);
    Simulation {
        delay_ms: fault.map_or(0, |f| f.delay_ms),
        attack: fault.map_or(Default::default(), |f| f.attack),
        leave_at_round: fault.and_then(|f| f.drop_at),
        seed: derive(s.seed, Stream::Fault, i as u64),
        claim_samples: fault.and_then(|f| f.claim_samples),
    }
}

/// The aggregator's config (its listen addresses are set by the runner); empties its output folder.
fn aggregator_config(
    s: &Scenario,
    dir: &RunDir,
    dataset: &Dataset,
    federation: FederationId,
    roster: Vec<RosterEntry>,
    reference: ReferenceSetId,
) -> AggregatorConfig {
    let mut validation = s.data.clone();
    validation.rows = Some(dir.test_rows());
    validation.classes = Some(dataset.classes);
    let _ = std::fs::remove_dir_all(dir.aggregator());
    AggregatorConfig {
        federation,
        key: dir.aggregator_key(),
        listen: Vec::new(),
        output: dir.aggregator(),
        rounds: s.rounds,
        seed: s.seed,
        backend: s.backend,
        classes: dataset.classes,
        roster,
        reference: ReferenceConfig { path: dir.reference(), sha256: reference },
        round: s.aggregator_round(),
        consensus: s.consensus.clone(),
        student: s.student.clone(),
        validation: Some(validation),
        metrics: None,
        http: Default::default(),
        // Every node of a simulation dials from the same address (127.0.0.1): room for all of
        // them to be in their handshake at once, rather than refusals and redials.
        connections: aggregator::config::ConnectionsConfig::for_one_address(s.split.nodes),
    }
}

/// A node's query policy in a simulation: the scenario's reference set pinned, and limits that
/// admit exactly what the scenario's aggregator asks (its temperature, its encoding, even `f32`,
/// its samples a round and its rounds) and nothing more.
fn policy(s: &Scenario, reference: ReferenceSetId) -> QueryPolicy {
    QueryPolicy {
        min_temperature: s.round.temperature,
        encodings: vec![s.round.encoding],
        max_samples_per_round: s.round.samples,
        max_rounds: s.rounds,
        share_sample_count: !s.nodes.declare_samples,
        ..QueryPolicy::pinned(reference)
    }
}

/// Writes `federation.toml`, each node's `node.toml` (naming the aggregator at `agg_addr`) and,
/// for a node with simulated faults, its `simulation.toml` (read by `fd-sim-node`, never by
/// `fd-node`).
pub fn write_configs(p: &mut Prepared, agg_addr: &Multiaddr) -> anyhow::Result<()> {
    write_toml(&p.dir.federation(), &p.aggregator)?;
    for i in 0..p.nodes.len() {
        p.nodes[i].aggregator = agg_addr.clone();
        let ndir = p.dir.node(i);
        write_toml(&ndir.config(), &p.nodes[i])?;
        if !p.faults[i].is_honest() {
            write_toml(&ndir.simulation(), &p.faults[i])?;
        }
    }
    Ok(())
}

/// Writes a config as TOML.
pub fn write_toml<T: serde::Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let text = toml::to_string_pretty(value).context("serialising a config")?;
    learning::fs::atomic_write(path, text.as_bytes())?;
    Ok(())
}
