//! CSV files of numeric features and an integer label, gzip detected.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::Error;

use super::{Dataset, Result, read_file};

/// Which CSV column holds the label.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LabelColumn {
    /// 0-based column index; negative counts from the end (-1 is the last column).
    Index(i64),
    /// Column name from the header line.
    Name(String),
}

impl LabelColumn {
    /// A label column as given on a command line: a (possibly negative) index, else a name.
    pub fn from_flag(s: &str) -> Self {
        s.trim().parse().map(LabelColumn::Index).unwrap_or_else(|_| LabelColumn::Name(s.trim().to_owned()))
    }
}

/// How to read a CSV file. (Configuration files give these as fields of [`DataSpec`](super::DataSpec).)
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

impl Default for CsvOptions {
    fn default() -> Self {
        Self { label: LabelColumn::Index(-1), skip_lines: 0, header: false, delimiter: ',' }
    }
}

/// Loads a CSV file of numeric features and an integer label (`0..classes`); gzip is detected.
pub fn load_csv(path: &Path, opts: &CsvOptions) -> Result<Dataset> {
    let (features, labels, dim) = read_csv(path, opts, true)?;
    let classes = labels.iter().max().map_or(0, |&m| m as usize + 1);
    Dataset::new(features, labels, dim, classes)
}

/// Loads a CSV file whose every column is a feature (`opts.label` is ignored): unlabelled
/// inputs, such as a public reference set. Returns the row-major features and their width.
pub fn load_csv_unlabelled(path: &Path, opts: &CsvOptions) -> Result<(Vec<f32>, usize)> {
    let (features, _, dim) = read_csv(path, opts, false)?;
    Ok((features, dim))
}

/// Features, labels (empty unless `labelled`) and features per row.
fn read_csv(path: &Path, opts: &CsvOptions, labelled: bool) -> Result<(Vec<f32>, Vec<u32>, usize)> {
    let bytes = read_file(path)?;
    let text = String::from_utf8(bytes)
        .map_err(|e| Error::Format { path: path.to_owned(), detail: format!("not UTF-8: {e}") })?;
    let csv_err =
        |line: usize, column: usize, detail: String| Error::Csv { path: path.to_owned(), line, column, detail };
    let mut lines = text.lines().enumerate().skip(opts.skip_lines).filter(|(_, l)| !l.trim().is_empty());
    let mut label_col: Option<usize> = None;
    let mut width: Option<usize> = None;
    let mut names: Vec<String> = Vec::new();
    if opts.header {
        let (no, line) = lines.next().ok_or_else(|| csv_err(opts.skip_lines + 1, 1, "missing header line".into()))?;
        names = line.split(opts.delimiter).map(|s| s.trim().trim_matches('"').to_owned()).collect();
        width = Some(names.len());
        if let (true, LabelColumn::Name(want)) = (labelled, &opts.label) {
            label_col = Some(names.iter().position(|n| n == want).ok_or_else(|| {
                csv_err(no + 1, 1, format!("no column named `{want}` (columns: {})", names.join(", ")))
            })?);
        }
    } else if let (true, LabelColumn::Name(want)) = (labelled, &opts.label) {
        return Err(csv_err(
            opts.skip_lines + 1,
            1,
            format!("label column `{want}` given by name but the file has no header"),
        ));
    }
    let mut features = Vec::new();
    let mut labels = Vec::new();
    let mut rows = 0usize;
    for (no, line) in lines {
        let cells: Vec<&str> = line.split(opts.delimiter).collect();
        let w = *width.get_or_insert(cells.len());
        if cells.len() != w {
            return Err(csv_err(
                no + 1,
                cells.len().min(w) + 1,
                format!("ragged row: {} fields, expected {w}", cells.len()),
            ));
        }
        let lc = match (labelled, label_col, &opts.label) {
            (false, _, _) => None,
            (true, Some(c), _) => Some(c),
            (true, None, LabelColumn::Index(i)) => {
                let c = if *i < 0 { w as i64 + i } else { *i };
                if c < 0 || c >= w as i64 {
                    return Err(csv_err(no + 1, 1, format!("label column {i} does not exist in {w} columns")));
                }
                Some(*label_col.insert(c as usize))
            }
            (true, None, LabelColumn::Name(_)) => unreachable!("names are resolved from the header"),
        };
        if w < 1 + usize::from(labelled) {
            return Err(csv_err(no + 1, 1, "a row needs at least one feature and a label".into()));
        }
        rows += 1;
        for (c, cell) in cells.iter().enumerate() {
            let cell = cell.trim().trim_matches('"');
            if Some(c) == lc {
                let v: f64 = cell
                    .parse()
                    .map_err(|_| csv_err(no + 1, c + 1, label_not_a_number(cell, names.is_empty(), rows)))?;
                if v < 0.0 || v.fract() != 0.0 || v > 1e6 {
                    return Err(csv_err(no + 1, c + 1, format!("label `{cell}` is not a class index (0, 1, 2, …)")));
                }
                labels.push(v as u32);
            } else {
                let v: f32 =
                    cell.parse().map_err(|_| csv_err(no + 1, c + 1, not_a_number(cell, names.get(c), rows)))?;
                if !v.is_finite() {
                    return Err(csv_err(no + 1, c + 1, format!("`{cell}` is not finite")));
                }
                features.push(v);
            }
        }
    }
    if rows == 0 {
        return Err(Error::Format { path: path.to_owned(), detail: "no data rows".into() });
    }
    Ok((features, labels, width.unwrap_or(1) - usize::from(labelled)))
}

