//! `fd-aggregator init`: a new federation's folder: the aggregator's key, a copy of the public
//! reference set, and a commented `federation.toml` with a fixed listen port and no nodes yet
//! (`fd-aggregator roster add` adds them). It returns what each data holder needs: the
//! aggregator's address with its PeerId, the reference set's hash, the federation's name and
//! classes.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use net::multiaddr::{Multiaddr, Protocol};
use protocol::{FederationId, ReferenceSetId};

use crate::error::Error;

/// What `fd-aggregator init` is asked for; validated by [`Init::validate`] before any I/O.
#[derive(Clone, Debug)]
pub struct Init {
    /// Folder to create (or an empty one) for the federation's files.
    pub dir: PathBuf,
    /// The reference set (`fd-aggregator reference build`), copied into `dir`.
    pub reference: PathBuf,
    /// The federation's name.
    pub federation: FederationId,
    /// Classes every model predicts (labels `0..classes`).
    pub classes: usize,
    /// Listen address with a fixed port, e.g. `/ip4/0.0.0.0/tcp/4001`.
    pub listen: Multiaddr,
    /// The host name or IP address nodes reach the aggregator at; default: the listen address's
    /// IP, or 127.0.0.1 if that is unspecified (0.0.0.0).
    pub public_host: Option<String>,
    /// Rounds.
    pub rounds: u64,
    /// Reference samples a round (at most the set's rows); default: up to 500.
    pub samples: Option<u32>,
    /// A labelled holdout the global model is scored on after each round (the `[validation]`
    /// table): its file, label column and header. Its classes and preprocessing are set to the
    /// federation's, and it is read once here, so that a wrong file shows before anything runs.
    pub validation: Option<learning::data::DataSpec>,
}

/// What a new federation's folder holds, and what its data holders need.
#[derive(Clone, Debug)]
pub struct Initialized {
    /// `dir/federation.toml`.
    pub config: PathBuf,
    /// The aggregator's PeerId.
    pub peer_id: String,
    /// The address nodes dial: the public host, the port, `/p2p/<PeerId>`.
    pub address: Multiaddr,
    /// The same over QUIC (UDP, the same port number), when `listen` is a TCP address: the
    /// aggregator listens on both, and a node may dial either.
    pub quic_address: Option<Multiaddr>,
    /// The reference set's SHA-256, which every node pins.
    pub reference_sha256: ReferenceSetId,
    /// The reference set's size in bytes, which every node pins too (`policy.reference_bytes`).
    pub reference_bytes: u64,
    /// The reference set's rows and features a row.
    pub reference_shape: (usize, usize),
    /// The preprocessing pinned beside the reference set, if any, which every node applies to
    /// its data: copied into `dir` beside the set's copy.
    pub preprocess: Option<learning::data::Preprocess>,
}

impl Init {
    /// Checks what can be checked without I/O.
    pub fn validate(&self) -> Result<(), Error> {
        if self.classes < 2 {
            return Err(Error::config("classes", "at least 2"));
        }
        if self.rounds == 0 || self.samples == Some(0) {
            return Err(Error::config("rounds", "rounds and samples must be positive"));
        }
        let port = self.listen.iter().find_map(|p| match p {
            Protocol::Tcp(port) => Some(port),
            Protocol::Udp(port) => Some(port),
            _ => None,
        });
        if port.is_none() || !self.listen.iter().any(|p| matches!(p, Protocol::Ip4(_) | Protocol::Ip6(_))) {
            return Err(Error::config(
                "listen",
                format!("`{}` needs an IP and a TCP or UDP port, e.g. /ip4/0.0.0.0/tcp/4001", self.listen),
            ));
        }
        Ok(())
    }

    /// Where the aggregator listens: `listen`, and its QUIC twin when `listen` is TCP.
    fn listens(&self) -> Vec<Multiaddr> {
        std::iter::once(self.listen.clone()).chain(quic_twin(&self.listen)).collect()
    }

