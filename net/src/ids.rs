//! A participant's two names: its protocol [`ParticipantId`] (the Ed25519 key) and its libp2p
//! [`PeerId`] (the same key, as an identity multihash).

use libp2p::PeerId;
use protocol::ParticipantId;

/// The libp2p `PeerId` of a participant.
pub fn peer_id(p: &ParticipantId) -> PeerId {
    PeerId::from_bytes(&p.to_peer_id_bytes()).expect("an inline Ed25519 multihash is a valid PeerId")
}

/// The participant behind a `PeerId`, if it is an Ed25519 key.
pub fn participant(p: &PeerId) -> Option<ParticipantId> {
    ParticipantId::from_peer_id_bytes(&p.to_bytes()).ok()
}
