//! Data: loaders for IDX (MNIST) and CSV files, declared preprocessing, seeded splits and
//! partitions across nodes.
//!
//! A [`Dataset`] is a dense row-major `f32` feature matrix with integer labels. Loaders never
//! panic on bad input: every error names the file, and for CSV the line and column.

use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

/// Random generator used for every seeded choice in this crate (portable, documented algorithm).
pub type Rng = rand::rngs::Xoshiro256PlusPlus;

/// A generator for `seed`, with `stream` separating independent uses of one seed.
pub fn rng(seed: u64, stream: u64) -> Rng {
    Rng::seed_from_u64(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// Errors from loading or splitting data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not in the expected format.
    #[error("{path}: {detail}")]
    Format {
        /// File.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A CSV cell could not be used.
    #[error("{path}:{line}: column {column}: {detail}")]
    Csv {
        /// File.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        detail: String,
    },
    /// A split or partition cannot satisfy its constraints.
    #[error("cannot split the data: {0}")]
    Split(String),
}

type Result<T> = std::result::Result<T, DataError>;

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
            return Err(DataError::Split(format!(
                "{} features do not make {} rows of {dim}",
                features.len(),
                labels.len()
            )));
        }
        if let Some(l) = labels.iter().find(|&&l| l as usize >= classes) {
            return Err(DataError::Split(format!("label {l} is not below the class count {classes}")));
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

    /// Rows per class.
    pub fn label_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes];
        for &l in &self.labels {
            counts[l as usize] += 1;
        }
        counts
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|source| DataError::Io { path: path.to_owned(), source })?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| DataError::Format { path: path.to_owned(), detail: format!("corrupt gzip: {e}") })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Loads IDX images (magic 0x00000803) and labels (0x00000801), gzip-compressed or raw.
/// Pixel values are returned as read (0–255); see [`Preprocess`] for scaling.
pub fn load_idx(images: &Path, labels: &Path) -> Result<Dataset> {
    let fmt = |path: &Path, detail: String| DataError::Format { path: path.to_owned(), detail };
    let img = read_file(images)?;
    if img.len() < 16 {
        return Err(fmt(images, format!("truncated: {} bytes, an IDX image header needs 16", img.len())));
    }
    if be_u32(&img, 0) != 0x0803 {
        return Err(fmt(images, format!("bad magic number {:#010x}, expected 0x00000803 (IDX images)", be_u32(&img, 0))));
    }
    let (n, rows, cols) = (be_u32(&img, 4) as usize, be_u32(&img, 8) as usize, be_u32(&img, 12) as usize);
    let need = n.checked_mul(rows).and_then(|v| v.checked_mul(cols)).and_then(|v| v.checked_add(16));
    if need != Some(img.len()) {
        return Err(fmt(images, format!("truncated or oversized: header says {n} × {rows} × {cols}, file has {} bytes", img.len())));
    }
    let lab = read_file(labels)?;
    if lab.len() < 8 {
        return Err(fmt(labels, format!("truncated: {} bytes, an IDX label header needs 8", lab.len())));
    }
    if be_u32(&lab, 0) != 0x0801 {
        return Err(fmt(labels, format!("bad magic number {:#010x}, expected 0x00000801 (IDX labels)", be_u32(&lab, 0))));
    }
    let m = be_u32(&lab, 4) as usize;
    if lab.len() != 8 + m {
        return Err(fmt(labels, format!("truncated or oversized: header says {m} labels, file has {} bytes", lab.len())));
    }
    if m != n {
        return Err(fmt(labels, format!("{m} labels for {n} images in {}", images.display())));
    }
    let label_vec: Vec<u32> = lab[8..].iter().map(|&b| b as u32).collect();
    let classes = label_vec.iter().max().map_or(0, |&m| m as usize + 1);
    Dataset::new(img[16..].iter().map(|&b| b as f32).collect(), label_vec, rows * cols, classes)
}

