//! The operator's live view of the aggregator: a [`Board`] that the rounds update at a few
//! points (a round opens, a node answers, declines or is refused, a round completes) and that
//! the HTTP endpoint reads. The board is a `tokio::sync::watch` channel: writers replace or
//! modify a [`Status`] snapshot in place, the endpoint borrows it for the time of one
//! serialisation; no lock is ever held across an `await`.
//!
//! What it holds is what an operator may see on a loopback page: names, short ids, counts,
//! refusal reasons, times, bytes and the global student's scores. Never a key, a soft label, a
//! consensus or a submission's payload ([`Status`] has no field that could hold one).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use protocol::{ParticipantId, RefusalReason};
use serde::Serialize;
use tokio::sync::watch;

use crate::checkpoint::RoundMetrics;

/// The live view's page and script.
const PAGE: &str = include_str!("../assets/status.html");
const SCRIPT: &str = include_str!("../assets/status.js");

/// What the aggregator is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Started; no round opened yet.
    Starting,
    /// A round is open: collecting answers.
    Collecting,
    /// The student is distilling the round's consensus.
    Distilling,
    /// Sending the consensus and checkpointing.
    Publishing,
    /// Every round is done.
    Finished,
    /// Stopped before the last round (a signal or a failure).
    Stopped,
}

/// A roster member's part in the open round.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "reason")]
pub enum Part {
    /// Asked, no answer yet.
    Waiting,
    /// Its submission was accepted.
    Answered,
    /// It refused the announcement (its budget, its policy, data that does not fit).
    Declined(String),
    /// Its submission was refused (not as late).
    Refused(String),
    /// No answer by the deadline, or an answer after the round closed.
    Late,
}

/// One roster member.
#[derive(Clone, Debug, Serialize)]
pub struct Member {
    /// Its roster name.
    pub name: String,
    /// Its short id (public).
    pub peer: String,
    /// Whether it is joined now.
    pub joined: bool,
    /// When it last sent anything (Unix ms).
    pub last_contact_unix_ms: Option<u64>,
    /// Submissions accepted since start-up.
    pub answers: u64,
    /// Announcements it declined since start-up, by reason.
    pub declined: BTreeMap<String, u64>,
    /// Its submissions refused since start-up, by reason.
    pub refused: BTreeMap<String, u64>,
    /// Why it said it cannot take part, if it did (the rounds no longer wait for it).
    pub withdrawn: Option<String>,
    /// Its part in the current round.
    pub round: Part,
}

/// One completed round, for the plots.
#[derive(Clone, Debug, Serialize)]
pub struct RoundPoint {
    /// The round.
    pub round: u64,
    /// Submissions combined.
    pub participants: usize,
    /// Bytes received during the round.
    pub bytes_in: u64,
    /// Bytes sent during the round.
    pub bytes_out: u64,
    /// The global student's accuracy on the validation holdout, if there is one.
    pub accuracy: Option<f32>,
    /// Agreement of the student's argmax with the round's consensus.
    pub agreement: f32,
    /// Seconds from announcement to checkpoint.
    pub seconds: f64,
}

impl From<&RoundMetrics> for RoundPoint {
    fn from(m: &RoundMetrics) -> Self {
        Self {
            round: m.round,
            participants: m.participants.len(),
            bytes_in: m.bytes_in,
            bytes_out: m.bytes_out,
            accuracy: m.accuracy,
            agreement: m.agreement,
            seconds: m.seconds,
        }
    }
}

/// The aggregator as the live view shows it (`/api/status`).
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// The federation's name.
    pub federation: String,
    /// Rounds planned.
    pub rounds: u64,
    /// Rounds completed (resumed ones included).
    pub completed: u64,
    /// Submissions a round needs to close at its deadline.
    pub quorum: usize,
    /// Whether the global student is scored on a validation holdout.
    pub validation: bool,
    /// What the aggregator is doing.
    pub phase: Phase,
    /// The round open or being finished (0 before the first).
    pub round: u64,
    /// When it opened (Unix ms).
    pub opened_unix_ms: Option<u64>,
    /// Its deadline (Unix ms).
    pub deadline_unix_ms: Option<u64>,
    /// The roster, by name.
    pub roster: Vec<Member>,
    /// Completed rounds, in order.
    pub history: Vec<RoundPoint>,
    /// When the document was made (Unix ms).
    pub now_unix_ms: u64,
}

