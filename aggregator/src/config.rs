//! The aggregator's configuration file (`federation.toml`), deserialized straight into
//! validated types, and [`AggregatorConfig::validate`], which checks everything that can be
//! checked before a file is read or a port is bound.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use learning::consensus::{self, ConsensusConfig, MIN_PARTICIPANTS, Rule};
use learning::data::DataSpec;
use learning::fs::resolve;
use learning::train::DistillConfig;
use learning::{Architecture, BackendKind};
use net::multiaddr::Multiaddr;
use protocol::{Encoding, FederationId, ParticipantId, ReferenceSetId};
use serde::{Deserialize, Serialize};

use crate::error::Error;
pub use crate::weights::DEFAULT_SAMPLE_COUNT_CLIP;
use crate::weights::SampleCounts;

/// Everything the aggregator needs; relative paths are resolved against the config file's folder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregatorConfig {
    /// Federation id.
    pub federation: FederationId,
    /// Key file (see `fd-aggregator keygen`).
    pub key: PathBuf,
    /// Listen addresses, e.g. `/ip4/0.0.0.0/tcp/4001` and `/ip4/0.0.0.0/udp/4001/quic-v1`.
    pub listen: Vec<Multiaddr>,
    /// Output folder: checkpoints, metrics, the global model, the report.
    pub output: PathBuf,
    /// Number of rounds.
    pub rounds: u64,
    /// Seed of every random choice (sample selection, student initialisation and training).
    #[serde(default)]
    pub seed: u64,
    /// CPU backend.
    #[serde(default)]
    pub backend: BackendKind,
    /// Serve Prometheus metrics at `http://ADDR/metrics` (e.g. `"127.0.0.1:9464"`); absent: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<std::net::SocketAddr>,
    /// How the endpoint at `metrics` is served (`[http]`): the live view, an address other than
    /// loopback, the host names it answers to.
    #[serde(default, skip_serializing_if = "net::http::HttpConfig::is_default")]
    pub http: net::http::HttpConfig,
    /// Number of classes every model predicts.
    pub classes: usize,
    /// Nodes allowed to join (`[[roster]]` tables; `fd-aggregator roster add` writes them).
    #[serde(default)]
    pub roster: Vec<RosterEntry>,
    /// The public reference set.
    pub reference: ReferenceConfig,
    /// Round settings.
    pub round: RoundConfig,
    /// How soft labels are combined.
    #[serde(default)]
    pub consensus: ConsensusConfig,
    /// The global student.
    pub student: StudentConfig,
    /// Optional labelled data to evaluate the global model on.
    #[serde(default)]
    pub validation: Option<DataSpec>,
    /// Limits on incoming connections still in their handshake (`[connections]`).
    #[serde(default, skip_serializing_if = "ConnectionsConfig::is_default")]
    pub connections: ConnectionsConfig,
}

/// How many incoming connections may be in their handshake at once, in all and from one IP
/// address. Beyond either, a connection is refused and its node dials again shortly. A host that
/// opens silent connections holds at most `pending_per_ip` of the slots; raise it when many
/// nodes share one address (behind one NAT, or every node of a simulation on loopback).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionsConfig {
    /// In all (default 64).
    #[serde(default = "default_pending")]
    pub pending: u32,
    /// From one IP address (default 8; at most `pending`).
    #[serde(default = "default_pending_per_ip")]
    pub pending_per_ip: u32,
    /// Try to replace a node's relayed connection with a direct one (DCUtR hole punching; the
    /// node must turn it on too). Off by default: only global addresses are dialled, but a node
    /// chooses which (see `net::punch`).
    #[serde(default)]
    pub hole_punching: bool,
}

fn default_pending() -> u32 {
    net::NetConfig::DEFAULT_MAX_PENDING_INCOMING
}

fn default_pending_per_ip() -> u32 {
    net::NetConfig::DEFAULT_MAX_PENDING_INCOMING_PER_IP
}

