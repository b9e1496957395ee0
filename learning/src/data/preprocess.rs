//! [`Preprocess`]: preprocessing declared in configuration.

use serde::{Deserialize, Serialize};

use crate::Error;

use super::Result;

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

    /// Preprocessing as given on a command line: `none`, `scale:FACTOR` (e.g. `scale:0.0625`) or
    /// `standardise:MEAN/STD,MEAN/STD,…` (one pair a feature, as `fd-aggregator reference build
    /// --preprocess standardise` prints it; [`Preprocess::to_flag`] writes it).
    pub fn from_flag(s: &str) -> Result<Self> {
        match s.trim().split_once(':') {
            None if s.trim() == "none" => Ok(Preprocess::None),
            None if s.trim() == "standardise" => Err(Error::Config(
                "`standardise` needs the reference set's statistics: `fd-aggregator reference build --preprocess \
                 standardise` computes them and prints the `standardise:MEAN/STD,…` flag every node uses"
                    .into(),
            )),
            Some(("scale", f)) => match f.trim().parse::<f32>() {
                Ok(factor) if factor.is_finite() && factor != 0.0 => Ok(Preprocess::Scale { factor }),
                _ => Err(Error::Config(format!("`{f}` is not a finite, non-zero scale factor"))),
            },
            Some(("standardise", pairs)) => {
                let (mut mean, mut std) = (Vec::new(), Vec::new());
                for (j, pair) in pairs.split(',').enumerate() {
                    let parsed = pair
                        .split_once('/')
                        .and_then(|(m, s)| Some((m.trim().parse::<f32>().ok()?, s.trim().parse::<f32>().ok()?)));
                    match parsed {
                        Some((m, s)) if m.is_finite() && s.is_finite() && s >= 0.0 => {
                            mean.push(m);
                            std.push(s);
                        }
                        _ => {
                            return Err(Error::Config(format!(
                                "standardisation of feature {}: `{pair}` is not MEAN/STD (finite, STD ≥ 0)",
                                j + 1
                            )));
                        }
                    }
                }
                Ok(Preprocess::Standardise { mean, std })
            }
            _ => Err(Error::Config(format!(
                "preprocessing `{s}`: use `none`, `scale:FACTOR` (e.g. scale:0.0625) or the `standardise:MEAN/STD,…` \
                 that `fd-aggregator reference build --preprocess standardise` prints"
            ))),
        }
    }

    /// The command-line form [`Preprocess::from_flag`] reads back to the same value, bit for bit.
    pub fn to_flag(&self) -> String {
        match self {
            Preprocess::None => "none".into(),
            Preprocess::Scale { factor } => format!("scale:{factor}"),
            Preprocess::Standardise { mean, std } => {
                let pairs: Vec<String> = mean.iter().zip(std).map(|(m, s)| format!("{m}/{s}")).collect();
                format!("standardise:{}", pairs.join(","))
            }
        }
    }

    /// Applies the preprocessing in place to a row-major matrix of width `dim`.
    pub fn apply(&self, features: &mut [f32], dim: usize) -> Result<()> {
        match self {
            Preprocess::None => {}
            Preprocess::Scale { factor } => {
                if !factor.is_finite() || *factor == 0.0 {
                    return Err(Error::Config(format!("scale factor {factor} must be finite and non-zero")));
                }
                features.iter_mut().for_each(|v| *v *= factor);
            }
            Preprocess::Standardise { mean, std } => {
                if mean.len() != dim || std.len() != dim {
                    return Err(Error::Shape(format!(
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(Preprocess::from_flag("scale:0.5").unwrap(), Preprocess::Scale { factor: 0.5 });
        assert_eq!(Preprocess::from_flag("none").unwrap(), Preprocess::None);
        for bad in ["scale:0", "scale:x", "standardise", "", "standardise:1", "standardise:1/x", "standardise:1/-1"] {
            assert!(Preprocess::from_flag(bad).is_err(), "{bad}");
        }
        let exact = Preprocess::Standardise { mean: vec![0.1, -3.0e-7, 12345.678], std: vec![1.0 / 3.0, 0.0, 2.5e9] };
        for p in [exact, Preprocess::None, Preprocess::Scale { factor: 0.0625 }] {
            assert_eq!(Preprocess::from_flag(&p.to_flag()).unwrap(), p, "{}", p.to_flag());
        }
    }
}
