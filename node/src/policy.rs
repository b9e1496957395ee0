//! The node's query policy: what it agrees to answer, whatever the aggregator asks. On by
//! default; `node.toml`'s `[policy]` section sets it.
//!
//! Each answer is a view of a model trained on private rows, so the aggregator's questions are
//! bounded: only the reference set whose SHA-256 the node pins, rounds strictly increasing (one
//! answer a round, never an answer to an older round, also after a restart), a temperature no
//! lower than the node allows, only the payload encodings it allows (only q8 by default: softmax
//! is invertible, so exact probabilities at a chosen temperature give exact logit differences,
//! and f16's eleven bits of mantissa leave little of what refusing f32 protects), at most so many samples a round and so many rounds in all. The node's sample
//! count goes out only when the aggregator's consensus rule needs it and the node allows it.
//!
//! [`QueryPolicy::check`] is a pure function of an announcement and the [`Answers`] given so
//! far; a refusal carries a reason code that the node sends back in its receipt, where the
//! aggregator logs it. [`Answers`] is persisted in the state folder ([`ANSWERS_FILE`]) with an
//! atomic write *before* the answer leaves, so that a node killed at any point and restarted
//! never answers a round twice. The record keeps the last submission itself: when an aggregator
//! resumes a round with the same question (only its deadline changed), the node sends exactly
//! the answer it gave, which reveals nothing new, instead of training and answering again.

use std::path::Path;

use protocol::{Encoding, ReferenceSetId, RefusalReason, RoundAnnouncement, Submission};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::refusal::Refusal;

/// Name of the record of answers in the state folder.
pub const ANSWERS_FILE: &str = "answers.json";

/// `[policy]` in `node.toml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryPolicy {
    /// SHA-256 (hex) of the only reference set this node answers on: a federation that
    /// announces another is refused, and the local copy is never replaced by another set.
    #[serde(with = "protocol::ids::reference_set_hex")]
    pub reference_sha256: ReferenceSetId,
    /// Size in bytes of that reference set (`reference_bytes` printed by `fd-aggregator init`):
    /// a download that announces another size is refused at its first chunk. Absent: any size up
    /// to 4 GiB is fetched (to a temporary file, hashed as it comes) and checked at the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_bytes: Option<u64>,
    /// Lowest softmax temperature the node answers at.
    #[serde(default = "default_min_temperature")]
    pub min_temperature: f32,
    /// Payload encodings the node answers in (`q8` by default; `f16` and `f32` only if listed).
    #[serde(default = "default_encodings")]
    pub encodings: Vec<Encoding>,
    /// Most reference samples the node labels in one round.
    #[serde(default = "default_max_samples_per_round")]
    pub max_samples_per_round: u32,
    /// Most rounds the node answers in all (re-sending an answer already given does not count).
    #[serde(default = "default_max_rounds")]
    pub max_rounds: u64,
    /// Whether the node tells the aggregator how many private rows it has, when the consensus
    /// rule asks for it (`weighted_by_samples` with no count declared in the roster).
    #[serde(default)]
    pub share_sample_count: bool,
    /// Whether the node answers only rounds with secure aggregation: a round that would take
    /// its soft labels in the clear is refused.
    #[serde(default)]
    pub require_secure_aggregation: bool,
    /// Lowest threshold T this node accepts in a secure round: the aggregator together with
    /// T − 1 members can rebuild this node's secrets, so a round announced with a lower T is
    /// refused. Whatever this says, the node also refuses a T that is not more than half of its
    /// neighbours in the round (two disjoint groups could then each sign a different survivor
    /// list). At least 2.
    #[serde(default = "default_min_secure_threshold")]
    pub min_secure_threshold: usize,
}

/// Default of [`QueryPolicy::min_temperature`].
pub const DEFAULT_MIN_TEMPERATURE: f32 = 1.0;
/// Default of [`QueryPolicy::max_samples_per_round`].
pub const DEFAULT_MAX_SAMPLES_PER_ROUND: u32 = 10_000;
/// Default of [`QueryPolicy::max_rounds`].
pub const DEFAULT_MAX_ROUNDS: u64 = 100;
/// Default of [`QueryPolicy::min_secure_threshold`]: the protocol's own minimum.
pub const DEFAULT_MIN_SECURE_THRESHOLD: usize = 2;

fn default_min_secure_threshold() -> usize {
    DEFAULT_MIN_SECURE_THRESHOLD
}