impl Default for ConnectionsConfig {
    fn default() -> Self {
        Self { pending: default_pending(), pending_per_ip: default_pending_per_ip(), hole_punching: false }
    }
}

impl ConnectionsConfig {
    /// Room for `hosts` handshakes at once from one address, and for the defaults' share of
    /// everyone else: what a simulation that runs every node on loopback needs.
    pub fn for_one_address(hosts: usize) -> Self {
        let d = Self::default();
        let hosts = u32::try_from(hosts).unwrap_or(u32::MAX);
        Self {
            pending: d.pending.max(hosts.saturating_add(d.pending_per_ip)),
            pending_per_ip: d.pending_per_ip.max(hosts),
            hole_punching: d.hole_punching,
        }
    }

    fn is_default(&self) -> bool {
        *self == Self::default()
    }

    fn validate(&self) -> Result<(), Error> {
        if self.pending == 0 {
            return Err(Error::config("connections.pending", "must be positive"));
        }
        if self.pending_per_ip == 0 || self.pending_per_ip > self.pending {
            return Err(Error::config(
                "connections.pending_per_ip",
                format!("{} must be between 1 and connections.pending ({})", self.pending_per_ip, self.pending),
            ));
        }
        Ok(())
    }
}

/// One allowed node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RosterEntry {
    /// Name for logs and reports.
    pub name: String,
    /// Its libp2p PeerId (printed by `fd-node keygen`).
    #[serde(with = "net::keys::peer_id_text")]
    pub peer_id: ParticipantId,
    /// Its number of private samples, as the operator knows it: what `weighted_by_samples`
    /// weighs it by. Without it, the node is asked for its count (which it may withhold) and a
    /// reported count is clipped to `round.sample_count_clip` × the round's median.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<u64>,
}

/// Where the reference set is and what its hash must be.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceConfig {
    /// File of canonical reference-set bytes.
    pub path: PathBuf,
    /// Expected SHA-256 (hex) of the file.
    #[serde(with = "protocol::ids::reference_set_hex")]
    pub sha256: ReferenceSetId,
}

/// Settings of each round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoundConfig {
    /// Reference samples per round (a fresh seeded subset each round).
    pub samples: u32,
    /// Softmax temperature of the soft labels.
    pub temperature: f32,
    /// Payload encoding: `f32`, `f16`, `q8`, `q4`, `top2`, `top1`, `top2q8` or `top1q8` (under
    /// secure aggregation, the consensus's alone: a submission is a masked vector).
    #[serde(default = "default_encoding")]
    pub encoding: Encoding,
    /// Leave out the consensus's per-sample weights and counts when every sample weighs 1 and
    /// has every participant ([`protocol::Consensus::compact`]; lossless).
    #[serde(default)]
    pub compact_consensus: bool,
    /// Encoding of the consensus the aggregator sends (default: `encoding`, both ways).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consensus_encoding: Option<Encoding>,
    /// Samples the consensus carries: the first N of the round's draw (the seeded draw of N is
    /// a subset of the round's), so that the nodes learn fuller rows on fewer samples while the
    /// student learns from every submitted one (default: every sample of the round).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consensus_samples: Option<u32>,
    /// Submissions needed to close a round after its deadline (default: [`default_quorum`], every
    /// roster member but one); at least 3, so that no node's labels can be read back from the
    /// consensus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum: Option<usize>,
    /// Seconds from announcement to deadline.
    #[serde(default = "default_deadline")]
    pub deadline_secs: f64,
    /// `weighted_by_samples`: a sample count a node reports itself (the roster declares none
    /// for it) counts at most this multiple of the median count of the round; ≥ 1.
    #[serde(default = "default_sample_count_clip")]
    pub sample_count_clip: f64,
    /// Secure aggregation: the aggregator learns only the sum of the round's soft labels, never
    /// one node's ([`SecureAggregation`]). Off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure_aggregation: Option<SecureAggregation>,
    /// Roster members asked each round: a count (`cohort = 100`) or a fraction of the roster
    /// (`cohort = 0.1`), drawn afresh each round from the round's seed ([`crate::cohort`]); the
    /// quorum is counted within the cohort. Absent: every roster member, every round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cohort: Option<Cohort>,
}

