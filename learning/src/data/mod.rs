//! Data: loaders for IDX (MNIST) and CSV files, declared preprocessing, seeded splits and
//! partitions across nodes.
//!
//! A [`Dataset`] is a dense row-major `f32` feature matrix with integer labels. Loaders never
//! panic on bad input: every error names the file, and for CSV the line and column.
//!
//! One file a concept, everything re-exported here:
//! - `idx.rs` and `csv.rs`: the two file loaders, [`load_idx`] and [`load_csv`] (gzip detected).
//! - `inputs.rs`: [`Inputs`], features without labels (a public reference set), read by the
//!   same loaders and preprocessing.
//! - `spec.rs`: [`DataSpec`], a data set as written in configuration files, and the
//!   [`DataSource`] it names.
//! - `rows.rs`: files of row indices ([`read_rows`], [`write_rows`]), which select a node's rows
//!   out of a shared file.
//! - `preprocess.rs`: [`Preprocess`], declared in configuration and identical on every node.
//! - `partition.rs`: the seeded test/reference/private [`split`], the [`partition`] of private
//!   rows across nodes, and label statistics per node.

use std::io::Read;
use std::path::Path;

use protocol::seed::{Stream, derive};
use rand::SeedableRng;

use crate::Error;

mod csv;
mod idx;
mod inputs;
mod partition;
mod preprocess;
mod rows;
mod spec;

pub use csv::{CsvOptions, LabelColumn, load_csv, load_csv_unlabelled};
pub use idx::{load_idx, load_idx_images, load_idx_rows};
pub use inputs::Inputs;
pub use partition::{Partition, Split, label_counts, label_table, partition, split};
pub use preprocess::Preprocess;
pub use rows::{read_rows, write_rows};
pub use spec::{DataFormat, DataSource, DataSpec};

/// Random generator used for every seeded choice in this crate (portable, documented algorithm).
pub type Rng = rand::rngs::Xoshiro256PlusPlus;

/// A generator for `seed`, with `stream` and `index` separating independent uses of one seed
/// (the project's one derivation, [`protocol::seed::derive`]).
pub fn rng(seed: u64, stream: Stream, index: u64) -> Rng {
    Rng::seed_from_u64(derive(seed, stream, index))
}

type Result<T> = std::result::Result<T, crate::Error>;

/// A labelled data set held in memory.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// Row-major features, `len() × dim`.
    pub features: Vec<f32>,
    /// Class of each row, in `0..classes`.
    pub labels: Vec<u32>,
    /// Features per row.
    pub dim: usize,
    /// Number of classes.
    pub classes: usize,
}

impl Dataset {
    /// Builds a data set, checking shapes and labels.
    pub fn new(features: Vec<f32>, labels: Vec<u32>, dim: usize, classes: usize) -> Result<Self> {
        if dim == 0 || features.len() != labels.len() * dim {
            return Err(Error::Shape(format!(
                "{} features do not make {} rows of {dim}",
                features.len(),
                labels.len()
            )));
        }
        if let Some(l) = labels.iter().find(|&&l| l as usize >= classes) {
            return Err(Error::Shape(format!("label {l} is not below the class count {classes}")));
        }
        Ok(Self { features, labels, dim, classes })
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Features of row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.features[i * self.dim..(i + 1) * self.dim]
    }

    /// The rows at `indices`, in that order.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let mut features = Vec::with_capacity(indices.len() * self.dim);
        for &i in indices {
            features.extend_from_slice(self.row(i));
        }
        Dataset {
            features,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            dim: self.dim,
            classes: self.classes,
        }
    }
}

/// The bytes of `path`, gunzipped if they start with the gzip magic number.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|source| Error::Io { path: path.to_owned(), source })?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|source| Error::Gzip { path: path.to_owned(), source })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

#[cfg(test)]
pub(crate) mod test_files {
    use std::io::Write;
    use std::path::PathBuf;

    use tempfile::TempDir;

    /// Writes `bytes` to a file `name` in the test's scratch folder `dir` (a `TempDir`, so that
    /// the files go when the test ends).
    pub(crate) fn tmp(dir: &TempDir, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.path().join(name);
        std::fs::File::create(&p).unwrap().write_all(bytes).unwrap();
        p
    }
}
