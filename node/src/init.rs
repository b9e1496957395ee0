//! `fd-node init`: a data holder's folder: the node's key and a commented `node.toml` that
//! names the private data where it is (it is never copied), the aggregator's address and the
//! pinned reference set. The data file is checked first ([`check_data`]: rows, columns, classes
//! found), so that a wrong label column or a class outside the federation's range shows before
//! anything is written.

use std::path::PathBuf;

use learning::Architecture;
use learning::data::{DataSpec, Dataset};
use net::multiaddr::Multiaddr;
use protocol::{FederationId, ReferenceSetId};
use serde::Serialize;

use crate::config::load_data;
use crate::error::Error;

/// What `fd-node init` is asked for.
#[derive(Clone, Debug)]
pub struct Init {
    /// Folder to write (created private).
    pub dir: PathBuf,
    /// The private data (CSV), with its label column, the federation's classes and the
    /// federation's preprocessing.
    pub data: DataSpec,
    /// The federation's name, as the operator gives it.
    pub federation: FederationId,
    /// The aggregator's address with `/p2p/<its PeerId>`, as the operator gives it.
    pub aggregator: Multiaddr,
    /// The reference set's SHA-256, as the operator gives it; without it, `node.toml` holds a
    /// placeholder that the node refuses to start with.
    pub reference_sha256: Option<ReferenceSetId>,
    /// The reference set's size in bytes, as the operator gives it (`policy.reference_bytes`);
    /// without it, any size up to 4 GiB is fetched.
    pub reference_bytes: Option<u64>,
    /// The local model.
    pub model: Architecture,
}

/// What the private data file holds.
#[derive(Clone, Debug, PartialEq)]
pub struct DataCheck {
    /// Rows.
    pub rows: usize,
    /// Features a row (the columns but the label).
    pub features: usize,
    /// Rows of each class found, `(class, rows)`, classes with no rows left out.
    pub classes: Vec<(u32, usize)>,
}

/// Reads the private data as the node will (labels outside `data.classes` are an error,
/// [`learning::Error::Classes`]) and says what it holds. Blocking.
pub fn check_data(data: &DataSpec) -> Result<DataCheck, Error> {
    let d: Dataset = load_data(data)?;
    let mut counts = vec![0usize; d.classes];
    for &l in &d.labels {
        counts[l as usize] += 1;
    }
    let classes = counts.into_iter().enumerate().filter(|(_, n)| *n > 0).map(|(c, n)| (c as u32, n)).collect();
    Ok(DataCheck { rows: d.len(), features: d.dim, classes })
}

/// Refuses data whose rows do not have the federation's `features` (the reference set's, as
/// `fd-aggregator init` prints them): the node could not take part, so nothing is written.
pub fn check_features(check: &DataCheck, features: usize) -> Result<(), Error> {
    if check.features != features {
        return Err(Error::config(
            "data",
            format!(
                "{} features a row (the columns but the label), the federation's reference set {features}: check the label column (--label) and whether the first line names the columns (--header), and give the data the reference set's columns in the same order",
                check.features
            ),
        ));
    }
    Ok(())
}

#[derive(Serialize)]
struct Tables<'a> {
    data: &'a DataSpec,
    model: &'a Architecture,
}

/// Writes `dir/node.key` and `dir/node.toml` and returns the node's PeerId and the config's
/// path. Refuses to overwrite either. Blocking.
pub fn init(i: &Init) -> Result<(String, PathBuf), Error> {
    crate::config::aggregator_id(&i.aggregator)?;
    let config = i.dir.join("node.toml");
    if config.exists() {
        return Err(Error::config(
            "(file)",
            format!("{} exists already; init does not overwrite it", config.display()),
        ));
    }
    learning::fs::create_private_dir(&i.dir)?;
    let key = net::keys::generate(&i.dir.join("node.key")).map_err(|e| Error::config("key", e))?;
    let peer_id = net::keys::peer_id_string(&key.id());
    let tables = toml::to_string(&Tables { data: &i.data, model: &i.model }).map_err(|e| Error::config("data", e))?;
    let pin = match i.reference_sha256 {
        Some(id) => format!("reference_sha256 = \"{id}\""),
        None => "# Required: the SHA-256 the operator gives (`reference_sha256` printed by `fd-aggregator init`).\nreference_sha256 = \"ask the operator\"".to_owned(),
    };
    let pin = match i.reference_bytes {
        Some(n) => {
            format!("{pin}\n# Its size in bytes: a download of another size is refused at once.\nreference_bytes = {n}")
        }
        None => format!(
            "{pin}\n# Its size in bytes (`reference_bytes` printed by `fd-aggregator init`): a download of\n# another size is refused at once. Without it, any size up to 4 GiB is fetched.\n# reference_bytes = 0"
        ),
    };
    let text = format!(
        r#"# node.toml, written by `fd-node init`. Relative paths are relative to this file.
# Run the node with `fd-node run --config node.toml` once the operator has added this node's
# PeerId ({peer_id}) to the federation's roster.

# The federation's name, as the operator gives it.
federation = {federation}
# This node's secret key (mode 0600, never share it); its PeerId is {peer_id}.
key = "node.key"
# The aggregator's address with its PeerId, as the operator gives it.
aggregator = {aggregator}
# The model checkpoint, the egress ledger (every message this node sends) and its records.
state_dir = "state"
# The node's copy of the public reference set; fetched from the aggregator, and checked
# against policy.reference_sha256, if it is missing.
reference = "state/reference.fdref"

# What this node agrees to answer: only on the pinned reference set, at a softmax temperature
# of at least min_temperature, in the listed encodings, at most max_rounds rounds.
[policy]
{pin}
min_temperature = 1.0
encodings = ["q8"]
max_samples_per_round = 10000
max_rounds = 100

# The private data (it never leaves this machine) and the local model. `classes` is the
# federation's class count; the preprocessing is the one the reference set was built with.
{tables}"#,
        federation = quote(i.federation.as_str()),
        aggregator = quote(&i.aggregator.to_string()),
    );
    learning::fs::atomic_write(&config, text.as_bytes())?;
    Ok((peer_id, config))
}

fn quote(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use learning::data::{LabelColumn, Preprocess};

    use super::*;

    #[test]
    fn data_with_another_feature_count_than_the_federations_is_refused_naming_both_and_the_options() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("data.csv");
        std::fs::write(&csv, "0.5,1.5,0\n2.5,3.5,1\n4.5,5.5,1\n").unwrap();
        let mut spec = DataSpec::file(csv, Some(LabelColumn::Index(-1)), false, Preprocess::None);
        spec.classes = Some(2);
        let check = check_data(&spec).unwrap();
        assert_eq!((check.rows, check.features), (3, 2));
        assert!(check_features(&check, 2).is_ok());
        let e = check_features(&check, 3).unwrap_err().to_string();
        for part in ["2 features a row", "reference set 3", "--label", "--header"] {
            assert!(e.contains(part), "`{part}` missing from: {e}");
        }
    }
}
