//! [`Event`]: what the event loop reports to its owner.

use protocol::{Message, ParticipantId, RefusalReason};

use crate::client::Responder;

/// What the event loop reports to its owner.
// `Request` is the common event and the large one: boxing it would allocate once more per request.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// Last connection to a peer is gone.
    Disconnected(ParticipantId),
    /// A verified request; answer it with [`Responder::respond`].
    Request {
        /// Authenticated sender.
        peer: ParticipantId,
        /// The message.
        message: Message,
        /// Where the answer goes.
        responder: Responder,
    },
    /// An inbound message was refused (already answered with a receipt carrying `reason`).
    Refused {
        /// Sender.
        peer: ParticipantId,
        /// Reason code sent back.
        reason: RefusalReason,
        /// Detail for the log.
        detail: String,
    },
}