/// Which CSV column holds the label.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LabelColumn {
    /// 0-based column index; negative counts from the end (-1 is the last column).
    Index(i64),
    /// Column name from the header line.
    Name(String),
}

/// How to read a CSV file. (Configuration files give these as fields of [`DataSpec`].)
#[derive(Clone, Debug, PartialEq)]
pub struct CsvOptions {
    /// Label column.
    pub label: LabelColumn,
    /// Lines to skip before the header or data (e.g. scikit-learn's count line).
    pub skip_lines: usize,
    /// Whether the first line after `skip_lines` names the columns.
    pub header: bool,
    /// Field separator (one character).
    pub delimiter: char,
}

fn default_delimiter() -> char {
    ','
}

impl Default for CsvOptions {
    fn default() -> Self {
        Self { label: LabelColumn::Index(-1), skip_lines: 0, header: false, delimiter: ',' }
    }
}

/// Loads a CSV file of numeric features and an integer label (`0..classes`); gzip is detected.
pub fn load_csv(path: &Path, opts: &CsvOptions) -> Result<Dataset> {
    let bytes = read_file(path)?;
    let text = String::from_utf8(bytes)
        .map_err(|e| DataError::Format { path: path.to_owned(), detail: format!("not UTF-8: {e}") })?;
    let csv_err = |line: usize, column: usize, detail: String| DataError::Csv { path: path.to_owned(), line, column, detail };
    let mut lines = text.lines().enumerate().skip(opts.skip_lines).filter(|(_, l)| !l.trim().is_empty());
    let mut label_col: Option<usize> = None;
    let mut width: Option<usize> = None;
    if opts.header {
        let (no, line) = lines.next().ok_or_else(|| csv_err(opts.skip_lines + 1, 1, "missing header line".into()))?;
        let names: Vec<&str> = line.split(opts.delimiter).map(|s| s.trim().trim_matches('"')).collect();
        width = Some(names.len());
        if let LabelColumn::Name(want) = &opts.label {
            label_col = Some(names.iter().position(|n| n == want).ok_or_else(|| {
                csv_err(no + 1, 1, format!("no column named `{want}` (columns: {})", names.join(", ")))
            })?);
        }
    } else if let LabelColumn::Name(want) = &opts.label {
        return Err(csv_err(opts.skip_lines + 1, 1, format!("label column `{want}` given by name but the file has no header")));
    }
    let mut features = Vec::new();
    let mut labels = Vec::new();
    for (no, line) in lines {
        let cells: Vec<&str> = line.split(opts.delimiter).collect();
        let w = *width.get_or_insert(cells.len());
        if cells.len() != w {
            return Err(csv_err(no + 1, cells.len().min(w) + 1, format!("ragged row: {} fields, expected {w}", cells.len())));
        }
        let lc = match (label_col, &opts.label) {
            (Some(c), _) => c,
            (None, LabelColumn::Index(i)) => {
                let c = if *i < 0 { w as i64 + i } else { *i };
                if c < 0 || c >= w as i64 {
                    return Err(csv_err(no + 1, 1, format!("label column {i} does not exist in {w} columns")));
                }
                *label_col.insert(c as usize)
            }
            (None, LabelColumn::Name(_)) => unreachable!("names are resolved from the header"),
        };
        if w < 2 {
            return Err(csv_err(no + 1, 1, "a row needs at least one feature and a label".into()));
        }
        for (c, cell) in cells.iter().enumerate() {
            let cell = cell.trim().trim_matches('"');
            if c == lc {
                let v: f64 = cell.parse().map_err(|_| csv_err(no + 1, c + 1, format!("label `{cell}` is not a number")))?;
                if v < 0.0 || v.fract() != 0.0 || v > 1e6 {
                    return Err(csv_err(no + 1, c + 1, format!("label `{cell}` is not a class index (0, 1, 2, …)")));
                }
                labels.push(v as u32);
            } else {
                let v: f32 = cell.parse().map_err(|_| csv_err(no + 1, c + 1, format!("`{cell}` is not a number")))?;
                if !v.is_finite() {
                    return Err(csv_err(no + 1, c + 1, format!("`{cell}` is not finite")));
                }
                features.push(v);
            }
        }
    }
    if labels.is_empty() {
        return Err(DataError::Format { path: path.to_owned(), detail: "no data rows".into() });
    }
    let dim = width.unwrap_or(1) - 1;
    let classes = labels.iter().max().map_or(0, |&m| m as usize + 1);
    Dataset::new(features, labels, dim, classes)
}

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
        use std::sync::{Arc, Mutex, Weak};
        static CACHE: Mutex<Vec<(String, Weak<Dataset>)>> = Mutex::new(Vec::new());
        let key = format!("{self:?}");
        let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
        cache.retain(|(_, w)| w.strong_count() > 0);
        if let Some(d) = cache.iter().find(|(k, _)| *k == key).and_then(|(_, w)| w.upgrade()) {
            return Ok(d);
        }
        let d = Arc::new(self.load()?);
        cache.push((key, Arc::downgrade(&d)));
        Ok(d)
    }
}