    /// The address nodes dial, without its `/p2p/` suffix.
    fn public_address(&self) -> Multiaddr {
        let host = match &self.public_host {
            Some(h) => match h.parse::<IpAddr>() {
                Ok(IpAddr::V4(ip)) => Protocol::Ip4(ip),
                Ok(IpAddr::V6(ip)) => Protocol::Ip6(ip),
                Err(_) => Protocol::Dns(h.clone().into()),
            },
            None => match self.listen.iter().next() {
                Some(Protocol::Ip4(ip)) if !ip.is_unspecified() => Protocol::Ip4(ip),
                Some(Protocol::Ip6(ip)) if !ip.is_unspecified() => Protocol::Ip6(ip),
                _ => Protocol::Ip4([127, 0, 0, 1].into()),
            },
        };
        std::iter::once(host).chain(self.listen.iter().skip(1)).collect()
    }
}

/// Writes the federation's folder. Refuses to overwrite a `federation.toml` or a key. Blocking.
pub fn init(i: &Init) -> Result<Initialized, Error> {
    i.validate()?;
    let (set, reference_sha256) = crate::reference::read(&i.reference)?;
    let samples = i.samples.unwrap_or(set.samples.min(500) as u32);
    if samples as usize > set.samples {
        return Err(Error::config(
            "round.samples",
            format!("{samples} samples a round, but the reference set has {} rows", set.samples),
        ));
    }
    let preprocess = crate::reference::read_preprocess(&i.reference, reference_sha256)?;
    let validation = match &i.validation {
        Some(v) => {
            let v = learning::data::DataSpec {
                classes: Some(i.classes),
                preprocess: preprocess.clone().unwrap_or_default(),
                ..v.clone()
            };
            let d = v.load().map_err(|e| Error::config("validation", e))?;
            if d.dim != set.features {
                return Err(Error::config(
                    "validation",
                    format!("{} features a row, the reference set {}", d.dim, set.features),
                ));
            }
            Some(v)
        }
        None => None,
    };
    learning::fs::create_private_dir(&i.dir)?;
    let config = i.dir.join("federation.toml");
    if config.exists() {
        return Err(Error::config(
            "(file)",
            format!("{} exists already; init does not overwrite it", config.display()),
        ));
    }
    let copy = i.dir.join("reference.fdref");
    if !same_file(&i.reference, &copy) {
        std::fs::copy(&i.reference, &copy).map_err(|source| Error::Io { path: copy.clone(), source })?;
    }
    if let Some(p) = &preprocess {
        crate::reference::write_preprocess(&copy, reference_sha256, p)?;
    }
    let key = net::keys::generate(&i.dir.join("aggregator.key")).map_err(|e| Error::config("key", e))?;
    let peer_id = net::keys::peer_id_string(&key.id());
    let mut text = template(i, samples, &peer_id, reference_sha256);
    if let Some(v) = &validation {
        #[derive(serde::Serialize)]
        struct Table<'a> {
            validation: &'a learning::data::DataSpec,
        }
        let table = toml::to_string(&Table { validation: v }).map_err(|e| Error::config("validation", e))?;
        text.push_str(&format!(
            "\n# The labelled holdout the global model is scored on after each round: accuracy in\n\
             # output/report.md (in %) and output/metrics.csv. Same classes and preprocessing as the nodes.\n{table}"
        ));
    }
    learning::fs::atomic_write(&config, text.as_bytes())?;
    let p2p = Protocol::P2p(net::peer_id(&key.id()));
    let address = i.public_address().with(p2p.clone());
    let quic_address = quic_twin(&i.public_address()).map(|a| a.with(p2p));
    Ok(Initialized {
        config,
        peer_id,
        address,
        quic_address,
        reference_sha256,
        reference_bytes: set.to_bytes().len() as u64,
        reference_shape: (set.samples, set.features),
        preprocess,
    })
}

/// A TCP address's QUIC twin: the UDP port of the same number with `quic-v1` in place of the
/// TCP port; `None` for an address without a TCP port.
fn quic_twin(addr: &Multiaddr) -> Option<Multiaddr> {
    addr.iter().any(|p| matches!(p, Protocol::Tcp(_))).then(|| {
        addr.iter()
            .flat_map(|p| match p {
                Protocol::Tcp(port) => vec![Protocol::Udp(port), Protocol::QuicV1],
                p => vec![p],
            })
            .collect()
    })
}

