//! Submitting soft labels until the aggregator acknowledges them or the round's deadline passes.
//!
//! A submission whose request failed (a timeout, a lost connection, a stream the aggregator
//! closed while busy) or that was refused as `Unavailable` (a rate limit, a full queue) is sent
//! again, with a growing pause, redialling if the connection is gone, until the announced
//! deadline. A `Duplicate` refusal after a failed attempt means that attempt did arrive: it is
//! reported as accepted. Any other answer is final.

use std::future::Future;
use std::time::Duration;

use net::multiaddr::Multiaddr;
use protocol::{Message, ParticipantId, Receipt, ReceiptStatus, RefusalReason};
use tokio::time::Instant;

/// First pause between attempts; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(250);
/// Longest pause between attempts.
const MAX_PAUSE: Duration = Duration::from_secs(4);

/// Sends `submission` to the aggregator until it is acknowledged or `deadline_unix_ms` passes.
pub(crate) async fn until_acknowledged(
    client: net::Client,
    aggregator: ParticipantId,
    addr: Multiaddr,
    submission: Message,
    deadline_unix_ms: u64,
) -> Result<Message, net::Error> {
    let left = Duration::from_millis(deadline_unix_ms.saturating_sub(net::clock::now_ms()));
    let (client, aggregator, addr, submission) = (&client, &aggregator, &addr, &submission);
    retry_until(Instant::now() + left, |attempt| async move {
        if attempt > 0
            && !client.connected().await?.contains(aggregator)
            && let Err(e) = client.dial(addr.clone()).await
        {
            tracing::debug!(error = %net::error::Chain(&e), "redial before resubmitting failed");
        }
        client.request(aggregator, submission).await
    })
    .await
}

/// Calls `attempt(0)`, `attempt(1)`, … while its answer is not an acknowledgement (see the
/// module docs) and the next attempt would start before `deadline`; returns the last answer.
pub(crate) async fn retry_until<F, Fut>(deadline: Instant, mut attempt: F) -> Result<Message, net::Error>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<Message, net::Error>>,
{
    let mut pause = FIRST_PAUSE;
    let mut n = 0;
    loop {
        let answer = attempt(n).await;
        let again = match &answer {
            Err(_) => true,
            Ok(Message::Receipt(Receipt { status: ReceiptStatus::Refused(RefusalReason::Unavailable), .. })) => true,
            Ok(Message::Receipt(r @ Receipt { status: ReceiptStatus::Refused(RefusalReason::Duplicate), .. }))
                if n > 0 =>
            {
                return Ok(Message::Receipt(Receipt {
                    status: ReceiptStatus::Accepted,
                    detail: "accepted by an earlier attempt".into(),
                    ..r.clone()
                }));
            }
            Ok(_) => false,
        };
        if !again || Instant::now() + pause > deadline {
            return answer;
        }
        match &answer {
            Err(e) => {
                tracing::warn!(attempt = n, error = %net::error::Chain(e), retry_in_ms = pause.as_millis() as u64, "submission not acknowledged; sending it again")
            }
            Ok(_) => tracing::warn!(
                attempt = n,
                retry_in_ms = pause.as_millis() as u64,
                "aggregator busy; sending the submission again"
            ),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_PAUSE);
        n += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::FederationId;
    use std::cell::Cell;

    fn receipt(status: ReceiptStatus) -> Message {
        Message::Receipt(Receipt {
            federation: FederationId::new("f").expect("valid"),
            round: 1,
            status,
            detail: String::new(),
        })
    }

    fn failure() -> net::Error {
        net::Error::Request { peer: "agg".into(), failure: net::RequestFailure::ConnectionClosed }
    }

    fn status(m: Result<Message, net::Error>) -> Option<ReceiptStatus> {
        match m {
            Ok(Message::Receipt(r)) => Some(r.status),
            _ => None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn unacknowledged_submissions_are_sent_again_until_accepted() {
        let calls = Cell::new(0);
        let deadline = Instant::now() + Duration::from_secs(30);
        let answer = retry_until(deadline, |n| {
            calls.set(calls.get() + 1);
            async move {
                match n {
                    0 => Err(failure()),
                    1 => Ok(receipt(ReceiptStatus::Refused(RefusalReason::Unavailable))),
                    _ => Ok(receipt(ReceiptStatus::Accepted)),
                }
            }
        })
        .await;
        assert_eq!(status(answer), Some(ReceiptStatus::Accepted));
        assert_eq!(calls.get(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_duplicate_after_a_lost_answer_counts_as_accepted_and_other_refusals_are_final() {
        let deadline = Instant::now() + Duration::from_secs(30);
        let answer = retry_until(deadline, |n| async move {
            if n == 0 { Err(failure()) } else { Ok(receipt(ReceiptStatus::Refused(RefusalReason::Duplicate))) }
        })
        .await;
        assert_eq!(status(answer), Some(ReceiptStatus::Accepted));
        let calls = Cell::new(0);
        let answer = retry_until(deadline, |_| {
            calls.set(calls.get() + 1);
            async { Ok(receipt(ReceiptStatus::Refused(RefusalReason::WrongShape))) }
        })
        .await;
        assert_eq!(status(answer), Some(ReceiptStatus::Refused(RefusalReason::WrongShape)));
        assert_eq!(calls.get(), 1, "a refusal for cause is not retried");
        let first =
            retry_until(deadline, |_| async { Ok(receipt(ReceiptStatus::Refused(RefusalReason::Duplicate))) }).await;
        assert_eq!(
            status(first),
            Some(ReceiptStatus::Refused(RefusalReason::Duplicate)),
            "a duplicate on the first attempt is a real one"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_at_the_deadline() {
        let start = Instant::now();
        let deadline = start + Duration::from_secs(10);
        let calls = Cell::new(0);
        let answer = retry_until(deadline, |_| {
            calls.set(calls.get() + 1);
            async { Err(failure()) }
        })
        .await;
        assert!(answer.is_err());
        assert!(Instant::now() <= deadline, "no attempt starts after the deadline");
        // Pauses of 0.25, 0.5, 1, 2, 4 s fit in 10 s (7.75 s), the next 4 s does not.
        assert_eq!(calls.get(), 6);
        let late = retry_until(start, |_| async { Err(failure()) }).await;
        assert!(late.is_err(), "past the deadline: one attempt, no retry");
    }
}