/// The aggregator's side of the live view. Cheap to clone; every clone writes the same snapshot.
#[derive(Clone, Debug)]
pub struct Board {
    tx: Arc<watch::Sender<Status>>,
    index: Arc<HashMap<ParticipantId, usize>>,
}

fn reason(r: RefusalReason) -> String {
    format!("{r:?}")
}

impl Board {
    /// A board for `roster`, with the rounds already completed.
    pub fn new(
        federation: &str,
        rounds: u64,
        quorum: usize,
        validation: bool,
        roster: &HashMap<ParticipantId, String>,
        history: &[RoundMetrics],
    ) -> Self {
        let mut members: Vec<(ParticipantId, Member)> = roster
            .iter()
            .map(|(p, name)| {
                let m = Member {
                    name: name.clone(),
                    peer: p.short(),
                    joined: false,
                    last_contact_unix_ms: None,
                    answers: 0,
                    declined: BTreeMap::new(),
                    refused: BTreeMap::new(),
                    withdrawn: None,
                    round: Part::Waiting,
                };
                (*p, m)
            })
            .collect();
        members.sort_by(|a, b| a.1.name.cmp(&b.1.name));
        let index = members.iter().enumerate().map(|(i, (p, _))| (*p, i)).collect();
        let status = Status {
            federation: federation.to_owned(),
            rounds,
            completed: history.last().map_or(0, |m| m.round),
            quorum,
            validation,
            phase: Phase::Starting,
            round: history.last().map_or(0, |m| m.round),
            opened_unix_ms: None,
            deadline_unix_ms: None,
            roster: members.into_iter().map(|(_, m)| m).collect(),
            history: history.iter().map(RoundPoint::from).collect(),
            now_unix_ms: 0,
        };
        Self { tx: Arc::new(watch::Sender::new(status)), index: Arc::new(index) }
    }

    /// Changes `peer`'s entry (given the open round), if it is on the roster.
    fn member(&self, peer: &ParticipantId, f: impl FnOnce(&mut Member, u64)) {
        if let Some(&i) = self.index.get(peer) {
            self.tx.send_modify(|s| f(&mut s.roster[i], s.round));
        }
    }

    /// Round `round` opens, its deadline at `deadline_unix_ms`; `withdrawn` members are
    /// counted as declined.
    pub fn open(&self, round: u64, deadline_unix_ms: u64) {
        self.tx.send_modify(|s| {
            s.phase = Phase::Collecting;
            s.round = round;
            s.opened_unix_ms = Some(net::clock::now_ms());
            s.deadline_unix_ms = Some(deadline_unix_ms);
            for m in &mut s.roster {
                m.round = match &m.withdrawn {
                    Some(r) => Part::Declined(r.clone()),
                    None => Part::Waiting,
                };
            }
        });
    }

    /// The aggregator is now doing `phase`.
    pub fn phase(&self, phase: Phase) {
        self.tx.send_modify(|s| s.phase = phase);
    }

    /// `peer` sent something.
    pub fn contact(&self, peer: &ParticipantId) {
        self.member(peer, |m, _| m.last_contact_unix_ms = Some(net::clock::now_ms()));
    }

    /// `peer` joined (`true`) or left.
    pub fn joined(&self, peer: &ParticipantId, joined: bool) {
        self.member(peer, |m, _| {
            m.joined = joined;
            if joined {
                m.withdrawn = None;
            }
        });
    }

    /// `peer`'s submission for the open round was accepted.
    pub fn answered(&self, peer: &ParticipantId) {
        self.member(peer, |m, _| {
            m.answers += 1;
            m.round = Part::Answered;
        });
    }

    /// `peer`'s submission for `round` was refused.
    pub fn refused(&self, peer: &ParticipantId, round: u64, why: RefusalReason) {
        self.member(peer, |m, open| {
            *m.refused.entry(reason(why)).or_default() += 1;
            if round == open && m.round != Part::Answered {
                m.round = if why == RefusalReason::Late { Part::Late } else { Part::Refused(reason(why)) };
            }
        });
    }

    /// `peer` refused the announcement of `round`.
    pub fn declined(&self, peer: &ParticipantId, round: u64, why: RefusalReason) {
        self.member(peer, |m, open| {
            *m.declined.entry(reason(why)).or_default() += 1;
            if round == open && m.round == Part::Waiting {
                m.round = Part::Declined(reason(why));
            }
        });
    }

    /// `peer` said it cannot take part.
    pub fn withdrawn(&self, peer: &ParticipantId, why: RefusalReason) {
        self.member(peer, |m, _| {
            m.withdrawn = Some(reason(why));
            if m.round == Part::Waiting {
                m.round = Part::Declined(reason(why));
            }
        });
    }