fn same_file(a: &Path, b: &Path) -> bool {
    matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

/// A TOML string literal.
fn quoted(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn template(i: &Init, samples: u32, peer_id: &str, sha: ReferenceSetId) -> String {
    let last = i.classes - 1;
    let listen = i.listens().iter().map(|a| quoted(&a.to_string())).collect::<Vec<_>>().join(", ");
    let (fed, rounds, classes) = (quoted(i.federation.as_str()), i.rounds, i.classes);
    format!(
        r#"# federation.toml, written by `fd-aggregator init`. Relative paths are relative to this file.
# Run the federation with `fd-aggregator run --config federation.toml` once the roster below
# lists at least 3 nodes: each data holder runs `fd-node init` and sends you the PeerId it
# prints, and you add it with `fd-aggregator roster add --config federation.toml NAME PEERID`.
# The roster is at the end of this file: one [[roster]] table a node (name, peer_id, and
# optionally samples), written by `roster add` and `roster remove`.

# The federation's name; every node.toml names the same.
federation = {fed}
# The aggregator's secret key (mode 0600, never share it). Its PeerId is {peer_id}.
key = "aggregator.key"
# Where the aggregator listens: a fixed port that nodes can reach (open it in the firewall), over
# TCP and over QUIC (UDP, the same port number); a node dials either.
listen = [{listen}]
# Checkpoints, metrics, the global model and the report.
output = "output"
# Rounds of the federation.
rounds = {rounds}
# Classes every model predicts: every node's labels are 0 to {last}.
classes = {classes}

# The public reference set: the nodes label its rows each round. Every node pins its SHA-256
# (policy.reference_sha256 in node.toml) and answers on no other set.
[reference]
path = "reference.fdref"
sha256 = "{sha}"

# Each round: reference samples asked for, softmax temperature of the soft labels, payload
# encoding (q8 or f16; a node answers in f32 only if its policy lists it) and the seconds the
# nodes have to answer. The quorum (`quorum = N`, default: every node on the roster but one, so
# that one absent or unfit node cannot stall a round) is at least 3, so that no node's labels
# can be read back from the consensus.
[round]
samples = {samples}
temperature = 3.0
encoding = "q8"
deadline_secs = 120.0

# How the nodes' soft labels are combined: mean, median, trimmed_mean (with trim = 0.2),
# confidence, or weighted_by_samples (declare `samples = N` in each roster entry).
[consensus.rule]
kind = "mean"

# The global model, distilled from the consensus each round.
[student.architecture]
kind = "mlp"
hidden = [128]
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_writes_a_config_that_loads_once_three_nodes_are_on_the_roster() {
        let dir = tempfile::tempdir().unwrap();
        let set = protocol::ReferenceSet::new(4, 2, vec![0.0; 8]).unwrap();
        let reference = dir.path().join("public.fdref");
        let id = crate::reference::write(&reference, &set).unwrap();
        let i = Init {
            dir: dir.path().join("operator"),
            reference,
            federation: FederationId::new("clinics").unwrap(),
            classes: 3,
            listen: "/ip4/0.0.0.0/tcp/4001".parse().unwrap(),
            public_host: Some("fed.example.org".into()),
            rounds: 2,
            samples: Some(4),
            validation: None,
        };
        let done = init(&i).unwrap();
        assert_eq!(done.reference_sha256, id);
        assert_eq!(done.preprocess, None, "nothing pinned beside the set");
        assert!(done.address.to_string().starts_with("/dns/fed.example.org/tcp/4001/p2p/12D3KooW"), "{}", done.address);
        let quic = done.quic_address.as_ref().expect("a QUIC address beside the TCP one").to_string();
        assert_eq!(quic, done.address.to_string().replace("/tcp/4001/", "/udp/4001/quic-v1/"));
        assert!(matches!(init(&i), Err(Error::Config { .. })), "never overwrite a federation");
        match AggregatorConfig::load(&done.config) {
            Err(Error::Config { field, .. }) => assert_eq!(field, "roster"),
            other => panic!("an empty roster was accepted: {other:?}"),
        }
        for (n, name) in ["a", "b", "c"].iter().enumerate() {
            let peer = net::keys::keygen(&dir.path().join(format!("{n}.key"))).unwrap();
            crate::roster_edit::edit_file(&done.config, |t| crate::roster_edit::add(t, name, &peer, None)).unwrap();
        }
        let cfg = AggregatorConfig::load(&done.config).unwrap();
        assert_eq!((cfg.roster.len(), cfg.classes, cfg.reference.sha256), (3, 3, id));
        let listen: Vec<String> = cfg.listen.iter().map(|a| a.to_string()).collect();
        assert_eq!(listen, ["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"], "it listens on both");
        assert!(std::fs::read_to_string(&done.config).unwrap().contains("# The federation's name"), "comments kept");
        let bad = Init { samples: Some(5), dir: dir.path().join("other"), ..i.clone() };
        assert!(matches!(init(&bad), Err(Error::Config { field, .. }) if field == "round.samples"));
        let no_port = Init { listen: "/ip4/0.0.0.0".parse().unwrap(), ..i };
        assert!(no_port.validate().is_err());
    }

    #[test]
    fn init_carries_the_preprocessing_pinned_beside_the_reference_set() {
        let dir = tempfile::tempdir().unwrap();
        let set = protocol::ReferenceSet::new(2, 2, vec![-1.0, -1.0, 1.0, 1.0]).unwrap();
        let reference = dir.path().join("public.fdref");
        let id = crate::reference::write(&reference, &set).unwrap();
        let st = learning::data::Preprocess::Standardise { mean: vec![2.0, 2000.0], std: vec![1.0, 1000.0] };
        crate::reference::write_preprocess(&reference, id, &st).unwrap();
        let i = Init {
            dir: dir.path().join("operator"),
            reference,
            federation: FederationId::new("clinics").unwrap(),
            classes: 3,
            listen: "/ip4/0.0.0.0/tcp/4001".parse().unwrap(),
            public_host: None,
            rounds: 2,
            samples: None,
            validation: None,
        };
        let csv = dir.path().join("test.csv");
        std::fs::write(&csv, "3,3000,2\n1,1000,0\n").unwrap();
        let bad = dir.path().join("bad.csv");
        std::fs::write(&bad, "3,2\n").unwrap();
        let holdout = |path| Some(DataSpec::file(path, Some(LabelColumn::Index(-1)), false, Preprocess::None));
        let wrong = Init { validation: holdout(bad), dir: dir.path().join("wrong"), ..i.clone() };
        assert!(matches!(init(&wrong), Err(Error::Config { field, .. }) if field == "validation"));
        assert!(!wrong.dir.exists(), "a wrong holdout shows before anything is written");
        let i = Init { validation: holdout(csv), ..i };
        let done = init(&i).unwrap();
        assert_eq!(done.preprocess.as_ref(), Some(&st));
        for (n, name) in ["a", "b", "c"].iter().enumerate() {
            let peer = net::keys::keygen(&dir.path().join(format!("{n}.key"))).unwrap();
            crate::roster_edit::edit_file(&done.config, |t| crate::roster_edit::add(t, name, &peer, None)).unwrap();
        }
        let v = AggregatorConfig::load(&done.config).unwrap().validation.expect("the [validation] table");
        assert_eq!((v.classes, &v.preprocess), (Some(3), &st), "the federation's classes and preprocessing");
        assert_eq!(v.load().unwrap().features, vec![1.0, 1.0, -1.0, -1.0]);
        let copy = i.dir.join("reference.fdref");
        assert_eq!(crate::reference::read_preprocess(&copy, id).unwrap(), Some(st), "pinned beside the copy");
    }

    use crate::AggregatorConfig;
    use learning::data::{DataSpec, LabelColumn, Preprocess};
}