/// Why a feature cell that does not parse is refused, with the way out: `--header` for a header
/// line read as data, the column's name for a categorical column or a missing value (neither is
/// supported: encode categories as numbers, e.g. one-hot, and fill or drop missing values first).
fn not_a_number(cell: &str, name: Option<&String>, row: usize) -> String {
    let column = name.map(|n| format!("column `{n}`: ")).unwrap_or_default();
    if cell.is_empty() || ["na", "nan", "null", "?", "-"].contains(&cell.to_ascii_lowercase().as_str()) {
        format!("{column}missing value `{cell}`: missing values are not supported; fill them in or drop the row")
    } else if row == 1 && name.is_none() {
        format!("`{cell}` is not a number; if the first line names the columns, add --header (`header = true`)")
    } else {
        format!(
            "{column}`{cell}` is not a number: categorical columns are not supported; encode them as numbers \
             (e.g. one column a category) or drop the column"
        )
    }
}

fn label_not_a_number(cell: &str, no_header: bool, row: usize) -> String {
    let hint = if no_header && row == 1 {
        "; if the first line names the columns, add --header (`header = true`)"
    } else {
        ""
    };
    format!("label `{cell}` is not a number{hint}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::test_files::tmp;

    #[test]
    fn csv_reads_headers_names_and_reports_bad_cells() {
        let dir = tempfile::tempdir().unwrap();
        let p = tmp(&dir, "a.csv", b"f1,f2,target\n1,2,0\n3,4.5,1\n");
        let d =
            load_csv(&p, &CsvOptions { label: LabelColumn::Name("target".into()), header: true, ..Default::default() })
                .unwrap();
        assert_eq!((d.len(), d.dim, d.classes), (2, 2, 2));
        assert_eq!(d.row(1), &[3.0, 4.5]);

        let first = tmp(&dir, "b.csv", b"skip me\n0,1,2\n1,3,4\n");
        let d = load_csv(&first, &CsvOptions { label: LabelColumn::Index(0), skip_lines: 1, ..Default::default() })
            .unwrap();
        assert_eq!(d.labels, vec![0, 1]);
        assert_eq!(d.row(0), &[1.0, 2.0]);

        let bad = tmp(&dir, "bad.csv", b"1,2,0\n3,x,1\n");
        let e = load_csv(&bad, &CsvOptions::default()).unwrap_err().to_string();
        assert!(e.contains("bad.csv:2: column 2") && e.contains("`x`"), "{e}");
        let ragged = tmp(&dir, "ragged.csv", b"1,2,0\n3,1\n");
        let e = load_csv(&ragged, &CsvOptions::default()).unwrap_err().to_string();
        assert!(e.contains("ragged.csv:2") && e.contains("ragged row"), "{e}");
        let frac = tmp(&dir, "frac.csv", b"1,2,0.5\n");
        assert!(load_csv(&frac, &CsvOptions::default()).unwrap_err().to_string().contains("class index"));
        let nohead = CsvOptions { label: LabelColumn::Name("y".into()), ..Default::default() };
        assert!(load_csv(&bad, &nohead).unwrap_err().to_string().contains("no header"));
        let wrong = CsvOptions { label: LabelColumn::Name("y".into()), header: true, ..Default::default() };
        assert!(load_csv(&p, &wrong).unwrap_err().to_string().contains("no column named `y`"));
    }

    #[test]
    fn a_header_read_as_data_a_category_and_a_missing_value_are_named_with_the_way_out() {
        let dir = tempfile::tempdir().unwrap();
        let err = |name: &str, text: &[u8], header: bool| {
            let p = tmp(&dir, name, text);
            let label = if header { LabelColumn::Name("y".into()) } else { LabelColumn::Index(-1) };
            load_csv(&p, &CsvOptions { label, header, ..Default::default() }).unwrap_err().to_string()
        };
        let e = err("h.csv", b"age,income,y\n1,2,0\n", false);
        assert!(e.contains("h.csv:1: column 1") && e.contains("add --header"), "{e}");
        let e = err("hl.csv", b"1,2,y\n1,2,0\n", false);
        assert!(e.contains("label `y`") && e.contains("add --header"), "{e}");
        let e = err("c.csv", b"age,sex,y\n30,1,0\n41,male,1\n", true);
        assert!(e.contains("c.csv:3: column 2") && e.contains("column `sex`") && e.contains("categorical"), "{e}");
        assert!(!e.contains("--header"), "{e}");
        let e = err("m.csv", b"age,sex,y\n,1,0\n", true);
        assert!(e.contains("column `age`") && e.contains("missing value"), "{e}");
        let e = err("m2.csv", b"1,NA,0\n", false);
        assert!(e.contains("column 2") && e.contains("missing value `NA`"), "{e}");
    }

    #[test]
    fn unlabelled_csv_keeps_every_column_as_a_feature() {
        let dir = tempfile::tempdir().unwrap();
        let p = tmp(&dir, "u.csv", b"a,b\n1,2\n3,4.5\n");
        let (x, dim) = load_csv_unlabelled(&p, &CsvOptions { header: true, ..Default::default() }).unwrap();
        assert_eq!((x, dim), (vec![1.0, 2.0, 3.0, 4.5], 2));
        let one = tmp(&dir, "u1.csv", b"7\n8\n");
        assert_eq!(load_csv_unlabelled(&one, &CsvOptions::default()).unwrap(), (vec![7.0, 8.0], 1));
        assert!(load_csv_unlabelled(&tmp(&dir, "u0.csv", b"\n"), &CsvOptions::default()).is_err());
    }
}