/// File format of a [`DataSpec`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataFormat {
    /// CSV: `path`, `label`, optional `skip_lines`, `header`, `delimiter`.
    Csv,
    /// IDX: `images` and `labels`.
    Idx,
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
        let missing = |f: &str| DataError::Split(format!("data: format {:?} needs `{f}`", self.format));
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

    /// Loads, selects rows and preprocesses.
    pub fn load(&self) -> Result<Dataset> {
        let all = self.source()?.load_shared()?;
        let mut d = match &self.rows {
            Some(rows_path) => all.subset(&read_rows(rows_path, all.len())?),
            None => Dataset::clone(&all),
        };
        drop(all);
        if let Some(c) = self.classes {
            if c < d.classes {
                return Err(DataError::Split(format!("classes = {c} but the data has labels up to {}", d.classes - 1)));
            }
            d.classes = c;
        }
        self.preprocess.apply(&mut d.features, d.dim)?;
        Ok(d)
    }

    /// The same spec with relative paths resolved against `base`.
    pub fn resolved(&self, base: &Path) -> Self {
        let r = |p: &Option<PathBuf>| p.as_ref().map(|p| if p.is_absolute() { p.clone() } else { base.join(p) });
        Self { path: r(&self.path), images: r(&self.images), labels: r(&self.labels), rows: r(&self.rows), ..self.clone() }
    }
}

/// Reads a row-index file (one index per line; blank lines and `#` comments ignored).
pub fn read_rows(path: &Path, len: usize) -> Result<Vec<usize>> {
    let text = std::fs::read_to_string(path).map_err(|source| DataError::Io { path: path.to_owned(), source })?;
    let mut rows = Vec::new();
    for (no, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let i: usize = t.parse().map_err(|_| DataError::Csv { path: path.to_owned(), line: no + 1, column: 1, detail: format!("`{t}` is not a row index") })?;
        if i >= len {
            return Err(DataError::Csv { path: path.to_owned(), line: no + 1, column: 1, detail: format!("row {i} is beyond the {len} rows of the data") });
        }
        rows.push(i);
    }
    Ok(rows)
}

/// Writes a row-index file.
pub fn write_rows(path: &Path, rows: &[usize]) -> std::io::Result<()> {
    let mut s = String::with_capacity(rows.len() * 6);
    for r in rows {
        let _ = writeln!(s, "{r}");
    }
    std::fs::write(path, s)
}