/// `round.cohort`: how many roster members a round asks.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Cohort {
    /// This many members (at most the roster).
    Count(usize),
    /// This fraction of the roster, in (0, 1], rounded up.
    Fraction(f64),
}

impl Cohort {
    /// The cohort's size for a roster of `roster` members (never more than the roster).
    pub fn size(&self, roster: usize) -> usize {
        match *self {
            Cohort::Count(k) => k.min(roster),
            Cohort::Fraction(f) => ((f * roster as f64).ceil() as usize).min(roster),
        }
    }

    fn validate(&self, roster: usize) -> Result<(), Error> {
        match *self {
            Cohort::Fraction(f) if !(f.is_finite() && f > 0.0 && f <= 1.0) => {
                Err(Error::config("round.cohort", format!("{f}: a fraction of the roster must be in (0, 1]")))
            }
            c if c.size(roster) < MIN_PARTICIPANTS => Err(Error::config(
                "round.cohort",
                format!(
                    "{} members of a roster of {roster}: a round needs at least {MIN_PARTICIPANTS} (a consensus of fewer gives each one's labels away)",
                    c.size(roster)
                ),
            )),
            _ => Ok(()),
        }
    }
}

/// `[round.secure_aggregation]`: each round's cohort masks its soft labels in pairs (SecAgg+,
/// [`protocol::secagg`]); the aggregator unmasks only the sum over the members that stayed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecureAggregation {
    /// T: shares that rebuild a member's secrets, and members that must survive the round (and
    /// sign its survivor list). Default: half a member's neighbours, plus one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<usize>,
    /// k: neighbours each member masks with (default 2⌈log₂ n⌉, the complete graph when that is
    /// not smaller than the cohort).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degree: Option<usize>,
    /// Fixed-point scale S of the soft labels: 255 (the `q8` encoding's precision, 2-byte words
    /// up to 257 members) or up to 2¹⁶ (finer, 3- or 4-byte words).
    #[serde(default = "default_secure_scale")]
    pub scale: u32,
    /// Seconds the aggregator waits for the members' answers at each of the protocol's steps
    /// (keys, shares, signatures, unmasking); a member that does not answer in time drops out.
    #[serde(default = "default_stage_secs")]
    pub stage_secs: f64,
}

fn default_secure_scale() -> u32 {
    255
}

fn default_stage_secs() -> f64 {
    10.0
}

impl SecureAggregation {
    /// The protocol's parameters for a cohort of `n`.
    pub fn params(&self, n: usize) -> Result<protocol::secagg::Params, Error> {
        let fixed = protocol::secagg::FixedPoint::new(self.scale)
            .map_err(|e| Error::config("round.secure_aggregation.scale", e))?;
        let bits = fixed.bits_for(n).map_err(|e| Error::config("round.secure_aggregation.scale", e))?;
        let k = self.degree.unwrap_or_else(|| protocol::secagg::default_degree(n)).min(n.saturating_sub(1));
        let threshold = self.threshold.unwrap_or(k / 2 + 1).max(2);
        Ok(protocol::secagg::Params { threshold, degree: self.degree, bits })
    }

