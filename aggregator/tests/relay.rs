//! `fd-aggregator relay` on 127.0.0.1 between real peers (issue #26 item 1): the relay speaks no
//! request-response protocol (a member's request to it fails as unsupported, where it used to be
//! read, verified and answered), only the aggregator may reserve a slot on it (a member that
//! tries to be reachable through it is refused), and the aggregator reached through it can be
//! dialled by a member.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::time::Duration;

use net::multiaddr::{Multiaddr, Protocol};
use net::{Error, NetConfig, RequestFailure};
use protocol::*;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);

fn identity(seed: u8) -> Identity {
    Identity::from_seed([seed; 32]).unwrap()
}

fn fed() -> FederationId {
    FederationId::new("relay-test").unwrap()
}

/// A peer of the federation that reaches (or is reached) through the relays named in `through`.
fn peer(seed: u8, allowed: Vec<ParticipantId>, through: &Multiaddr, shutdown: &CancellationToken) -> net::Client {
    let mut cfg = NetConfig::new(fed(), allowed);
    cfg.through_relays(std::slice::from_ref(through));
    let (client, events, _handle) = net::spawn(identity(seed), cfg, shutdown).unwrap();
    // The network stops when its events are dropped: keep them with the test's runtime.
    tokio::spawn(async move {
        let mut events = events;
        while events.recv().await.is_some() {}
    });
    client
}

#[tokio::test]
async fn the_relay_answers_no_request_and_only_the_aggregator_reserves() {
    let shutdown = CancellationToken::new();
    let (relay_id, aggregator, member) = (identity(1).id(), identity(2), identity(3));
    let relay = aggregator::relay::Relay::start(
        identity(1),
        &["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        vec![member.id()],
        vec![aggregator.id()],
        &shutdown,
    )
    .await
    .unwrap();
    let relay_addr = relay.listen_addrs()[0].clone();
    let relay_peer = net::peer_id(&relay_id);
    let relay_addr = if relay_addr.iter().any(|p| matches!(p, Protocol::P2p(_))) {
        relay_addr
    } else {
        relay_addr.with(Protocol::P2p(relay_peer))
    };
    tokio::spawn(relay.run());
    let circuit = relay_addr.clone().with(Protocol::P2pCircuit);

    // The aggregator reserves a slot and is reachable through the relay.
    let agg = peer(2, vec![member.id()], &circuit, &shutdown);
    tokio::time::timeout(WAIT, agg.listen(circuit.clone())).await.expect("in time").expect("the aggregator reserves");

    // A member: its request to the relay fails as an unsupported protocol, unread.
    let m = peer(3, vec![aggregator.id()], &circuit, &shutdown);
    m.dial(relay_addr.clone()).await.unwrap();
    let hello = Message::Hello(Hello {
        federation: fed(),
        participant: member.id(),
        protocol_version: PROTOCOL_VERSION,
        agent: "test".into(),
    });
    match tokio::time::timeout(WAIT, m.request(&relay_id, &hello)).await.expect("in time") {
        Err(Error::Request { failure: RequestFailure::UnsupportedProtocol, .. }) => {}
        other => panic!("a request to the relay was not refused as an unsupported protocol: {other:?}"),
    }
    // …it cannot be reached through the relay: its reservation is refused…
    let listened = tokio::time::timeout(WAIT, m.listen(circuit.clone())).await.expect("in time");
    assert!(listened.is_err(), "a member reserved a slot on the relay: {listened:?}");
    // …and it reaches the aggregator through the relay.
    let through = circuit.clone().with(Protocol::P2p(net::peer_id(&aggregator.id())));
    let reached = tokio::time::timeout(WAIT, m.dial(through)).await.expect("in time").unwrap();
    assert_eq!(reached, aggregator.id());
    shutdown.cancel();
}
