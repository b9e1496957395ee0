//! A compression job end to end: for each method, the student(s) trained, exported (burnpack,
//! safetensors, ONNX and, if asked, int8 weights) under `out/<method>/`, and measured; the
//! teacher measured first. The table is what [`super::measure::markdown`] makes of the rows.

use std::path::{Path, PathBuf};

use protocol::seed::{Stream, derive};
use serde::{Deserialize, Serialize};

use super::config::{CompressConfig, Method};
use super::fit::{Lesson, PublicSet, check, train};
use super::measure::{Analysis, EnergyMeter, analyse, analyse_ensemble};
use super::quant::{load_int8, save_int8};
use crate::arch::Architecture;
use crate::model::Model;
use crate::{Error, fs};

/// What to compress the teacher into, and how.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    /// The students' architecture; unset: the teacher's (what born-again needs).
    #[serde(default)]
    pub student: Option<Architecture>,
    /// Methods, each a student (born-again: one a generation).
    pub methods: Vec<Method>,
    /// Settings.
    #[serde(default)]
    pub settings: CompressConfig,
}

impl Job {
    /// Checks the settings and the methods (at least one, none twice).
    pub fn validate(&self) -> Result<(), Error> {
        self.settings.validate()?;
        let mut m = self.methods.clone();
        m.sort();
        m.dedup();
        if self.methods.is_empty() || m.len() != self.methods.len() {
            return Err(Error::Config("a compression job names each of its methods once, and at least one".into()));
        }
        Ok(())
    }
}

/// Labelled rows the models are scored on.
#[derive(Clone, Copy, Debug)]
pub struct TestSet<'a> {
    /// Row-major inputs.
    pub inputs: &'a [f32],
    /// Their labels.
    pub labels: &'a [u32],
}

/// What a job produced: the analysis rows (teacher first) and the folder of each student.
#[derive(Clone, Debug)]
pub struct Compressed {
    /// One row a model (the teacher, each student, its int8 version, an ensemble).
    pub rows: Vec<Analysis>,
    /// Folders of the exported students.
    pub folders: Vec<PathBuf>,
}

/// Runs `job` from `teacher` on the public rows, writing every student under `out`, seeded.
/// Every method is checked against the teacher, the student and the data before any training.
pub fn compress(
    teacher: &Model,
    job: &Job,
    public: &PublicSet<'_>,
    test: TestSet<'_>,
    out: &Path,
    seed: u64,
) -> Result<Compressed, Error> {
    job.validate()?;
    let arch = job.student.clone().unwrap_or_else(|| teacher.architecture.clone());
    arch.validate(teacher.input_dim, teacher.classes)?;
    let rows = public.rows(teacher.input_dim);
    if rows * teacher.input_dim != public.inputs.len() || rows == 0 || public.labels.is_some_and(|l| l.len() != rows) {
        return Err(Error::Shape(format!(
            "public set: {} values, not rows of {}",
            public.inputs.len(),
            teacher.input_dim
        )));
    }
    for &m in &job.methods {
        check(teacher, &arch, m, public)?;
    }
    let cfg = &job.settings;
    let meter = EnergyMeter::new(cfg.watts_per_core);
    let test = (test.inputs, test.labels);
    let teacher_bytes = teacher.to_bytes()?.len() as u64;
    let mut out_rows = vec![analyse("teacher", teacher, teacher_bytes, test, &meter)?];
    let mut folders = Vec::new();
    let soft = teacher.soft_labels(public.inputs, cfg.temperature, 256)?;
    for &method in &job.methods {
        let dir = out.join(method.name());
        let mut trained: Vec<(String, Model)> = Vec::new();
        match method {
            Method::BornAgain => {
                let mut targets = soft.clone();
                for g in 1..=cfg.generations {
                    let previous = trained.last().map_or(teacher, |(_, m)| m);
                    if g > 1 {
                        targets = previous.soft_labels(public.inputs, cfg.temperature, 256)?;
                    }
                    let lesson = Lesson { targets: Some(&targets), teacher: previous, method: Method::Kd };
                    let (m, _) = train(&arch, &lesson, public, cfg, derive(seed, Stream::Init, 1000 + g as u64))?;
                    trained.push((format!("born-again g{g}"), m));
                }
            }
            _ => {
                let targets = match method {
                    Method::Baseline => None,
                    Method::MultiTeacher => Some(mixed_targets(&soft, public, teacher.classes, cfg.consensus_weight)),
                    _ => Some(soft.clone()),
                };
                let lesson = Lesson { targets: targets.as_deref(), teacher, method };
                let (m, _) = train(&arch, &lesson, public, cfg, seed)?;
                trained.push((method.name().to_string(), m));
            }
        }
        let mut generations = Vec::new();
        for (i, (name, model)) in trained.iter().enumerate() {
            let folder = if trained.len() > 1 { dir.join(format!("g{}", i + 1)) } else { dir.clone() };
            let (bytes, int8) = export(model, &folder, cfg.int8)?;
            let row = analyse(name, model, bytes, test, &meter)?;
            generations.push(row.clone());
            out_rows.push(row);
            if let Some((int8_bytes, int8_model)) = int8 {
                out_rows.push(analyse(&format!("{name} int8"), &int8_model, int8_bytes, test, &meter)?);
            }
            folders.push(folder);
        }
        if method == Method::BornAgain && cfg.ensemble && trained.len() > 1 {
            let members: Vec<(&Model, &Analysis)> = trained.iter().map(|(_, m)| m).zip(&generations).collect();
            out_rows.push(analyse_ensemble("born-again ensemble", &members, test)?);
        }
    }
    Ok(Compressed { rows: out_rows, folders })
}

/// Multi-teacher targets: for rows with a consensus, `w · consensus + (1 − w) · teacher`; the
/// teacher's alone elsewhere.
fn mixed_targets(teacher: &[f32], public: &PublicSet<'_>, classes: usize, w: f32) -> Vec<f32> {
    let mut out = teacher.to_vec();
    for (row, probs) in public.consensus.into_iter().flatten() {
        let at = *row as usize * classes;
        if probs.len() == classes && at + classes <= out.len() {
            for (o, p) in out[at..at + classes].iter_mut().zip(probs) {
                *o = w * p + (1.0 - w) * *o;
            }
        }
    }
    out
}

/// Writes `folder/student.{bpk,json,safetensors,onnx}` and, if asked, `student.int8.safetensors`;
/// returns the burnpack's size and the int8 file's size with the model read back from it.
fn export(model: &Model, folder: &Path, int8: bool) -> Result<(u64, Option<(u64, Model)>), Error> {
    fs::create_private_dir(folder)?;
    let base = folder.join("student");
    let bytes = model.save(&base)?;
    model.export_safetensors(&base.with_extension("safetensors"))?;
    model.export_onnx(&base.with_extension("onnx"))?;
    let int8 = if int8 {
        let path = folder.join("student.int8.safetensors");
        let size = save_int8(model, &path)?;
        Some((size, load_int8(&path, model.backend)?))
    } else {
        None
    };
    Ok((bytes, int8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_teacher_targets_mix_where_a_consensus_exists() {
        let teacher = [0.5f32, 0.5, 1.0, 0.0];
        let consensus = std::collections::BTreeMap::from([(1u32, vec![0.0f32, 1.0])]);
        let public = PublicSet { inputs: &[], labels: None, consensus: Some(&consensus) };
        assert_eq!(mixed_targets(&teacher, &public, 2, 0.25), vec![0.5, 0.5, 0.75, 0.25]);
    }
}
