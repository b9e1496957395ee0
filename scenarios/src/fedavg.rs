//! Federated averaging (FedAvg, McMahan et al., 2017), the weight-sharing baseline: the weighted
//! mean of the parameters of models of one architecture. It needs nothing of learning beyond
//! [`Model::parameters`] and [`Model::with_parameters`].

use learning::Model;

/// Weighted mean of the parameters of `models` (one architecture), weight `weights[i]` for
/// `models[i]`. Weights need not sum to 1; they must be finite, non-negative and not all zero.
pub fn average(models: &[&Model], weights: &[f64]) -> anyhow::Result<Model> {
    let Some(first) = models.first() else {
        anyhow::bail!("FedAvg: nothing to average");
    };
    if models.len() != weights.len() || models.iter().any(|m| m.spec() != first.spec()) {
        anyhow::bail!("FedAvg needs models of one architecture and a weight each");
    }
    let total: f64 = weights.iter().sum();
    if weights.iter().any(|w| !(w.is_finite() && *w >= 0.0)) || !total.is_finite() || total == 0.0 {
        anyhow::bail!("FedAvg weights must be finite, non-negative and sum to a positive number");
    }
    let mut sum: Vec<Vec<f64>> = Vec::new();
    for (m, &w) in models.iter().zip(weights) {
        let params = m.parameters()?;
        if sum.is_empty() {
            sum = params.iter().map(|p| vec![0.0; p.len()]).collect();
        }
        for (acc, p) in sum.iter_mut().zip(&params) {
            for (a, v) in acc.iter_mut().zip(p) {
                *a += w / total * f64::from(*v);
            }
        }
    }
    let mean = sum.into_iter().map(|p| p.into_iter().map(|v| v as f32).collect()).collect();
    Ok(first.with_parameters(mean)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use learning::data::{self, CsvOptions, Dataset, Preprocess};
    use learning::train::{self, TrainConfig};
    use learning::{Architecture, BackendKind};

    fn digits(rows: usize) -> Dataset {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/digits/digits.csv.gz");
        let mut d = data::load_csv(&path, &CsvOptions::default()).unwrap();
        Preprocess::Scale { factor: 1.0 / 16.0 }.apply(&mut d.features, d.dim).unwrap();
        d.subset(&(0..rows).collect::<Vec<_>>())
    }

    fn mlp(hidden: usize) -> Architecture {
        Architecture::Mlp { hidden: vec![hidden], dropout: 0.0 }
    }

    /// A freshly initialised model and the same model after two epochs of training.
    fn parents() -> (Model, Model, Dataset) {
        let d = digits(300);
        let a = Model::new(&mlp(32), 64, 10, BackendKind::Flex, 1).unwrap();
        let mut b = a.clone();
        train::fit(&mut b, &d, &TrainConfig { epochs: 2, ..Default::default() }, 1).unwrap();
        (a, b, d)
    }

    #[test]
    fn averaged_weights_lie_between_their_parents() {
        let (a, b, d) = parents();
        let (pa, pb) = (a.parameters().unwrap(), b.parameters().unwrap());
        let values = |p: &[Vec<f32>]| p.concat();
        let (xa, xb) = (values(&pa), values(&pb));
        let moved = xa.iter().zip(&xb).filter(|(x, y)| x != y).count();
        assert!(moved > xa.len() / 2, "training moved only {moved} of {} weights", xa.len());

        let mid = values(&average(&[&a, &b], &[1.0, 1.0]).unwrap().parameters().unwrap());
        let near_a = values(&average(&[&a, &b], &[3.0, 1.0]).unwrap().parameters().unwrap());
        assert_eq!((mid.len(), near_a.len()), (xa.len(), xa.len()));
        for (i, (&x, &y)) in xa.iter().zip(&xb).enumerate() {
            let (lo, hi) = (x.min(y), x.max(y));
            let (m, n) = (mid[i], near_a[i]);
            assert_eq!(
                m,
                ((f64::from(x) + f64::from(y)) / 2.0) as f32,
                "weight {i}: equal weights give the midpoint of {x} and {y}"
            );
            assert!(lo <= n && n <= hi, "weight {i}: {n} is not between {x} and {y}");
            assert!((n - x).abs() <= (n - y).abs(), "weight {i}: weights (3, 1) give {n}, nearer {y} than {x}");
        }
        assert_eq!(
            average(&[&a, &b], &[0.0, 1.0]).unwrap().parameters().unwrap(),
            pb,
            "weights (0, 1) give the second parent"
        );
        assert_eq!(
            average(&[&a, &a], &[1.0, 3.0]).unwrap().parameters().unwrap(),
            pa,
            "one model averaged with itself"
        );

        // The average is a model like any other: it predicts as its weights say and keeps training.
        let x = &d.features[..64];
        assert_eq!(average(&[&a, &b], &[0.0, 1.0]).unwrap().logits(x, 1).unwrap(), b.logits(x, 1).unwrap());
        let mut avg = average(&[&a, &b], &[1.0, 1.0]).unwrap();
        train::fit(&mut avg, &d, &TrainConfig { epochs: 1, ..Default::default() }, 2).unwrap();
        assert_ne!(values(&avg.parameters().unwrap()), mid);
    }

    #[test]
    fn averaging_refuses_what_it_cannot_average() {
        let (a, b, _) = parents();
        let other = Model::new(&mlp(16), 64, 10, BackendKind::Flex, 1).unwrap();
        assert!(average(&[], &[]).is_err());
        assert!(average(&[&a, &b], &[1.0]).is_err(), "a weight each");
        assert!(average(&[&a, &other], &[1.0, 1.0]).is_err(), "one architecture");
        for bad in [[0.0, 0.0], [-1.0, 2.0], [f64::NAN, 1.0], [f64::INFINITY, 1.0]] {
            assert!(average(&[&a, &b], &bad).is_err(), "weights {bad:?}");
        }
    }
}
