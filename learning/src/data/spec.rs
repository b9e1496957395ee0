//! [`DataSpec`]: a data set as written in configuration files, and the [`DataSource`] it names.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Error;

use super::{CsvOptions, Dataset, LabelColumn, Preprocess, Result, load_csv, load_idx, load_idx_rows, read_rows};

/// Where a data set lives and how to read it.
#[derive(Clone, Debug, PartialEq)]
pub enum DataSource {
    /// A CSV file (gzip detected).
    Csv {
        /// File.
        path: PathBuf,
        /// How to read it.
        options: CsvOptions,
    },
    /// IDX images and labels (gzip detected).
    Idx {
        /// Images file.
        images: PathBuf,
        /// Labels file.
        labels: PathBuf,
    },
}

impl DataSource {
    /// Loads the whole file(s).
    pub fn load(&self) -> Result<Dataset> {
        match self {
            DataSource::Csv { path, options } => load_csv(path, options),
            DataSource::Idx { images, labels } => load_idx(images, labels),
        }
    }

    /// Loads the file(s) once per process while someone holds the result: many simulated nodes
    /// in one process reading rows of the same file share one decoded copy instead of one each.
    pub fn load_shared(&self) -> Result<std::sync::Arc<Dataset>> {
        let mut cache = SHARED.lock().unwrap_or_else(|p| p.into_inner());
        cache.retain(|(_, w)| w.strong_count() > 0);
        let key = format!("{self:?}");
        if let Some(d) = cache.iter().find(|(k, _)| *k == key).and_then(|(_, w)| w.upgrade()) {
            return Ok(d);
        }
        let d = std::sync::Arc::new(self.load()?);
        cache.push((key, std::sync::Arc::downgrade(&d)));
        Ok(d)
    }

    /// The decoded copy that [`DataSource::load_shared`] holds for someone in this process, if
    /// there is one; nothing is loaded.
    pub fn shared(&self) -> Option<std::sync::Arc<Dataset>> {
        let cache = SHARED.lock().unwrap_or_else(|p| p.into_inner());
        let key = format!("{self:?}");
        cache.iter().find(|(k, _)| *k == key).and_then(|(_, w)| w.upgrade())
    }
}

/// [`DataSource::load_shared`]'s copies, each held by whoever asked for it.
static SHARED: std::sync::Mutex<Vec<(String, std::sync::Weak<Dataset>)>> = std::sync::Mutex::new(Vec::new());

/// File format of a [`DataSpec`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataFormat {
    /// CSV: `path`, `label`, optional `skip_lines`, `header`, `delimiter`.
    Csv,
    /// IDX: `images` and `labels`.
    Idx,
}

fn default_delimiter() -> char {
    ','
}

/// A data set as written in configuration files: the file(s), optionally a file of row indices
/// to keep (one per line), the class count and the preprocessing.
///
/// ```toml
/// format = "csv"
/// path = "data/digits/digits.csv.gz"
/// label = -1
/// preprocess = { kind = "scale", factor = 0.0625 }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    /// `csv` or `idx`.
    pub format: DataFormat,
    /// CSV file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// CSV label column: index (negative from the end) or header name. Default: the last column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<LabelColumn>,
    /// CSV lines to skip before the header or data.
    #[serde(default)]
    pub skip_lines: usize,
    /// Whether the CSV has a header line.
    #[serde(default)]
    pub header: bool,
    /// CSV separator.
    #[serde(default = "default_delimiter")]
    pub delimiter: char,
    /// IDX images file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<PathBuf>,
    /// IDX labels file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<PathBuf>,
    /// Keep only these rows (a text file, one 0-based index per line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<PathBuf>,
    /// Number of classes, if more than the file's labels show (e.g. a node that lacks a class).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<usize>,
    /// Preprocessing.
    #[serde(default)]
    pub preprocess: Preprocess,
}

impl DataSpec {
    /// The files to read, checking that the fields of the format are present.
    pub fn source(&self) -> Result<DataSource> {
        let missing = |f: &str| Error::Config(format!("data: format {:?} needs `{f}`", self.format));
        match self.format {
            DataFormat::Csv => Ok(DataSource::Csv {
                path: self.path.clone().ok_or_else(|| missing("path"))?,
                options: CsvOptions {
                    label: self.label.clone().unwrap_or(LabelColumn::Index(-1)),
                    skip_lines: self.skip_lines,
                    header: self.header,
                    delimiter: self.delimiter,
                },
            }),
            DataFormat::Idx => Ok(DataSource::Idx {
                images: self.images.clone().ok_or_else(|| missing("images"))?,
                labels: self.labels.clone().ok_or_else(|| missing("labels"))?,
            }),
        }
    }

    /// Loads, selects rows and preprocesses. The rows of a file that this process has decoded
    /// already (and still holds, [`DataSource::load_shared`]) are copied out of that copy; the
    /// rows of an IDX file are otherwise read as a stream, keeping only them
    /// ([`load_idx_rows`]), so that a node process holds its rows and not the whole file.
    pub fn load(&self) -> Result<Dataset> {
        let source = self.source()?;
        let mut d = match (&self.rows, source.shared(), &source) {
            (None, _, _) => Dataset::clone(&*source.load_shared()?),
            (Some(rows), Some(all), _) => all.subset(&read_rows(rows, all.len())?),
            (Some(rows), None, DataSource::Idx { images, labels }) => load_idx_rows(images, labels, rows)?,
            (Some(rows), None, DataSource::Csv { .. }) => {
                let all = source.load_shared()?;
                all.subset(&read_rows(rows, all.len())?)
            }
        };
        if let Some(c) = self.classes {
            if c < d.classes {
                return Err(Error::Classes { max_label: d.classes as u32 - 1, classes: c });
            }
            d.classes = c;
        }
        self.preprocess.apply(&mut d.features, d.dim)?;
        Ok(d)
    }

    /// A spec for one file as a user names it on a command line: IDX images if the file name
    /// contains `idx` (no labels file), CSV otherwise, with a header line if `header` or if the
    /// label column is given by name.
    pub fn file(path: PathBuf, label: Option<LabelColumn>, header: bool, preprocess: Preprocess) -> Self {
        let idx = path.file_name().is_some_and(|n| n.to_string_lossy().contains("idx"));
        let header = header || matches!(label, Some(LabelColumn::Name(_)));
        let (format, path, images) =
            if idx { (DataFormat::Idx, None, Some(path)) } else { (DataFormat::Csv, Some(path), None) };
        Self {
            format,
            path,
            label,
            skip_lines: 0,
            header,
            delimiter: default_delimiter(),
            images,
            labels: None,
            rows: None,
            classes: None,
            preprocess,
        }
    }

    /// The same spec with relative paths resolved against `base`.
    pub fn resolved(&self, base: &Path) -> Self {
        let r = |p: &Option<PathBuf>| p.as_ref().map(|p| if p.is_absolute() { p.clone() } else { base.join(p) });
        Self {
            path: r(&self.path),
            images: r(&self.images),
            labels: r(&self.labels),
            rows: r(&self.rows),
            ..self.clone()
        }
    }
}