    fn validate(&self, roster: usize, quorum: usize) -> Result<(), Error> {
        let key = "round.secure_aggregation";
        if let Some(t) = self.threshold
            && (t < 2 || t >= quorum)
        {
            return Err(Error::config(
                format!("{key}.threshold"),
                format!(
                    "{t} must be at least 2, at most the quorum ({quorum}) and below the members a round asks ({roster}: the roster, or round.cohort): a round closes with the quorum, and T of its members must survive to unmask the sum"
                ),
            ));
        }
        if let Some(k) = self.degree
            && !(2..=255).contains(&k)
        {
            return Err(Error::config(format!("{key}.degree"), format!("{k} must be 2 to 255")));
        }
        if self.scale == 0 || self.scale > 1 << 16 {
            return Err(Error::config(format!("{key}.scale"), format!("{} must be 1 to 65536", self.scale)));
        }
        let params = self.params(roster)?;
        let k = params.degree_for(roster.max(2));
        if !protocol::secagg::is_majority(params.threshold, k) {
            return Err(Error::config(
                format!("{key}.threshold"),
                format!(
                    "{} is not more than half of a member's {k} neighbours: nodes refuse such a round (two disjoint groups of members could each sign a different survivor list)",
                    params.threshold
                ),
            ));
        }
        if !(self.stage_secs.is_finite() && self.stage_secs > 0.0) {
            return Err(Error::config(format!("{key}.stage_secs"), "must be positive"));
        }
        Ok(())
    }
}

fn default_sample_count_clip() -> f64 {
    DEFAULT_SAMPLE_COUNT_CLIP
}

fn default_encoding() -> Encoding {
    Encoding::Q8
}

fn default_deadline() -> f64 {
    30.0
}

/// The global model and how it learns from the consensus.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudentConfig {
    /// Architecture (may differ from every node's).
    pub architecture: Architecture,
    /// Continue from the previous round's global model.
    #[serde(default = "yes")]
    pub warm_start: bool,
    /// Distillation settings; `temperature` is taken from the round.
    #[serde(default)]
    pub distill: DistillConfig,
    /// What the nodes learn from after each round.
    #[serde(default)]
    pub teaching: Teaching,
}

/// The soft labels sent back to the nodes after a round, on that round's samples. The student's
/// own labels derive only from consensus labels, so they reveal nothing the consensus did not.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Teaching {
    /// The consensus itself (the combined soft labels of the nodes).
    #[default]
    Consensus,
    /// The global student's soft labels, after it distilled this round's consensus.
    Student,
    /// `student_weight` × the student's labels + (1 − `student_weight`) × the consensus.
    Mix {
        /// Share of the student, in [0, 1].
        student_weight: f32,
    },
}

impl Teaching {
    /// The labels to teach with, given the consensus and the student's labels (rows of
    /// `classes`, rows summing to 1).
    pub fn labels(&self, consensus: &[f32], student: &[f32]) -> Vec<f32> {
        match *self {
            Teaching::Consensus => consensus.to_vec(),
            Teaching::Student => student.to_vec(),
            Teaching::Mix { student_weight: w } => {
                consensus.iter().zip(student).map(|(c, s)| (1.0 - w) * c + w * s).collect()
            }
        }
    }
}

fn yes() -> bool {
    true
}

/// The quorum when `round.quorum` is absent: every roster member but one, and never fewer than
/// [`MIN_PARTICIPANTS`] (nor more than the roster, which validation then refuses if it is under
/// 3). `max(3, n − 1)` rather than a fraction such as ⌈0.8 n⌉: a fraction of a small roster
/// rounds up to all of it (⌈0.8 × 4⌉ = 4), so one node with a wrong CSV, a crash or a lost
/// link would hold every round past its deadline in the federations newcomers start with,
/// while `n − 1` closes it at the deadline for any roster of 4 or more. Larger federations that
/// must ride out several absent members set `round.quorum` themselves.
pub fn default_quorum(roster: usize) -> usize {
    roster.saturating_sub(1).max(MIN_PARTICIPANTS).min(roster)
}

impl RoundConfig {
    /// The members a round asks, of a roster of `roster`: the cohort's size, or the roster.
    pub fn asked(&self, roster: usize) -> usize {
        self.cohort.map_or(roster, |c| c.size(roster))
    }

    /// The quorum for a roster of `roster` nodes, counted within the round's cohort:
    /// `round.quorum`, or [`default_quorum`] of the cohort (of the roster without one).
    pub fn quorum(&self, roster: usize) -> usize {
        self.quorum.unwrap_or_else(|| default_quorum(self.asked(roster)))
    }

