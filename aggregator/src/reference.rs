//! The public reference set's file (`.fdref`): built from a user's CSV or IDX file with the same
//! loaders and preprocessing as node data (`fd-aggregator reference build`), written atomically,
//! and read back with its SHA-256, which every node pins.
//!
//! The preprocessing it was built with is pinned beside it, in `<name>.preprocess.toml` with the
//! set's hash ([`write_preprocess`], [`read_preprocess`]), so that `fd-aggregator init` hands the
//! same preprocessing to every node. `--preprocess standardise` computes the statistics on the
//! reference set itself ([`build`]), never on a node's data.

use std::path::{Path, PathBuf};

use learning::data::{DataSpec, Preprocess};
use protocol::{ReferenceSet, ReferenceSetId};
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// A reference set built from a data file.
#[derive(Clone, Debug)]
pub struct Built {
    /// The inputs, preprocessed.
    pub set: ReferenceSet,
    /// Whether the file had labels, which were dropped (labels never enter a reference set).
    pub dropped_labels: bool,
    /// The preprocessing applied: the declared one, or the standardisation computed on the set.
    pub preprocess: Preprocess,
    /// Without preprocessing: the features' scales, if they differ widely.
    pub spread: Option<Spread>,
}

/// Two features whose standard deviations differ by at least [`Spread::RATIO`]: a model trained
/// on such raw values learns mostly from the widest one.
#[derive(Clone, Debug, PartialEq)]
pub struct Spread {
    /// The widest feature: its 1-based column among the features, and its standard deviation.
    pub widest: (usize, f32),
    /// The narrowest non-constant feature, likewise.
    pub narrowest: (usize, f32),
}

impl Spread {
    /// The ratio of standard deviations from which scales are said to differ widely.
    pub const RATIO: f32 = 100.0;

    /// The widest and narrowest non-constant features of `features` (row-major, width `dim`), if
    /// their standard deviations differ by [`Spread::RATIO`] or more.
    pub fn of(features: &[f32], dim: usize) -> Option<Spread> {
        let Preprocess::Standardise { std, .. } = Preprocess::standardise_from(features, dim) else {
            return None;
        };
        let varying = || std.iter().copied().enumerate().filter(|(_, s)| *s > 0.0).map(|(j, s)| (j + 1, s));
        let widest = varying().max_by(|a, b| a.1.total_cmp(&b.1))?;
        let narrowest = varying().min_by(|a, b| a.1.total_cmp(&b.1))?;
        (widest.1 >= Spread::RATIO * narrowest.1).then_some(Spread { widest, narrowest })
    }
}

/// Reads `spec`'s inputs (`labelled`: the file has a label column or labels file, dropped) and
/// preprocesses them as nodes preprocess their data. With `standardise`, the declared
/// preprocessing must be `none`, and the inputs are standardised with their own per-feature mean
/// and standard deviation, which [`Built::preprocess`] returns for the nodes. Blocking.
pub fn build(spec: &DataSpec, labelled: bool, standardise: bool) -> Result<Built, Error> {
    if standardise && spec.preprocess != Preprocess::None {
        return Err(Error::config("preprocess", "standardisation replaces the declared preprocessing; declare none"));
    }
    let mut inputs = spec.load_inputs(labelled)?;
    let preprocess = if standardise {
        let p = Preprocess::standardise_from(&inputs.features, inputs.dim);
        p.apply(&mut inputs.features, inputs.dim)?;
        p
    } else {
        spec.preprocess.clone()
    };
    let spread = (preprocess == Preprocess::None).then(|| Spread::of(&inputs.features, inputs.dim)).flatten();
    let set = ReferenceSet::new(inputs.rows, inputs.dim, inputs.features)?;
    Ok(Built { set, dropped_labels: inputs.dropped_labels, preprocess, spread })
}

/// The file beside a reference set that pins its preprocessing: `reference.fdref` →
/// `reference.preprocess.toml`.
pub fn preprocess_path(reference: &Path) -> PathBuf {
    reference.with_extension("preprocess.toml")
}

/// What `<name>.preprocess.toml` holds.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Pinned {
    #[serde(with = "protocol::ids::reference_set_hex")]
    reference_sha256: ReferenceSetId,
    preprocess: Preprocess,
}

