//! Collecting a round: events and refusals go to the round until it may close. It waits on the
//! deadline itself (no polling interval), so tests drive it with tokio's paused clock.

use protocol::{ParticipantId, RefusalReason, Round};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::round::RoundState;

/// A node's refusal of an announcement, reported by the task that sent it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Declined {
    /// The node.
    pub peer: ParticipantId,
    /// The round it was asked about.
    pub round: Round,
    /// Why it refused.
    pub reason: RefusalReason,
}

/// How a round's collection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Collected {
    /// The round may close ([`RoundState::ready`]).
    Ready,
    /// Every roster member answered or declined, and too few answered for the quorum.
    Unreachable,
    /// `shutdown` fired.
    Shutdown,
    /// The event channel closed: the network is gone.
    Closed,
}

/// What [`Collection::next`] hands back: an event for the caller to handle, or the end.
#[derive(Debug)]
pub(crate) enum Step<E> {
    /// Handle this event (it may submit to the round), then ask again.
    Event(E),
    /// Collection is over.
    End(Collected),
}

/// The collection of one round's answers: the caller asks for the next step until it ends,
/// handling events in between (with access to everything the collection does not borrow).
#[derive(Debug, Default)]
pub(crate) struct Collection {
    past_deadline: bool,
}

impl Collection {
    /// Waits for the next event, applying refusals to the round meanwhile, until the round is
    /// ready, cannot become ready, `shutdown` fires or `events` closes. Before the deadline it
    /// wakes on inputs only; at the deadline once (the round may close then with a quorum);
    /// after it, on inputs again.
    pub(crate) async fn next<E>(
        &mut self,
        state: &mut RoundState,
        events: &mut mpsc::Receiver<E>,
        declines: &mut mpsc::Receiver<Declined>,
        shutdown: &CancellationToken,
    ) -> Step<E> {
        loop {
            if state.ready(Instant::now()) {
                return Step::End(Collected::Ready);
            }
            if state.unreachable() {
                return Step::End(Collected::Unreachable);
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Step::End(Collected::Shutdown),
                ev = events.recv() => return match ev {
                    Some(ev) => Step::Event(ev),
                    None => Step::End(Collected::Closed),
                },
                Some(d) = declines.recv() => state.decline(d.peer, d.round, d.reason),
                _ = tokio::time::sleep_until(state.deadline()), if !self.past_deadline => self.past_deadline = true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use learning::consensus::ConsensusConfig;
    use protocol::Limits;

    use super::*;
    use crate::round::tests::{ann, sub};

    const ROUND: Round = 3;
    const DEADLINE: Duration = Duration::from_secs(30);

    fn peer(i: u8) -> ParticipantId {
        ParticipantId([i; 32])
    }

    /// A round of 5 with quorum 3, its deadline 30 s from now, and its inputs; events are
    /// submissions from a peer, sent by the test at times of its choosing.
    struct Setup {
        state: RoundState,
        start: Instant,
        events: (mpsc::Sender<ParticipantId>, mpsc::Receiver<ParticipantId>),
        declines: (mpsc::Sender<Declined>, mpsc::Receiver<Declined>),
        shutdown: CancellationToken,
    }

    fn setup() -> Setup {
        let start = Instant::now();
        let roster = (0..5).map(peer).collect();
        let state = RoundState::new(ann(ROUND), roster, 3, start + DEADLINE, ConsensusConfig::default());
        Setup { state, start, events: mpsc::channel(8), declines: mpsc::channel(8), shutdown: CancellationToken::new() }
    }

    impl Setup {
        /// Runs `collect` to its end; returns how it ended and the (virtual) time it took.
        async fn collect(&mut self) -> (Collected, Duration) {
            let mut collection = Collection::default();
            let run = async {
                loop {
                    match collection
                        .next(&mut self.state, &mut self.events.1, &mut self.declines.1, &self.shutdown)
                        .await
                    {
                        Step::Event(p) => {
                            self.state.submit(p, &sub(ROUND, 0.7), &Limits::default()).expect("a valid submission")
                        }
                        Step::End(outcome) => return outcome,
                    }
                }
            };
            // A collection that never ends fails the test (the paused clock jumps to this limit).
            let outcome =
                tokio::time::timeout(Duration::from_secs(3600), run).await.expect("collection ended within an hour");
            (outcome, self.start.elapsed())
        }

        /// Sends a submission from each of `peers` after `delay`, from a task of its own.
        fn submit_later(&self, delay: Duration, peers: impl IntoIterator<Item = u8>) {
            let tx = self.events.0.clone();
            let peers: Vec<u8> = peers.into_iter().collect();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                for p in peers {
                    tx.send(peer(p)).await.unwrap();
                }
            });
        }
    }

    #[tokio::test(start_paused = true)]
    async fn closes_as_soon_as_everyone_answered() {
        let mut s = setup();
        s.submit_later(Duration::from_secs(2), 0..5);
        assert_eq!(s.collect().await, (Collected::Ready, Duration::from_secs(2)));
        assert_eq!(s.state.participants().len(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn with_a_quorum_waits_for_the_deadline_and_not_longer() {
        let mut s = setup();
        s.submit_later(Duration::from_secs(1), 0..3);
        s.submit_later(DEADLINE + Duration::from_secs(5), [3]);
        let (outcome, took) = s.collect().await;
        assert_eq!((outcome, took), (Collected::Ready, DEADLINE));
        assert_eq!(s.state.participants().len(), 3, "the late node is not waited for");
    }

    #[tokio::test(start_paused = true)]
    async fn below_the_quorum_keeps_collecting_past_the_deadline() {
        let mut s = setup();
        s.submit_later(Duration::from_secs(1), 0..2);
        s.submit_later(DEADLINE + Duration::from_secs(7), [4]);
        assert_eq!(s.collect().await, (Collected::Ready, DEADLINE + Duration::from_secs(7)));
    }

    #[tokio::test(start_paused = true)]
    async fn nodes_that_declined_are_not_waited_for() {
        let mut s = setup();
        s.submit_later(Duration::from_secs(1), 0..3);
        for p in [3, 4] {
            s.declines
                .0
                .send(Declined { peer: peer(p), round: ROUND, reason: RefusalReason::BudgetSpent })
                .await
                .unwrap();
        }
        assert_eq!(s.collect().await, (Collected::Ready, Duration::from_secs(1)));
        assert_eq!(s.state.declined(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn transient_or_stale_refusals_do_not_count_as_declining() {
        let mut s = setup();
        s.submit_later(Duration::from_secs(1), 0..3);
        let stale = [
            Declined { peer: peer(3), round: ROUND - 1, reason: RefusalReason::BudgetSpent },
            Declined { peer: peer(4), round: ROUND, reason: RefusalReason::Unavailable },
            Declined { peer: peer(9), round: ROUND, reason: RefusalReason::Policy },
        ];
        for d in stale {
            s.declines.0.send(d).await.unwrap();
        }
        assert_eq!(s.collect().await, (Collected::Ready, DEADLINE));
        assert_eq!(s.state.declined(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_quorum_out_of_reach_ends_collection_at_once() {
        let mut s = setup();
        s.submit_later(Duration::from_secs(1), 0..2);
        for p in 2..5 {
            s.declines.0.send(Declined { peer: peer(p), round: ROUND, reason: RefusalReason::Policy }).await.unwrap();
        }
        assert_eq!(s.collect().await, (Collected::Unreachable, Duration::from_secs(1)));
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_and_a_closed_network_end_collection() {
        let mut s = setup();
        let cancel = s.shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(4)).await;
            cancel.cancel();
        });
        assert_eq!(s.collect().await, (Collected::Shutdown, Duration::from_secs(4)));

        let mut s = setup();
        let (closed, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut s.events.0, closed));
        assert_eq!(s.collect().await, (Collected::Closed, Duration::ZERO));
    }
}