fn default_min_temperature() -> f32 {
    DEFAULT_MIN_TEMPERATURE
}

fn default_encodings() -> Vec<Encoding> {
    vec![Encoding::Q8]
}

fn default_max_samples_per_round() -> u32 {
    DEFAULT_MAX_SAMPLES_PER_ROUND
}

fn default_max_rounds() -> u64 {
    DEFAULT_MAX_ROUNDS
}

/// What to do with an announcement the policy admits.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// A new round: train and answer it.
    Answer,
    /// The round already answered, asked again with the same question: send this again.
    Resend(Box<Submission>),
}

impl QueryPolicy {
    /// The policy with its defaults for the reference set `reference_sha256`.
    pub fn pinned(reference_sha256: ReferenceSetId) -> Self {
        Self {
            reference_sha256,
            reference_bytes: None,
            min_temperature: DEFAULT_MIN_TEMPERATURE,
            encodings: default_encodings(),
            max_samples_per_round: DEFAULT_MAX_SAMPLES_PER_ROUND,
            max_rounds: DEFAULT_MAX_ROUNDS,
            share_sample_count: false,
            require_secure_aggregation: false,
            min_secure_threshold: DEFAULT_MIN_SECURE_THRESHOLD,
        }
    }

    /// Checks the ranges, naming the key at fault.
    pub fn validate(&self) -> Result<(), Error> {
        if !(self.min_temperature.is_finite() && self.min_temperature > 0.0) {
            return Err(Error::config(
                "policy.min_temperature",
                format!("{} must be a positive number", self.min_temperature),
            ));
        }
        if self.encodings.is_empty() {
            return Err(Error::config(
                "policy.encodings",
                "allows no encoding: list at least one of \"f16\", \"q8\", \"f32\"",
            ));
        }
        if self.max_samples_per_round == 0 {
            return Err(Error::config("policy.max_samples_per_round", "must be at least 1"));
        }
        if self.max_rounds == 0 {
            return Err(Error::config("policy.max_rounds", "must be at least 1"));
        }
        if self.min_secure_threshold < 2 {
            return Err(Error::config("policy.min_secure_threshold", "must be at least 2"));
        }
        Ok(())
    }

    /// Refuses a reference set other than the pinned one.
    pub fn check_reference(&self, announced: &ReferenceSetId) -> Result<(), Refusal> {
        if *announced != self.reference_sha256 {
            return Err(Refusal::new(
                RefusalReason::WrongReferenceSet,
                format!(
                    "announced reference set {announced}, but this node's policy.reference_sha256 pins {}",
                    self.reference_sha256
                ),
            ));
        }
        Ok(())
    }

    /// Whether to answer `ann`, given the answers already given.
    pub fn check(&self, ann: &RoundAnnouncement, answers: &Answers) -> Result<Decision, Refusal> {
        self.check_reference(&ann.reference_set)?;
        let policy = |detail: String| Err(Refusal::new(RefusalReason::Policy, detail));
        if let Some(last) = &answers.last {
            if ann.round < last.round {
                return policy(format!(
                    "round {} is before round {}, which this node has answered: rounds must increase",
                    ann.round, last.round
                ));
            }
            if ann.round == last.round {
                if ann.digest() == last.announcement {
                    return Ok(Decision::Resend(Box::new(last.clone())));
                }
                return policy(format!(
                    "round {} was answered for another announcement; a round is answered once",
                    ann.round
                ));
            }
        }
        if answers.count >= self.max_rounds {
            return policy(format!("this node has answered {} rounds, its policy.max_rounds", answers.count));
        }
        if ann.temperature.is_nan() || ann.temperature < self.min_temperature {
            return policy(format!(
                "temperature {} is below this node's policy.min_temperature {}",
                ann.temperature, self.min_temperature
            ));
        }
        if !self.encodings.contains(&ann.encoding) {
            let allowed: Vec<String> = self.encodings.iter().map(|e| e.to_string()).collect();
            return policy(format!(
                "encoding {} is not in this node's policy.encodings [{}]",
                ann.encoding,
                allowed.join(", ")
            ));
        }
        if ann.selection.len() > self.max_samples_per_round as usize {
            return policy(format!(
                "{} samples exceed this node's policy.max_samples_per_round {}",
                ann.selection.len(),
                self.max_samples_per_round
            ));
        }
        Ok(Decision::Answer)
    }

