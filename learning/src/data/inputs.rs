//! [`Inputs`]: features without labels, what a public reference set is made of. They are read
//! with the same loaders, row selection and preprocessing as a node's private data.

use super::{DataSource, DataSpec, Result, load_csv_unlabelled, load_idx_images, read_rows};

/// Row-major features of a data set, without labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Inputs {
    /// Row-major features, `rows × dim`.
    pub features: Vec<f32>,
    /// Number of rows.
    pub rows: usize,
    /// Features per row.
    pub dim: usize,
    /// Whether the file had labels, which were read and dropped.
    pub dropped_labels: bool,
}

impl DataSpec {
    /// Loads the inputs only, selecting `rows` and preprocessing as [`DataSpec::load`] does. With
    /// `labelled`, the file has labels (the CSV's `label` column, IDX's labels file) and they are
    /// dropped; without, every CSV column is a feature and IDX needs only `images`.
    pub fn load_inputs(&self, labelled: bool) -> Result<Inputs> {
        let (features, dim) = if labelled {
            let d = self.source()?.load()?;
            (d.features, d.dim)
        } else {
            match self.unlabelled_source()? {
                DataSource::Csv { path, options } => load_csv_unlabelled(&path, &options)?,
                DataSource::Idx { images, .. } => {
                    let (x, _, dim) = load_idx_images(&images)?;
                    (x, dim)
                }
            }
        };
        let mut features = match &self.rows {
            Some(path) => {
                let keep = read_rows(path, features.len() / dim)?;
                keep.iter().flat_map(|&i| features[i * dim..(i + 1) * dim].iter().copied()).collect()
            }
            None => features,
        };
        self.preprocess.apply(&mut features, dim)?;
        Ok(Inputs { rows: features.len() / dim, features, dim, dropped_labels: labelled })
    }

    /// The source of an unlabelled file: IDX without a labels file is fine.
    fn unlabelled_source(&self) -> Result<DataSource> {
        if self.format == super::DataFormat::Idx && self.labels.is_none() {
            let images =
                self.images.clone().ok_or_else(|| crate::Error::Config("data: format Idx needs `images`".into()))?;
            return Ok(DataSource::Idx { images, labels: Default::default() });
        }
        self.source()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Preprocess;
    use crate::data::test_files::tmp;

    fn spec(path: std::path::PathBuf) -> DataSpec {
        DataSpec::file(path, None, false, Preprocess::Scale { factor: 0.5 })
    }

    #[test]
    fn inputs_drop_labels_or_keep_every_column_and_are_preprocessed_like_node_data() {
        let dir = tempfile::tempdir().unwrap();
        let p = tmp(&dir, "inputs.csv", b"2,4,1\n6,8,0\n");
        let with = spec(p.clone()).load_inputs(true).unwrap();
        assert_eq!(
            (with.features.clone(), with.rows, with.dim, with.dropped_labels),
            (vec![1.0, 2.0, 3.0, 4.0], 2, 2, true)
        );
        assert_eq!(with.features, spec(p.clone()).load().unwrap().features, "the same values a node would train on");
        let without = spec(p.clone()).load_inputs(false).unwrap();
        assert_eq!(
            (without.features, without.dim, without.dropped_labels),
            (vec![1.0, 2.0, 0.5, 3.0, 4.0, 0.0], 3, false)
        );
        let rows = tmp(&dir, "inputs-rows.txt", b"1\n");
        let one = DataSpec { rows: Some(rows), ..spec(p) }.load_inputs(true).unwrap();
        assert_eq!((one.features, one.rows), (vec![3.0, 4.0], 1));
    }
}
