//! Seeded splits of a data set into test, public reference and private rows, partitions of the
//! private rows across nodes (IID, label skew, pathological, quantity skew), and label
//! statistics per node.

use std::fmt::Write as _;

use protocol::seed::Stream;
use rand::RngExt;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::Error;

use super::{Result, Rng, rng};

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
        return Err(Error::Split(format!("{test} test + {reference} reference rows leave no private data out of {n}")));
    }
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut rng(seed, Stream::Split, 0));
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
        return Err(Error::Split("zero nodes".into()));
    }
    if nodes * min_size > rows.len() {
        return Err(Error::Split(format!(
            "{nodes} nodes × {min_size} rows need more than the {} private rows",
            rows.len()
        )));
    }
    let mut r = rng(seed, Stream::Split, 1);
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for &i in rows {
        by_class[labels[i] as usize].push(i);
    }
    by_class.iter_mut().for_each(|c| c.shuffle(&mut r));
    let mut parts = match scheme {
        Partition::Iid => iid(rows, nodes, &mut r),
        Partition::Dirichlet { alpha } => dirichlet_labels(&by_class, nodes, *alpha, min_size, &mut r)?,
        Partition::Classes { k } => classes_per_node(&by_class, nodes, *k, min_size)?,
        Partition::Quantity { alpha } => dirichlet_quantities(rows, nodes, *alpha, min_size, &mut r)?,
    };
    parts.iter_mut().for_each(|p| p.sort_unstable());
    Ok(parts)
}

/// [`Partition::Iid`]: the rows shuffled and dealt out in turn.
fn iid(rows: &[usize], nodes: usize, r: &mut Rng) -> Vec<Vec<usize>> {
    let mut all = rows.to_vec();
    all.shuffle(r);
    (0..nodes).map(|k| all.iter().skip(k).step_by(nodes).copied().collect()).collect()
}

/// [`Partition::Dirichlet`]: each class's (shuffled) rows cut across nodes by proportions drawn
/// from Dirichlet(α), drawn again (up to 1000 times) until every node has `min_size` rows.
fn dirichlet_labels(
    by_class: &[Vec<usize>],
    nodes: usize,
    alpha: f64,
    min_size: usize,
    r: &mut Rng,
) -> Result<Vec<Vec<usize>>> {
    check_alpha(alpha)?;
    for _ in 0..1000 {
        let mut parts = vec![Vec::new(); nodes];
        for members in by_class {
            let p = dirichlet(r, alpha, nodes);
            let cuts = proportional_cuts(&p, members.len());
            for (k, (a, b)) in cuts.iter().enumerate() {
                parts[k].extend_from_slice(&members[*a..*b]);
            }
        }
        if parts.iter().all(|p: &Vec<usize>| p.len() >= min_size) {
            return Ok(parts);
        }
    }
    Err(Error::Split(format!(
        "Dirichlet(α = {alpha}) left a node under {min_size} rows in 1000 draws; raise α or lower the minimum"
    )))
}

/// [`Partition::Classes`]: node `n` holds classes `n·k … n·k + k − 1` (mod the class count),
/// and each class's rows are dealt out in turn among the nodes that hold it.
fn classes_per_node(by_class: &[Vec<usize>], nodes: usize, k: usize, min_size: usize) -> Result<Vec<Vec<usize>>> {
    let classes = by_class.len();
    if k == 0 || k > classes {
        return Err(Error::Split(format!("{k} classes per node, data has {classes}")));
    }
    let holders: Vec<Vec<usize>> =
        (0..classes).map(|c| (0..nodes).filter(|n| (0..k).any(|j| (n * k + j) % classes == c)).collect()).collect();
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
        return Err(Error::Split(format!("node {n} got {} rows, fewer than the minimum {min_size}", p.len())));
    }
    Ok(parts)
}

/// [`Partition::Quantity`]: the rows shuffled and cut into consecutive slices, each `min_size`
/// rows plus a share of the rest drawn from Dirichlet(α).
fn dirichlet_quantities(
    rows: &[usize],
    nodes: usize,
    alpha: f64,
    min_size: usize,
    r: &mut Rng,
) -> Result<Vec<Vec<usize>>> {
    check_alpha(alpha)?;
    let mut all = rows.to_vec();
    all.shuffle(r);
    let extra = all.len() - nodes * min_size;
    let p = dirichlet(r, alpha, nodes);
    let cuts = proportional_cuts(&p, extra);
    let mut start = 0;
    Ok((0..nodes)
        .map(|k| {
            let len = min_size + (cuts[k].1 - cuts[k].0);
            let part = all[start..start + len].to_vec();
            start += len;
            part
        })
        .collect())
}

fn check_alpha(alpha: f64) -> Result<()> {
    if !(alpha.is_finite() && alpha > 0.0) {
        return Err(Error::Split(format!("Dirichlet α = {alpha} must be finite and positive")));
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

#[cfg(test)]
mod tests {
    use super::*;

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

    /// Coefficient of variation of per-node class proportions, averaged over classes: 0 when every
    /// node has the same label mix, larger as label skew grows.
    fn label_skew(counts: &[Vec<usize>]) -> f64 {
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
}
