//! [`Error`]: what can go wrong in the network layer, each kind with its cause as a `source`
//! (never its text), and [`Chain`], which prints an error with its causes for a log line.

use std::fmt;

/// A cause carried as a `source`: a libp2p or I/O error, typed by the library that raised it.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Errors of the network layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Building the transport or swarm failed.
    #[error("transport setup")]
    Setup(#[source] Cause),
    /// Listening failed.
    #[error("cannot listen on {addr}")]
    Listen {
        /// Address.
        addr: String,
        /// Cause.
        #[source]
        source: Cause,
    },
    /// The HTTP endpoint was asked to bind an address other than loopback without the
    /// operator's explicit `http.public = true`.
    #[error(
        "{addr} is not a loopback address, and the HTTP endpoint has no authentication: bind it to 127.0.0.1 or ::1, or set `public = true` in the config's [http] table to serve it there"
    )]
    NotLoopback {
        /// The address asked for.
        addr: String,
    },
    /// Dialling failed.
    #[error("cannot connect to {addr}")]
    Dial {
        /// Address.
        addr: String,
        /// Cause.
        #[source]
        source: Cause,
    },
    /// The peer at the dialled address is not the one its `/p2p/` suffix names.
    #[error(
        "the peer at {addr} is {obtained}, not the PeerId its address names: ask the aggregator's operator for its current address with its PeerId (`aggregator` as `fd-aggregator init` prints it)"
    )]
    WrongPeer {
        /// The address dialled.
        addr: String,
        /// The PeerId the peer proved it has.
        obtained: String,
    },
    /// The peer at the dialled address has a key that is not Ed25519: it cannot be a participant.
    #[error("the peer at {addr} has no Ed25519 key")]
    NotEd25519 {
        /// The address dialled.
        addr: String,
    },
    /// A request got no answer.
    #[error("request to {peer} failed")]
    Request {
        /// Peer.
        peer: String,
        /// Why.
        #[source]
        failure: RequestFailure,
    },
    /// A message could not be sealed or a response could not be verified.
    #[error(transparent)]
    Protocol(#[from] protocol::Error),
    /// The egress ledger could not be written; nothing was sent.
    #[error("egress ledger")]
    Ledger(#[source] std::io::Error),
    /// The event loop has stopped.
    #[error("network event loop has stopped")]
    Stopped,
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestFailure {
    /// The connection closed before a response came: what a dialler sees when the peer refuses
    /// it at the connection level (an aggregator whose roster lacks it).
    #[error("the connection closed before the answer came")]
    ConnectionClosed,
    /// No answer within the request timeout.
    #[error("no answer in time")]
    Timeout,
    /// The peer was not connected and could not be dialled.
    #[error("the peer could not be dialled")]
    Unreachable,
    /// The peer does not speak this protocol.
    #[error("the peer does not speak the federation's protocol")]
    UnsupportedProtocol,
    /// The stream failed.
    #[error("stream failed")]
    Io(#[source] std::io::Error),
}

/// Displays an error and its causes, `: `-separated, for a log field or a message.
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_shows_every_cause_once() {
        let e = Error::Request {
            peer: "agg".into(),
            failure: RequestFailure::Io(std::io::Error::new(std::io::ErrorKind::BrokenPipe, "pipe")),
        };
        assert_eq!(Chain(&e).to_string(), "request to agg failed: stream failed: pipe");
        assert_eq!(e.to_string(), "request to agg failed", "the cause is a source, not in the message");
    }
}