/// Preprocessing declared in configuration, identical on every node, so that everyone maps the
/// public reference inputs the same way. It never looks at a node's data.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Preprocess {
    /// Use the values as they are.
    #[default]
    None,
    /// Multiply every value by `factor` (1/255 for MNIST, 1/16 for UCI digits).
    Scale {
        /// The factor.
        factor: f32,
    },
    /// `(x − mean) / std` per feature, with statistics written in the configuration.
    Standardise {
        /// Mean per feature.
        mean: Vec<f32>,
        /// Standard deviation per feature (zeros are treated as 1).
        std: Vec<f32>,
    },
}

impl Preprocess {
    /// Statistics for [`Preprocess::Standardise`] from the given rows (use the public reference
    /// set's inputs, never a node's private data).
    pub fn standardise_from(features: &[f32], dim: usize) -> Self {
        let n = (features.len() / dim.max(1)).max(1) as f64;
        let mut mean = vec![0f64; dim];
        let mut sq = vec![0f64; dim];
        for row in features.chunks_exact(dim) {
            for (j, &v) in row.iter().enumerate() {
                mean[j] += v as f64;
                sq[j] += (v as f64) * (v as f64);
            }
        }
        let mean: Vec<f64> = mean.iter().map(|m| m / n).collect();
        let std = sq.iter().zip(&mean).map(|(s, m)| ((s / n - m * m).max(0.0)).sqrt() as f32).collect();
        Preprocess::Standardise { mean: mean.into_iter().map(|m| m as f32).collect(), std }
    }