/// Writes the preprocessing the reference set `id` at `reference` was built with beside it
/// ([`preprocess_path`]), atomically, and returns the file's path. Blocking.
pub fn write_preprocess(reference: &Path, id: ReferenceSetId, preprocess: &Preprocess) -> Result<PathBuf, Error> {
    let path = preprocess_path(reference);
    let body = toml::to_string(&Pinned { reference_sha256: id, preprocess: preprocess.clone() })
        .map_err(|e| Error::config("preprocess", e))?;
    let text = format!(
        "# The preprocessing the reference set beside this file was built with (`fd-aggregator reference build`),\n\
         # pinned to the set's SHA-256. `fd-aggregator init` gives it to every node (`fd-node init --preprocess`).\n{body}"
    );
    learning::fs::atomic_write(&path, text.as_bytes())?;
    Ok(path)
}

/// The preprocessing pinned beside the reference set `id` at `reference`: `None` if there is no
/// such file (a set built before the file existed, or by hand); an error if the file pins another
/// set. Blocking.
pub fn read_preprocess(reference: &Path, id: ReferenceSetId) -> Result<Option<Preprocess>, Error> {
    let path = preprocess_path(reference);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(Error::Io { path, source }),
    };
    let pinned: Pinned =
        toml::from_str(&text).map_err(|e| Error::config("preprocess", format!("{}: {e}", path.display())))?;
    if pinned.reference_sha256 != id {
        return Err(Error::config(
            "preprocess",
            format!(
                "{} pins the reference set {}, not {id} beside it: rebuild both with `fd-aggregator reference build`",
                path.display(),
                pinned.reference_sha256
            ),
        ));
    }
    Ok(Some(pinned.preprocess))
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
        let built = build(&spec, true, false).unwrap();
        assert!(built.dropped_labels);
        assert_eq!(
            (built.set.samples, built.set.features, built.set.values.to_vec()),
            (2, 2, vec![1.0, 2.0, 3.0, 4.0])
        );
        let path = dir.path().join("r.fdref");
        let id = write(&path, &built.set).unwrap();
        assert_eq!(ReferenceSetId::digest(&std::fs::read(&path).unwrap()), id);
        assert_eq!(read(&path).unwrap(), (built.set, id));
        std::fs::write(&path, b"not a set").unwrap();
        assert!(matches!(read(&path), Err(Error::Protocol(_))));
    }

    #[test]
    fn standardisation_is_computed_on_the_set_and_pinned_beside_it_with_its_hash() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("public.csv");
        std::fs::write(&csv, "a,b,y\n1,1000,1\n3,3000,0\n").unwrap();
        let spec = DataSpec::file(csv, Some(LabelColumn::Name("y".into())), false, Preprocess::None);
        let raw = build(&spec, true, false).unwrap();
        assert_eq!(raw.spread, Some(Spread { widest: (2, 1000.0), narrowest: (1, 1.0) }), "scales 1000× apart");
        let built = build(&spec, true, true).unwrap();
        assert_eq!(built.set.values.to_vec(), vec![-1.0, -1.0, 1.0, 1.0]);
        assert_eq!(built.preprocess, Preprocess::Standardise { mean: vec![2.0, 2000.0], std: vec![1.0, 1000.0] });
        assert_eq!(built.spread, None, "no warning once standardised");
        let scaled = DataSpec { preprocess: Preprocess::Scale { factor: 2.0 }, ..spec };
        assert!(matches!(build(&scaled, true, true), Err(Error::Config { .. })));

        let path = dir.path().join("reference.fdref");
        let id = write(&path, &built.set).unwrap();
        assert_eq!(read_preprocess(&path, id).unwrap(), None, "nothing pinned yet");
        let pinned = write_preprocess(&path, id, &built.preprocess).unwrap();
        assert_eq!(pinned, dir.path().join("reference.preprocess.toml"));
        assert_eq!(read_preprocess(&path, id).unwrap(), Some(built.preprocess));
        let other = ReferenceSetId::digest(b"another set");
        assert!(matches!(read_preprocess(&path, other), Err(Error::Config { .. })), "pinned to its own set only");
    }
}