    /// Checks the ranges, given the roster size.
    pub fn validate(&self, roster: usize) -> Result<(), Error> {
        if let Some(c) = &self.cohort {
            c.validate(roster)?;
        }
        let (quorum, asked) = (self.quorum(roster), self.asked(roster));
        if quorum < MIN_PARTICIPANTS || quorum > asked {
            let of = if self.cohort.is_some() { "the cohort's size" } else { "the roster size" };
            return Err(Error::config(
                "round.quorum",
                format!(
                    "{quorum} is not between {MIN_PARTICIPANTS} and {of} {asked} (a consensus of fewer than {MIN_PARTICIPANTS} nodes gives each one's labels away)"
                ),
            ));
        }
        if !(self.deadline_secs.is_finite() && self.deadline_secs > 0.0) {
            return Err(Error::config("round.deadline_secs", "must be positive"));
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(Error::config("round.temperature", "must be positive"));
        }
        if self.samples == 0 {
            return Err(Error::config("round.samples", "must be positive"));
        }
        if let Some(n) = self.consensus_samples
            && !(1..=self.samples).contains(&n)
        {
            return Err(Error::config(
                "round.consensus_samples",
                format!("{n} must be between 1 and round.samples ({})", self.samples),
            ));
        }
        if !(self.sample_count_clip.is_finite() && self.sample_count_clip >= 1.0) {
            return Err(Error::config(
                "round.sample_count_clip",
                format!("{} must be a number ≥ 1", self.sample_count_clip),
            ));
        }
        if let Some(secure) = &self.secure_aggregation {
            secure.validate(asked, quorum)?;
        }
        Ok(())
    }

    /// Refuses a robust rule that would quietly degrade into the plain mean in the smallest
    /// round that can close (the median of two is already excluded by the quorum's floor).
    pub fn check_consensus(&self, roster: usize, consensus: &ConsensusConfig) -> Result<(), Error> {
        let quorum = self.quorum(roster);
        if let Rule::TrimmedMean { trim } = consensus.rule
            && consensus::trimmed_count(quorum, trim) == 0
        {
            return Err(Error::config(
                "consensus.rule.trim",
                format!(
                    "{trim} trims nothing from a round of {quorum} submissions (round.quorum): it would be the plain mean; use at least {} or a larger quorum",
                    (1000.0 / quorum as f32).ceil() / 1000.0
                ),
            ));
        }
        if self.secure_aggregation.is_some() {
            // The aggregator only ever holds the sum: a rule that needs each node's row, or its
            // weight, cannot run on it.
            let needs_rows = match consensus.rule {
                Rule::Mean => None,
                Rule::WeightedBySamples => Some("weighted_by_samples (each node's weight multiplies its row)"),
                Rule::Median => Some("median"),
                Rule::TrimmedMean { .. } => Some("trimmed_mean"),
                Rule::Confidence { .. } => Some("confidence (each node's row is weighted by its own entropy)"),
            };
            if let Some(rule) = needs_rows {
                return Err(Error::config(
                    "consensus.rule",
                    format!(
                        "{rule} needs every node's soft labels, but round.secure_aggregation lets the aggregator see only their sum: use `mean` (abstention-aware), or turn secure aggregation off"
                    ),
                ));
            }
            if consensus.center_clip.is_some() {
                return Err(Error::config(
                    "consensus.center_clip",
                    "centered clipping needs every node's row of a sample, but round.secure_aggregation lets the aggregator see only their sum: remove it, or turn secure aggregation off",
                ));
            }
        }
        Ok(())
    }
}

impl AggregatorConfig {
    /// What `weighted_by_samples` weighs nodes by (see [`crate::weights`]).
    pub fn sample_counts(&self) -> SampleCounts {
        SampleCounts {
            declared: self.roster.iter().filter_map(|e| e.samples.map(|n| (e.peer_id, n))).collect(),
            clip: self.round.sample_count_clip,
        }
    }