    /// A round completed.
    pub fn completed(&self, m: &RoundMetrics) {
        self.tx.send_modify(|s| {
            s.completed = m.round;
            s.history.push(RoundPoint::from(m));
        });
    }

    /// The snapshot as of `now_unix_ms`: members still waiting after the deadline are late.
    pub fn snapshot(&self, now_unix_ms: u64) -> Status {
        let mut s = self.tx.borrow().clone();
        s.now_unix_ms = now_unix_ms;
        let past = s.phase == Phase::Collecting && s.deadline_unix_ms.is_some_and(|d| now_unix_ms > d);
        if past {
            for m in &mut s.roster {
                if m.round == Part::Waiting {
                    m.round = Part::Late;
                }
            }
        }
        s
    }

    /// The `/api/status` document now.
    pub fn render(&self) -> String {
        serde_json::to_string(&self.snapshot(net::clock::now_ms())).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The live view to serve: the page, its script and [`Board::render`].
    pub fn view(&self) -> net::http::LiveView {
        let board = self.clone();
        net::http::LiveView::new(PAGE, SCRIPT, Arc::new(move || board.render()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board() -> (Board, Vec<ParticipantId>) {
        let ids: Vec<ParticipantId> = (0..3).map(|i| ParticipantId([i; 32])).collect();
        let roster = ids.iter().zip(["carol", "alice", "bob"]).map(|(p, n)| (*p, n.to_owned())).collect();
        (Board::new("f", 5, 2, true, &roster, &[]), ids)
    }

    #[test]
    fn a_round_shows_who_answered_declined_and_is_late() {
        let (b, ids) = board();
        b.open(1, 10_000);
        b.answered(&ids[0]);
        b.declined(&ids[1], 1, RefusalReason::BudgetSpent);
        b.declined(&ids[1], 0, RefusalReason::Policy);
        let before = b.snapshot(9_000);
        let parts: Vec<(&str, &Part)> = before.roster.iter().map(|m| (m.name.as_str(), &m.round)).collect();
        assert_eq!(
            parts,
            [("alice", &Part::Declined("BudgetSpent".into())), ("bob", &Part::Waiting), ("carol", &Part::Answered)]
        );
        assert_eq!(b.snapshot(11_000).roster[1].round, Part::Late, "waiting past the deadline");
        assert_eq!(before.roster[0].declined.values().sum::<u64>(), 2, "both refusals counted");
        b.refused(&ids[2], 1, RefusalReason::Late);
        assert_eq!(b.snapshot(9_000).roster[1].round, Part::Late);
        b.open(2, 20_000);
        assert!(b.snapshot(9_000).roster.iter().all(|m| m.round == Part::Waiting));
        assert_eq!(b.snapshot(9_000).roster[2].answers, 1);
    }

    /// What the document shows is exactly what docs/security.md lists: a new field has to be
    /// added there (and here) on purpose.
    #[test]
    fn the_document_holds_only_the_listed_fields() {
        let (b, ids) = board();
        b.open(1, 10_000);
        b.refused(&ids[0], 1, RefusalReason::WrongShape);
        let m = RoundMetrics {
            round: 1,
            participants: vec!["alice".into(), "bob".into()],
            bytes_in: 1000,
            bytes_out: 2000,
            samples: 10,
            masked: 0,
            abstentions: 0,
            accuracy: Some(0.5),
            nll: Some(1.0),
            agreement: 0.9,
            seconds: 1.5,
            cohort: Vec::new(),
        };
        b.completed(&m);
        let doc: serde_json::Value = serde_json::from_str(&b.render()).expect("json");
        let keys = |v: &serde_json::Value| v.as_object().expect("object").keys().cloned().collect::<Vec<_>>();
        assert_eq!(
            keys(&doc),
            [
                "completed",
                "deadline_unix_ms",
                "federation",
                "history",
                "now_unix_ms",
                "opened_unix_ms",
                "phase",
                "quorum",
                "roster",
                "round",
                "rounds",
                "validation"
            ]
        );
        assert_eq!(
            keys(&doc["roster"][0]),
            ["answers", "declined", "joined", "last_contact_unix_ms", "name", "peer", "refused", "round", "withdrawn"]
        );
        assert_eq!(
            keys(&doc["history"][0]),
            ["accuracy", "agreement", "bytes_in", "bytes_out", "participants", "round", "seconds"]
        );
    }
}