    /// The sample count to put in a submission: only if the aggregator asked for it and the
    /// policy allows it.
    pub fn sample_count(&self, wanted: bool, rows: u64) -> Option<u64> {
        (wanted && self.share_sample_count).then_some(rows)
    }
}

/// The record of what a node has answered, persisted in its state folder.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answers {
    /// Rounds answered.
    pub count: u64,
    /// The last submission sent (its round and announcement digest included).
    pub last: Option<Submission>,
}

impl Answers {
    /// The record after answering with `submission` (a new round).
    pub fn with(&self, submission: Submission) -> Self {
        Self { count: self.count + 1, last: Some(submission) }
    }

    /// Reads the record at `path`; none yet is an empty record. A record that cannot be read
    /// is an error, never a fresh start: it is what keeps old rounds from being answered again.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => return Err(Error::Io { path: path.to_owned(), source }),
        };
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::config(
                "state_dir",
                format!("{} is not a record of answers ({e}); the node will not start without it, since it bounds what the node answers: restore it, or remove it knowingly", path.display()),
            )
        })
    }

    /// Writes the record to `path` atomically (a crash leaves the old record or the new one).
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        let bytes = serde_json::to_vec(self)
            .map_err(|e| Error::config("state_dir", format!("cannot encode the record of answers: {e}")))?;
        learning::fs::atomic_write(path, &bytes)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{FederationId, SampleSelection, SoftLabels};

    const PIN: ReferenceSetId = ReferenceSetId([1; 32]);

    fn ann(round: u64) -> RoundAnnouncement {
        RoundAnnouncement {
            federation: FederationId::new("t").unwrap(),
            round,
            reference_set: PIN,
            reference_samples: 100,
            selection: SampleSelection::Seeded { seed: round, count: 20 },
            classes: 2,
            temperature: 2.0,
            deadline_unix_ms: 0,
            encoding: Encoding::Q8,
            secure: None,
        }
    }

    fn answer(ann: &RoundAnnouncement) -> Submission {
        Submission {
            federation: ann.federation.clone(),
            round: ann.round,
            announcement: ann.digest(),
            reference_set: ann.reference_set,
            temperature: ann.temperature,
            local_samples: None,
            labels: SoftLabels::encode(&[0.5; 40], 20, 2, ann.encoding).unwrap(),
            abstained: None,
        }
    }

    fn code(r: Result<Decision, Refusal>) -> RefusalReason {
        r.unwrap_err().reason
    }

    #[test]
    fn the_defaults_refuse_f32_f16_low_temperatures_large_rounds_and_other_reference_sets() {
        let p = QueryPolicy::pinned(PIN);
        p.validate().unwrap();
        let none = Answers::default();
        assert_eq!(p.check(&ann(1), &none), Ok(Decision::Answer));
        assert_eq!(
            code(p.check(&RoundAnnouncement { encoding: Encoding::F32, ..ann(1) }, &none)),
            RefusalReason::Policy
        );
        assert_eq!(
            code(p.check(&RoundAnnouncement { encoding: Encoding::F16, ..ann(1) }, &none)),
            RefusalReason::Policy,
            "f16 only if listed: its precision leaves little of what refusing f32 protects"
        );
        let parsed: QueryPolicy =
            serde_json::from_str(&format!(r#"{{ "reference_sha256": "{}" }}"#, PIN)).expect("a policy with defaults");
        assert_eq!(parsed.encodings, vec![Encoding::Q8], "the default when the key is left out");
        assert_eq!(code(p.check(&RoundAnnouncement { temperature: 0.5, ..ann(1) }, &none)), RefusalReason::Policy);
        assert_eq!(
            p.check(&RoundAnnouncement { temperature: 1.0, ..ann(1) }, &none),
            Ok(Decision::Answer),
            "the minimum itself is allowed"
        );
        assert_eq!(code(p.check(&RoundAnnouncement { temperature: f32::NAN, ..ann(1) }, &none)), RefusalReason::Policy);
        let big = RoundAnnouncement {
            selection: SampleSelection::Seeded { seed: 1, count: DEFAULT_MAX_SAMPLES_PER_ROUND + 1 },
            reference_samples: 20_000,
            ..ann(1)
        };
        assert_eq!(code(p.check(&big, &none)), RefusalReason::Policy);
        assert_eq!(
            code(p.check(&RoundAnnouncement { reference_set: ReferenceSetId([2; 32]), ..ann(1) }, &none)),
            RefusalReason::WrongReferenceSet
        );
        // An operator may allow f32 explicitly.
        let f32_ok = QueryPolicy { encodings: vec![Encoding::F32], ..p.clone() };
        assert_eq!(f32_ok.check(&RoundAnnouncement { encoding: Encoding::F32, ..ann(1) }, &none), Ok(Decision::Answer));
        assert_eq!(code(f32_ok.check(&ann(1), &none)), RefusalReason::Policy, "q8 is then not allowed");
    }

    #[test]
    fn rounds_only_increase_a_round_is_answered_once_and_the_same_question_gets_the_same_answer() {
        let p = QueryPolicy { max_rounds: 3, ..QueryPolicy::pinned(PIN) };
        let a2 = ann(2);
        let answers = Answers::default().with(answer(&ann(1))).with(answer(&a2));
        assert_eq!(answers.count, 2);
        assert_eq!(code(p.check(&ann(1), &answers)), RefusalReason::Policy, "an older round");
        // The same question with a new deadline (an aggregator resuming the round): the same answer.
        let again = RoundAnnouncement { deadline_unix_ms: 99, ..a2.clone() };
        assert_eq!(p.check(&again, &answers), Ok(Decision::Resend(Box::new(answer(&a2)))));
        // Another question for the same round: refused.
        let reseeded = RoundAnnouncement { selection: SampleSelection::Seeded { seed: 77, count: 20 }, ..a2.clone() };
        assert_eq!(code(p.check(&reseeded, &answers)), RefusalReason::Policy);
        let hotter = RoundAnnouncement { temperature: 4.0, ..a2 };
        assert_eq!(code(p.check(&hotter, &answers)), RefusalReason::Policy);
        assert_eq!(p.check(&ann(5), &answers), Ok(Decision::Answer), "rounds may skip (a node that was away)");
        // The round limit: a third round is answered, a fourth is not, the third again is.
        let answers = answers.with(answer(&ann(5)));
        assert_eq!(code(p.check(&ann(6), &answers)), RefusalReason::Policy);
        assert!(matches!(p.check(&ann(5), &answers), Ok(Decision::Resend(_))));
    }

    #[test]
    fn the_sample_count_goes_out_only_when_wanted_and_allowed() {
        let p = QueryPolicy::pinned(PIN);
        assert_eq!(p.sample_count(true, 120), None, "not allowed by default");
        let sharing = QueryPolicy { share_sample_count: true, ..p };
        assert_eq!(sharing.sample_count(true, 120), Some(120));
        assert_eq!(sharing.sample_count(false, 120), None, "not wanted");
    }

    #[test]
    fn bad_values_are_refused_naming_the_key() {
        let p = QueryPolicy::pinned(PIN);
        let field = |q: QueryPolicy| match q.validate() {
            Err(Error::Config { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(QueryPolicy { min_temperature: 0.0, ..p.clone() }), "policy.min_temperature");
        assert_eq!(field(QueryPolicy { min_temperature: f32::INFINITY, ..p.clone() }), "policy.min_temperature");
        assert_eq!(field(QueryPolicy { encodings: vec![], ..p.clone() }), "policy.encodings");
        assert_eq!(field(QueryPolicy { max_samples_per_round: 0, ..p.clone() }), "policy.max_samples_per_round");
        assert_eq!(field(QueryPolicy { max_rounds: 0, ..p }), "policy.max_rounds");
    }

    #[test]
    fn the_record_survives_a_reload_and_a_corrupt_one_is_an_error_not_a_fresh_start() {
        let tmp = tempfile::tempdir().unwrap();
        // A state folder that does not exist yet: saving the record makes it.
        let path = tmp.path().join("state").join(ANSWERS_FILE);
        assert_eq!(Answers::load(&path).unwrap(), Answers::default(), "no record yet");
        let answers = Answers::default().with(answer(&ann(1))).with(answer(&ann(2)));
        answers.save(&path).unwrap();
        assert_eq!(Answers::load(&path).unwrap(), answers);
        std::fs::write(&path, b"{\"count\": 2, \"last\": nul").unwrap();
        match Answers::load(&path) {
            Err(Error::Config { field, .. }) => assert_eq!(field, "state_dir"),
            other => panic!("a corrupt record was accepted: {other:?}"),
        }
    }
}