    /// Applies the preprocessing in place to a row-major matrix of width `dim`.
    pub fn apply(&self, features: &mut [f32], dim: usize) -> Result<()> {
        match self {
            Preprocess::None => {}
            Preprocess::Scale { factor } => {
                if !factor.is_finite() || *factor == 0.0 {
                    return Err(DataError::Split(format!("scale factor {factor} must be finite and non-zero")));
                }
                features.iter_mut().for_each(|v| *v *= factor);
            }
            Preprocess::Standardise { mean, std } => {
                if mean.len() != dim || std.len() != dim {
                    return Err(DataError::Split(format!(
                        "standardisation has {} means and {} deviations for {dim} features",
                        mean.len(),
                        std.len()
                    )));
                }
                for row in features.chunks_exact_mut(dim) {
                    for ((v, m), s) in row.iter_mut().zip(mean).zip(std) {
                        let s = if *s > 0.0 && s.is_finite() { *s } else { 1.0 };
                        *v = (*v - m) / s;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Disjoint test, public reference and private index sets.
#[derive(Clone, Debug, PartialEq)]
pub struct Split {
    /// Held-out test rows.
    pub test: Vec<usize>,
    /// Public reference rows (their labels are never used in training).
    pub reference: Vec<usize>,
    /// Rows to be partitioned across nodes.
    pub private: Vec<usize>,
}

/// Shuffles `0..n` with `seed` and cuts off `test` then `reference` rows; the rest is private.
pub fn split(n: usize, test: usize, reference: usize, seed: u64) -> Result<Split> {
    if test + reference >= n {
        return Err(DataError::Split(format!("{test} test + {reference} reference rows leave no private data out of {n}")));
    }
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut rng(seed, 1));
    let private = idx.split_off(test + reference);
    let reference_rows = idx.split_off(test);
    Ok(Split { test: idx, reference: reference_rows, private })
}

/// How private rows are spread across nodes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Partition {
    /// Uniformly at random, equal sizes.
    Iid,
    /// Label skew: each class is spread across nodes by proportions drawn from Dirichlet(α).
    Dirichlet {
        /// Concentration; smaller is more skewed.
        alpha: f64,
    },
    /// Each node holds `k` classes (pathological non-IID).
    Classes {
        /// Classes per node.
        k: usize,
    },
    /// IID labels, node sizes drawn from Dirichlet(α) on top of the minimum size.
    Quantity {
        /// Concentration; smaller is more uneven.
        alpha: f64,
    },
}

/// Spreads `rows` (indices into a data set with `labels`) across `nodes`, each getting at least
/// `min_size` rows. Every row goes to at most one node; all rows are used except, for
/// [`Partition::Classes`], those of classes no node holds.
pub fn partition(
    rows: &[usize],
    labels: &[u32],
    classes: usize,
    nodes: usize,
    scheme: &Partition,
    min_size: usize,
    seed: u64,
) -> Result<Vec<Vec<usize>>> {
    if nodes == 0 {
        return Err(DataError::Split("zero nodes".into()));
    }
    if nodes * min_size > rows.len() {
        return Err(DataError::Split(format!("{nodes} nodes × {min_size} rows need more than the {} private rows", rows.len())));
    }
    let mut r = rng(seed, 2);
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for &i in rows {
        by_class[labels[i] as usize].push(i);
    }
    by_class.iter_mut().for_each(|c| c.shuffle(&mut r));
    let parts = match scheme {
        Partition::Iid => {
            let mut all = rows.to_vec();
            all.shuffle(&mut r);
            (0..nodes).map(|k| all.iter().skip(k).step_by(nodes).copied().collect()).collect()
        }
        Partition::Dirichlet { alpha } => {
            check_alpha(*alpha)?;
            let mut attempt = 0;
            loop {
                let mut parts = vec![Vec::new(); nodes];
                for members in &by_class {
                    let p = dirichlet(&mut r, *alpha, nodes);
                    let cuts = proportional_cuts(&p, members.len());
                    for (k, (a, b)) in cuts.iter().enumerate() {
                        parts[k].extend_from_slice(&members[*a..*b]);
                    }
                }
                if parts.iter().all(|p: &Vec<usize>| p.len() >= min_size) {
                    break parts;
                }
                attempt += 1;
                if attempt >= 1000 {
                    return Err(DataError::Split(format!(
                        "Dirichlet(α = {alpha}) left a node under {min_size} rows in 1000 draws; raise α or lower the minimum"
                    )));
                }
            }
        }
        Partition::Classes { k } => {
            if *k == 0 || *k > classes {
                return Err(DataError::Split(format!("{k} classes per node, data has {classes}")));
            }
            let holders: Vec<Vec<usize>> = (0..classes)
                .map(|c| (0..nodes).filter(|n| (0..*k).any(|j| (n * k + j) % classes == c)).collect())
                .collect();
            let mut parts = vec![Vec::new(); nodes];
            for (c, members) in by_class.iter().enumerate() {
                let h = &holders[c];
                for (j, &i) in members.iter().enumerate() {
                    if !h.is_empty() {
                        parts[h[j % h.len()]].push(i);
                    }
                }
            }
            if let Some((n, p)) = parts.iter().enumerate().find(|(_, p)| p.len() < min_size) {
                return Err(DataError::Split(format!("node {n} got {} rows, fewer than the minimum {min_size}", p.len())));
            }
            parts
        }
        Partition::Quantity { alpha } => {
            check_alpha(*alpha)?;
            let mut all = rows.to_vec();
            all.shuffle(&mut r);
            let extra = all.len() - nodes * min_size;
            let p = dirichlet(&mut r, *alpha, nodes);
            let cuts = proportional_cuts(&p, extra);
            let mut start = 0;
            (0..nodes)
                .map(|k| {
                    let len = min_size + (cuts[k].1 - cuts[k].0);
                    let part = all[start..start + len].to_vec();
                    start += len;
                    part
                })
                .collect()
        }
    };
    let mut parts: Vec<Vec<usize>> = parts;
    parts.iter_mut().for_each(|p| p.sort_unstable());
    Ok(parts)
}

fn check_alpha(alpha: f64) -> Result<()> {
    if !(alpha.is_finite() && alpha > 0.0) {
        return Err(DataError::Split(format!("Dirichlet α = {alpha} must be finite and positive")));
    }
    Ok(())
}

/// A draw from Dirichlet(α, …, α) of dimension `k`.
fn dirichlet(r: &mut Rng, alpha: f64, k: usize) -> Vec<f64> {
    let gamma = rand_distr::Gamma::new(alpha, 1.0).expect("alpha checked positive");
    let mut g: Vec<f64> = (0..k).map(|_| r.sample(gamma)).collect();
    let s: f64 = g.iter().sum();
    if s > 0.0 && s.is_finite() {
        g.iter_mut().for_each(|v| *v /= s);
    } else {
        // Every draw underflowed (tiny α): all mass on one node.
        g.iter_mut().for_each(|v| *v = 0.0);
        g[r.random_range(0..k)] = 1.0;
    }
    g
}

/// Cuts `0..n` into consecutive ranges with sizes proportional to `p` (largest remainder).
fn proportional_cuts(p: &[f64], n: usize) -> Vec<(usize, usize)> {
    let raw: Vec<f64> = p.iter().map(|v| v * n as f64).collect();
    let mut sizes: Vec<usize> = raw.iter().map(|v| v.floor() as usize).collect();
    let mut left = n - sizes.iter().sum::<usize>().min(n);
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_by(|&a, &b| (raw[b] - raw[b].floor()).total_cmp(&(raw[a] - raw[a].floor())).then(a.cmp(&b)));
    for &k in order.iter().cycle().take(p.len() * 2) {
        if left == 0 {
            break;
        }
        sizes[k] += 1;
        left -= 1;
    }
    let mut start = 0;
    sizes
        .into_iter()
        .map(|s| {
            let r = (start, start + s);
            start += s;
            r
        })
        .collect()
}

/// Label counts per node: `counts[node][class]`.
pub fn label_counts(parts: &[Vec<usize>], labels: &[u32], classes: usize) -> Vec<Vec<usize>> {
    parts
        .iter()
        .map(|p| {
            let mut c = vec![0; classes];
            p.iter().for_each(|&i| c[labels[i] as usize] += 1);
            c
        })
        .collect()
}

/// A printable table of label counts per node.
pub fn label_table(counts: &[Vec<usize>]) -> String {
    let classes = counts.first().map_or(0, Vec::len);
    let mut s = String::from("node ");
    for c in 0..classes {
        let _ = write!(s, "{c:>6}");
    }
    s.push_str("  total\n");
    for (n, row) in counts.iter().enumerate() {
        let _ = write!(s, "{n:>4} ");
        for v in row {
            let _ = write!(s, "{v:>6}");
        }
        let _ = writeln!(s, " {:>6}", row.iter().sum::<usize>());
    }
    s
}

/// Coefficient of variation of per-node class proportions, averaged over classes: 0 when every
/// node has the same label mix, larger as label skew grows.
pub fn label_skew(counts: &[Vec<usize>]) -> f64 {
    let classes = counts.first().map_or(0, Vec::len);
    if classes == 0 {
        return 0.0;
    }
    let props: Vec<Vec<f64>> = counts
        .iter()
        .map(|row| {
            let t = row.iter().sum::<usize>().max(1) as f64;
            row.iter().map(|&v| v as f64 / t).collect()
        })
        .collect();
    let mut total = 0.0;
    for c in 0..classes {
        let col: Vec<f64> = props.iter().map(|p| p[c]).collect();
        let m = col.iter().sum::<f64>() / col.len() as f64;
        let var = col.iter().map(|v| (v - m).powi(2)).sum::<f64>() / col.len() as f64;
        total += if m > 0.0 { var.sqrt() / m } else { 0.0 };
    }
    total / classes as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn tmp(name: &str, bytes: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("learning-data-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::File::create(&p).unwrap().write_all(bytes).unwrap();
        p
    }

    fn idx_images(n: u32, rows: u32, cols: u32) -> Vec<u8> {
        let mut v = [0x0803u32, n, rows, cols].iter().flat_map(|x| x.to_be_bytes()).collect::<Vec<u8>>();
        v.extend((0..n * rows * cols).map(|i| (i % 256) as u8));
        v
    }

    fn idx_labels(labels: &[u8]) -> Vec<u8> {
        let mut v = [0x0801u32, labels.len() as u32].iter().flat_map(|x| x.to_be_bytes()).collect::<Vec<u8>>();
        v.extend_from_slice(labels);
        v
    }

    #[test]
    fn idx_loads_raw_and_gzip_and_names_bad_files() {
        let img = tmp("i.idx", &idx_images(3, 2, 2));
        let lab = tmp("l.idx", &idx_labels(&[0, 2, 1]));
        let d = load_idx(&img, &lab).unwrap();
        assert_eq!((d.len(), d.dim, d.classes), (3, 4, 3));
        assert_eq!(d.row(1), &[4.0, 5.0, 6.0, 7.0]);

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&idx_images(3, 2, 2)).unwrap();
        let gz_img = tmp("i.idx.gz", &gz.finish().unwrap());
        assert_eq!(load_idx(&gz_img, &lab).unwrap(), d);

        let missing = load_idx(Path::new("/nonexistent/x.idx"), &lab).unwrap_err().to_string();
        assert!(missing.contains("/nonexistent/x.idx"), "{missing}");
        let bad_magic = tmp("bad.idx", &idx_labels(&[1; 20]));
        let e = load_idx(&bad_magic, &lab).unwrap_err().to_string();
        assert!(e.contains("bad magic") && e.contains("bad.idx"), "{e}");
        let mut short = idx_images(3, 2, 2);
        short.truncate(20);
        let e = load_idx(&tmp("short.idx", &short), &lab).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
        let e = load_idx(&img, &tmp("l2.idx", &idx_labels(&[0, 1]))).unwrap_err().to_string();
        assert!(e.contains("2 labels for 3 images"), "{e}");
        let e = load_idx(&tmp("corrupt.gz", &[0x1f, 0x8b, 1, 2, 3]), &lab).unwrap_err().to_string();
        assert!(e.contains("corrupt gzip"), "{e}");
    }

    #[test]
    fn csv_reads_headers_names_and_reports_bad_cells() {
        let p = tmp("a.csv", b"f1,f2,target\n1,2,0\n3,4.5,1\n");
        let d = load_csv(&p, &CsvOptions { label: LabelColumn::Name("target".into()), header: true, ..Default::default() }).unwrap();
        assert_eq!((d.len(), d.dim, d.classes), (2, 2, 2));
        assert_eq!(d.row(1), &[3.0, 4.5]);

        let first = tmp("b.csv", b"skip me\n0,1,2\n1,3,4\n");
        let d = load_csv(&first, &CsvOptions { label: LabelColumn::Index(0), skip_lines: 1, ..Default::default() }).unwrap();
        assert_eq!(d.labels, vec![0, 1]);
        assert_eq!(d.row(0), &[1.0, 2.0]);

        let bad = tmp("bad.csv", b"1,2,0\n3,x,1\n");
        let e = load_csv(&bad, &CsvOptions::default()).unwrap_err().to_string();
        assert!(e.contains("bad.csv:2: column 2") && e.contains("`x`"), "{e}");
        let ragged = tmp("ragged.csv", b"1,2,0\n3,1\n");
        let e = load_csv(&ragged, &CsvOptions::default()).unwrap_err().to_string();
        assert!(e.contains("ragged.csv:2") && e.contains("ragged row"), "{e}");
        let frac = tmp("frac.csv", b"1,2,0.5\n");
        assert!(load_csv(&frac, &CsvOptions::default()).unwrap_err().to_string().contains("class index"));
        let nohead = CsvOptions { label: LabelColumn::Name("y".into()), ..Default::default() };
        assert!(load_csv(&bad, &nohead).unwrap_err().to_string().contains("no header"));
        let wrong = CsvOptions { label: LabelColumn::Name("y".into()), header: true, ..Default::default() };
        assert!(load_csv(&p, &wrong).unwrap_err().to_string().contains("no column named `y`"));
    }

    fn labels(n: usize, classes: u32) -> Vec<u32> {
        (0..n as u32).map(|i| (i * 7 + i / 3) % classes).collect()
    }

    #[test]
    fn split_and_partitions_are_disjoint_and_cover_the_private_rows() {
        let lab = labels(3000, 10);
        let s = split(3000, 300, 500, 9).unwrap();
        assert_eq!((s.test.len(), s.reference.len(), s.private.len()), (300, 500, 2200));
        let mut all: Vec<usize> = s.test.iter().chain(&s.reference).chain(&s.private).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..3000).collect::<Vec<_>>());
        for scheme in [
            Partition::Iid,
            Partition::Dirichlet { alpha: 0.5 },
            Partition::Quantity { alpha: 1.0 },
            Partition::Classes { k: 2 },
        ] {
            let parts = partition(&s.private, &lab, 10, 8, &scheme, 20, 4).unwrap();
            let mut seen: Vec<usize> = parts.concat();
            seen.sort_unstable();
            let mut private = s.private.clone();
            private.sort_unstable();
            assert_eq!(seen, private, "{scheme:?} must use every private row exactly once");
            assert!(parts.iter().all(|p| p.len() >= 20), "{scheme:?} minimum size");
            assert_eq!(parts, partition(&s.private, &lab, 10, 8, &scheme, 20, 4).unwrap(), "seeded");
        }
        let classes = partition(&s.private, &lab, 10, 8, &Partition::Classes { k: 2 }, 1, 4).unwrap();
        for (n, c) in label_counts(&classes, &lab, 10).iter().enumerate() {
            assert_eq!(c.iter().filter(|&&v| v > 0).count(), 2, "node {n}: {c:?}");
        }
    }

    #[test]
    fn dirichlet_skew_grows_as_alpha_falls() {
        let lab = labels(5000, 10);
        let rows: Vec<usize> = (0..5000).collect();
        let skew = |alpha| {
            let mean: f64 = (0..5)
                .map(|seed| {
                    let p = partition(&rows, &lab, 10, 10, &Partition::Dirichlet { alpha }, 5, seed).unwrap();
                    label_skew(&label_counts(&p, &lab, 10))
                })
                .sum();
            mean / 5.0
        };
        let (s100, s1, s01) = (skew(100.0), skew(1.0), skew(0.1));
        assert!(s100 < s1 && s1 < s01, "skew {s100} {s1} {s01}");
        let iid = partition(&rows, &lab, 10, 10, &Partition::Iid, 5, 1).unwrap();
        assert!(label_skew(&label_counts(&iid, &lab, 10)) < s100 + 0.1);
    }

    #[test]
    fn impossible_partitions_fail_with_a_reason() {
        let lab = labels(100, 10);
        let rows: Vec<usize> = (0..100).collect();
        assert!(partition(&rows, &lab, 10, 20, &Partition::Iid, 10, 1).is_err());
        assert!(partition(&rows, &lab, 10, 5, &Partition::Dirichlet { alpha: -1.0 }, 1, 1).is_err());
        assert!(partition(&rows, &lab, 10, 5, &Partition::Classes { k: 11 }, 1, 1).is_err());
    }

    #[test]
    fn preprocessing_scales_and_standardises() {
        let mut x = vec![0.0, 16.0, 8.0, 4.0];
        Preprocess::Scale { factor: 1.0 / 16.0 }.apply(&mut x, 2).unwrap();
        assert_eq!(x, vec![0.0, 1.0, 0.5, 0.25]);
        let data = vec![1.0, 10.0, 3.0, 10.0];
        let st = Preprocess::standardise_from(&data, 2);
        let mut y = data.clone();
        st.apply(&mut y, 2).unwrap();
        assert_eq!(y, vec![-1.0, 0.0, 1.0, 0.0]);
        assert!(st.apply(&mut y, 3).is_err());
    }
}