    /// Whether the consensus needs `peer` to report its own sample count: the rule weighs by
    /// counts and the roster declares none for it.
    pub fn wants_sample_count(&self, peer: &ParticipantId) -> bool {
        self.consensus.rule == Rule::WeightedBySamples
            && self.roster.iter().any(|e| e.peer_id == *peer && e.samples.is_none())
    }

    /// Reads a config file, resolves relative paths against its folder and validates it. Reads
    /// nothing else: the key, the reference set and the data are opened by [`crate::Aggregator::start`].
    pub fn load(path: &Path) -> Result<Self, Error> {
        let cfg: Self = net::cli::read_toml(path)?;
        let cfg = cfg.resolved(path.parent().unwrap_or(Path::new(".")));
        cfg.validate()?;
        Ok(cfg)
    }

    /// Resolves relative paths against `base`.
    pub fn resolved(mut self, base: &Path) -> Self {
        self.key = resolve(base, &self.key);
        self.output = resolve(base, &self.output);
        self.reference.path = resolve(base, &self.reference.path);
        self.validation = self.validation.map(|v| v.resolved(base));
        self
    }

    /// Checks every field that can be checked without I/O, naming the first one at fault.
    pub fn validate(&self) -> Result<(), Error> {
        self.http.validate(self.metrics).map_err(|(key, why)| Error::config(key, why))?;
        if self.listen.is_empty() {
            return Err(Error::config("listen", "no address"));
        }
        if self.rounds == 0 {
            return Err(Error::config("rounds", "must be positive"));
        }
        if self.classes < 2 {
            return Err(Error::config("classes", "at least 2"));
        }
        if self.roster.is_empty() {
            return Err(Error::config(
                "roster",
                "no nodes: add each data holder with `fd-aggregator roster add --config federation.toml NAME PEERID`",
            ));
        }
        let mut names = HashSet::new();
        let mut ids = HashSet::new();
        for e in &self.roster {
            if e.name.trim().is_empty() || !names.insert(e.name.as_str()) {
                return Err(Error::config("roster", format!("name `{}` is empty or used twice", e.name)));
            }
            if !ids.insert(e.peer_id) {
                return Err(Error::config("roster", format!("{}'s PeerId is listed twice", e.name)));
            }
            if e.samples == Some(0) {
                return Err(Error::config(
                    "roster.samples",
                    format!("{} declares 0 samples; a node with no data cannot be weighed", e.name),
                ));
            }
        }
        self.round.validate(self.roster.len())?;
        self.consensus.validate().map_err(|e| Error::config("consensus", e))?;
        self.round.check_consensus(self.roster.len(), &self.consensus)?;
        self.student.distill.validate().map_err(|e| Error::config("student.distill", e))?;
        if let Teaching::Mix { student_weight } = self.student.teaching
            && !(0.0..=1.0).contains(&student_weight)
        {
            return Err(Error::config("student.teaching.student_weight", "must be in [0, 1]"));
        }
        if let Some(v) = &self.validation {
            v.source().map_err(|e| Error::config("validation", e))?;
        }
        self.connections.validate()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::Identity;

    fn config(nodes: u8, quorum: Option<usize>, rule: Rule) -> AggregatorConfig {
        AggregatorConfig {
            federation: FederationId::new("t").expect("valid"),
            key: "agg.key".into(),
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("valid")],
            output: "out".into(),
            rounds: 1,
            seed: 0,
            backend: Default::default(),
            classes: 3,
            roster: (0..nodes)
                .map(|i| RosterEntry {
                    name: format!("n{i}"),
                    peer_id: Identity::from_seed([i + 1; 32]).expect("seed").id(),
                    samples: None,
                })
                .collect(),
            reference: ReferenceConfig { path: "ref".into(), sha256: ReferenceSetId([0; 32]) },
            round: RoundConfig {
                samples: 10,
                temperature: 2.0,
                encoding: Encoding::Q8,
                compact_consensus: false,
                consensus_encoding: None,
                consensus_samples: None,
                quorum,
                deadline_secs: 5.0,
                sample_count_clip: 2.0,
                secure_aggregation: None,
                cohort: None,
            },
            consensus: ConsensusConfig { rule, ..Default::default() },
            student: StudentConfig {
                architecture: Architecture::Mlp { hidden: vec![4], dropout: 0.0 },
                warm_start: true,
                distill: Default::default(),
                teaching: Default::default(),
            },
            validation: None,
            connections: Default::default(),
            metrics: None,
            http: Default::default(),
        }
    }

