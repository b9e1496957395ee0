//! The public reference set's file (`.fdref`): built from a user's CSV or IDX file with the same
//! loaders and preprocessing as node data (`fd-aggregator reference build`), written atomically,
//! and read back with its SHA-256, which every node pins.

use std::path::Path;

use learning::data::DataSpec;
use protocol::{ReferenceSet, ReferenceSetId};

use crate::error::Error;

/// A reference set built from a data file.
#[derive(Clone, Debug)]
pub struct Built {
    /// The inputs, preprocessed.
    pub set: ReferenceSet,
    /// Whether the file had labels, which were dropped (labels never enter a reference set).
    pub dropped_labels: bool,
}

/// Reads `spec`'s inputs (`labelled`: the file has a label column or labels file, dropped) and
/// preprocesses them as nodes preprocess their data. Blocking.
pub fn build(spec: &DataSpec, labelled: bool) -> Result<Built, Error> {
    let inputs = spec.load_inputs(labelled)?;
    let set = ReferenceSet::new(inputs.rows, inputs.dim, inputs.features)?;
    Ok(Built { set, dropped_labels: inputs.dropped_labels })
}

/// Writes `set`'s canonical bytes to `path` atomically and returns their SHA-256, the id that
/// `federation.toml` and every `node.toml` pin. Blocking.
pub fn write(path: &Path, set: &ReferenceSet) -> Result<ReferenceSetId, Error> {
    let bytes = set.to_bytes();
    learning::fs::atomic_write(path, &bytes)?;
    Ok(ReferenceSetId::digest(&bytes))
}

/// Reads a reference-set file, checking that it is one, and returns it with its SHA-256. Blocking.
pub fn read(path: &Path) -> Result<(ReferenceSet, ReferenceSetId), Error> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.to_owned(), source })?;
    let set = ReferenceSet::from_bytes(&bytes, usize::MAX)?;
    Ok((set, ReferenceSetId::digest(&bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use learning::data::{LabelColumn, Preprocess};

    #[test]
    fn a_built_set_round_trips_and_its_hash_is_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("public.csv");
        std::fs::write(&csv, "a,b,y\n2,4,1\n6,8,0\n").unwrap();
        let spec = DataSpec::file(csv, Some(LabelColumn::Name("y".into())), false, Preprocess::Scale { factor: 0.5 });
        let built = build(&spec, true).unwrap();
        assert!(built.dropped_labels);
        assert_eq!((built.set.samples, built.set.features, built.set.values.clone()), (2, 2, vec![1.0, 2.0, 3.0, 4.0]));
        let path = dir.path().join("r.fdref");
        let id = write(&path, &built.set).unwrap();
        assert_eq!(ReferenceSetId::digest(&std::fs::read(&path).unwrap()), id);
        assert_eq!(read(&path).unwrap(), (built.set, id));
        std::fs::write(&path, b"not a set").unwrap();
        assert!(matches!(read(&path), Err(Error::Protocol(_))));
    }
}