    fn field(cfg: AggregatorConfig) -> String {
        match cfg.validate() {
            Err(Error::Config { field, .. }) => field,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn fewer_than_three_participants_and_degenerate_robust_rules_are_refused_naming_the_setting() {
        assert!(config(3, None, Rule::Mean).validate().is_ok());
        assert_eq!(field(config(2, None, Rule::Mean)), "round.quorum", "a roster of two, quorum defaulting to it");
        assert_eq!(field(config(5, Some(2), Rule::Mean)), "round.quorum");
        assert_eq!(field(config(3, Some(2), Rule::Median)), "round.quorum", "the median of two");
        assert!(config(5, Some(3), Rule::Median).validate().is_ok());
        // 4 × 0.2 < 1: nothing trimmed in a round of four.
        assert_eq!(field(config(10, Some(4), Rule::TrimmedMean { trim: 0.2 })), "consensus.rule.trim");
        assert!(config(10, Some(5), Rule::TrimmedMean { trim: 0.2 }).validate().is_ok());
        let e = config(10, Some(3), Rule::TrimmedMean { trim: 0.3 }).validate().unwrap_err().to_string();
        assert!(e.contains("0.334"), "the smallest trim that works is named: {e}");
        assert!(config(10, Some(3), Rule::TrimmedMean { trim: 0.334 }).validate().is_ok());
        assert_eq!(field(config(5, None, Rule::Confidence { power: 1.0, max_share: 0.5 })), "consensus");
    }

    #[test]
    fn secure_aggregation_refuses_rules_that_need_rows_and_bad_thresholds_naming_the_setting() {
        let secure = |n: u8, rule: Rule, threshold: Option<usize>| {
            let mut c = config(n, None, rule);
            c.round.secure_aggregation =
                Some(SecureAggregation { threshold, degree: None, scale: 255, stage_secs: 10.0 });
            c
        };
        assert!(secure(5, Rule::Mean, None).validate().is_ok());
        assert!(secure(5, Rule::Mean, Some(3)).validate().is_ok());
        for rule in [Rule::Median, Rule::WeightedBySamples, Rule::CONFIDENCE, Rule::TrimmedMean { trim: 0.34 }] {
            assert_eq!(field(secure(5, rule.clone(), None)), "consensus.rule", "{rule:?}");
            // The same rule without secure aggregation is accepted.
            assert!(config(5, None, rule).validate().is_ok());
        }
        let mut clipped = secure(5, Rule::Mean, None);
        clipped.consensus.center_clip = Some(2.0);
        assert_eq!(field(clipped), "consensus.center_clip");
        // T at the quorum (4 of 5): a cohort of the quorum's size could not hold it.
        assert_eq!(field(secure(5, Rule::Mean, Some(4))), "round.secure_aggregation.threshold");
        assert_eq!(field(secure(5, Rule::Mean, Some(5))), "round.secure_aggregation.threshold");
        assert_eq!(field(secure(5, Rule::Mean, Some(1))), "round.secure_aggregation.threshold");
        // T = 3 of a member's 8 neighbours (a roster of 10): no majority, so nodes would refuse.
        assert_eq!(field(secure(10, Rule::Mean, Some(3))), "round.secure_aggregation.threshold");
        assert!(secure(10, Rule::Mean, Some(5)).validate().is_ok());
        let mut wide = secure(5, Rule::Mean, None);
        if let Some(s) = &mut wide.round.secure_aggregation {
            s.scale = 1 << 20;
        }
        assert_eq!(field(wide), "round.secure_aggregation.scale");
    }

    #[test]
    fn secure_aggregation_defaults_pick_a_threshold_below_the_neighbourhood_and_a_word_that_holds_the_sum() {
        let s = SecureAggregation { threshold: None, degree: None, scale: 255, stage_secs: 10.0 };
        // 5 members: the complete graph (4 neighbours), T = 3, 16-bit words (5 × 255 < 2¹⁶).
        assert_eq!(s.params(5).unwrap(), protocol::secagg::Params { threshold: 3, degree: None, bits: 16 });
        // 100 members: 14 neighbours, T = 8.
        assert_eq!(s.params(100).unwrap().threshold, 8);
        let fine = SecureAggregation { scale: 1 << 16, ..s };
        assert_eq!(fine.params(100).unwrap().bits, 24);
    }

    #[test]
    fn the_default_quorum_spares_one_member_and_keeps_three() {
        let quorum = |n: usize| config(n as u8, None, Rule::Mean).round.quorum(n);
        assert_eq!([3, 4, 5, 10, 100].map(quorum), [3, 3, 4, 9, 99]);
        assert_eq!(quorum(2), 2, "never more than the roster: validation names the setting");
        assert_eq!(config(10, Some(10), Rule::Mean).round.quorum(10), 10, "a quorum set is kept");
        assert!(config(4, None, Rule::Mean).validate().is_ok());
    }
    #[test]
    fn the_metrics_address_is_a_socket_address_off_by_default() {
        let text = toml::to_string(&config(3, None, Rule::Mean)).expect("serialize");
        assert!(!text.contains("metrics"), "off: not written");
        let path = Path::new("federation.toml");
        let on: AggregatorConfig =
            net::cli::parse_toml(path, &format!("metrics = \"127.0.0.1:9464\"\n{text}")).expect("parses");
        assert_eq!(on.metrics, Some("127.0.0.1:9464".parse().expect("addr")));
        let e = net::cli::parse_toml::<AggregatorConfig>(path, &format!("metrics = \"localhost\"\n{text}"))
            .expect_err("not an address");
        assert_eq!(e.field, "metrics");
    }

    #[test]
    fn handshake_limits_default_to_the_networks_and_are_checked_naming_the_setting() {
        let cfg = config(3, None, Rule::Mean);
        let text = toml::to_string(&cfg).expect("serialize");
        assert!(!text.contains("connections"), "the defaults are not written");
        let path = Path::new("federation.toml");
        let parsed: AggregatorConfig = net::cli::parse_toml(path, &text).expect("parses");
        assert_eq!((parsed.connections.pending, parsed.connections.pending_per_ip), (64, 8));
        let parsed: AggregatorConfig =
            net::cli::parse_toml(path, &format!("{text}\n[connections]\npending_per_ip = 32\n")).expect("parses");
        assert_eq!((parsed.connections.pending, parsed.connections.pending_per_ip), (64, 32));
        assert!(parsed.validate().is_ok());
        let with = |pending, pending_per_ip| AggregatorConfig {
            connections: ConnectionsConfig { pending, pending_per_ip, hole_punching: false },
            ..cfg.clone()
        };
        assert_eq!(field(with(0, 1)), "connections.pending");
        assert_eq!(field(with(64, 0)), "connections.pending_per_ip");
        assert_eq!(field(with(16, 17)), "connections.pending_per_ip", "a share larger than the whole");
        let e = net::cli::parse_toml::<AggregatorConfig>(path, &format!("{text}\n[connections]\nper_ip = 32\n"))
            .expect_err("unknown key");
        assert!(e.to_string().contains("per_ip"), "{e}");
        // A simulation of 100 nodes on one address: all of them at once, and the usual share
        // left for anyone else.
        let sim = ConnectionsConfig::for_one_address(100);
        assert_eq!((sim.pending, sim.pending_per_ip), (108, 100));
        assert_eq!(ConnectionsConfig::for_one_address(5), ConnectionsConfig::default());
        assert!(with(sim.pending, sim.pending_per_ip).validate().is_ok());
    }
}
