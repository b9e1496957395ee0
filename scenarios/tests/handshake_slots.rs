//! Slots for handshakes in flight, in network namespaces the test makes (issue #26 item 3): a
//! peer with the network layer's defaults (64 slots, 8 an address) listens on IPv6 in one
//! namespace; another holds 96 silent TCP connections to it from 96 addresses of its own, 40 of
//! them in one /64 and 8 in each of seven more. The /64 holds 8 slots, not 40 (the cap counts an
//! IPv6 address by its /64); strangers hold 48, three quarters of the slots; a roster member that
//! has connected before from its address connects while they do, and one never seen before is
//! refused like any stranger.
//!
//! Long tier (root, `ip netns`): `cargo test --workspace --release --test handshake_slots -- --ignored`.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;
#[allow(dead_code)] // this test uses part of the LAN helpers
#[path = "netns/lan.rs"]
mod lan;

use std::io::{ErrorKind, Read};
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lan::{Lan, ip};
use net::multiaddr::{Multiaddr, Protocol};
use net::{Client, NetConfig};
use protocol::{FederationId, Identity, ParticipantId};
use tokio_util::sync::CancellationToken;

const PORT: u16 = 4001;
const WAIT: Duration = Duration::from_secs(20);
/// The /64 most of the silent connections come from, and how many.
const CROWDED: u16 = 1;
const CROWD: u16 = 40;
/// Seven more /64s, 8 connections each.
const OTHERS: std::ops::RangeInclusive<u16> = 2..=8;

fn addr6(subnet: u16, host: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, subnet, 0, 0, 0, host)
}

/// The target at 2001:db8:0:a::1, the known member at …:b::1, the newcomer at …:c::1.
const TARGET: u16 = 0xa;
const MEMBER: u16 = 0xb;
const NEWCOMER: u16 = 0xc;

fn identity(seed: u8) -> Identity {
    Identity::from_seed([seed; 32]).unwrap()
}

/// Gives `netns`'s `eth0` the address (every one of 2001:db8:0::/48 is on the link).
fn add_address(netns: &str, a: Ipv6Addr) {
    ip(&["-n", netns, "-6", "addr", "add", &format!("{a}/48"), "dev", "eth0", "nodad"]).unwrap();
}

/// Runs `f` on a thread inside network namespace `netns`: every socket it makes is made there.
fn in_netns<T: Send + 'static>(netns: &str, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    let path = format!("/run/netns/{netns}");
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).unwrap();
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
}

/// A peer of the network layer running in `netns` until `stop` fires; its client.
fn peer_in(netns: &str, identity: Identity, cfg: NetConfig, stop: CancellationToken) -> (Client, JoinHandle<()>) {
    let (tx, rx) = std_mpsc::channel();
    let thread = in_netns(netns, move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let (client, mut events, handle) = net::spawn(identity, cfg, &stop).unwrap();
            tx.send(client).unwrap();
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    ev = events.recv() => if ev.is_none() { break },
                }
            }
            handle.shutdown().await;
        })
    });
    (rx.recv_timeout(WAIT).unwrap(), thread)
}

fn fed() -> FederationId {
    FederationId::new("slots").unwrap()
}

/// What the silent connections held once the refused ones had been closed.
struct Held {
    /// Still open, from the crowded /64.
    crowded: usize,
    /// Still open, from each of the others.
    others: Vec<usize>,
}

/// Opens one silent TCP connection to `to` from each of `from` at once, waits until `refused` of
/// them have been closed by the other side, and reports what is still open; keeps them open
/// until `stop` fires.
fn flood(
    netns: &str,
    from: Vec<Ipv6Addr>,
    to: SocketAddr,
    refused: usize,
    held: std_mpsc::Sender<Held>,
    stop: CancellationToken,
) -> JoinHandle<()> {
    in_netns(netns, move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let connect = |a: Ipv6Addr| async move {
            let socket = tokio::net::TcpSocket::new_v6().unwrap();
            socket.bind(SocketAddr::new(a.into(), 0)).unwrap();
            socket.connect(to).await.unwrap().into_std().unwrap()
        };
        let mut streams: Vec<(Ipv6Addr, Option<std::net::TcpStream>)> = rt
            .block_on(libp2p::futures::future::join_all(from.iter().map(|&a| connect(a))))
            .into_iter()
            .zip(from.iter())
            .map(|(s, a)| (*a, Some(s)))
            .collect();
        // Refusals come at once; the held connections close at libp2p's 10-s handshake timeout.
        let start = Instant::now();
        let mut closed = 0;
        while closed < refused {
            assert!(start.elapsed() < Duration::from_secs(8), "only {closed} of the silent connections were refused");
            for (_, s) in &mut streams {
                if let Some(stream) = s {
                    match stream.read(&mut [0; 16]) {
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                        _ => {
                            *s = None;
                            closed += 1;
                        }
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let open = |subnet: u16| streams.iter().filter(|(a, s)| a.segments()[3] == subnet && s.is_some()).count();
        held.send(Held { crowded: open(CROWDED), others: OTHERS.map(open).collect() }).unwrap();
        rt.block_on(stop.cancelled());
    })
}

#[test]
#[ignore = "long tier (network namespaces, root): cargo test --workspace --release -- --ignored"]
fn one_64_holds_one_share_and_strangers_leave_room_for_members_seen_before() {
    let lan = Lan::or_fail("slots", 4);
    let (target_ns, flooder_ns, member_ns, newcomer_ns) =
        (lan.hosts[0].clone(), lan.hosts[1].clone(), lan.hosts[2].clone(), lan.hosts[3].clone());
    add_address(&target_ns, addr6(TARGET, 1));
    add_address(&member_ns, addr6(MEMBER, 1));
    add_address(&newcomer_ns, addr6(NEWCOMER, 1));
    let mut crowd: Vec<Ipv6Addr> = (1..=CROWD).map(|h| addr6(CROWDED, h)).collect();
    crowd.extend(OTHERS.flat_map(|s| (1..=8).map(move |h| addr6(s, h))));
    for a in &crowd {
        add_address(&flooder_ns, *a);
    }

    // The target: the network layer's defaults, the member and the newcomer on its allow-list.
    let (member, newcomer) = (identity(2), identity(3));
    let allowed: Vec<ParticipantId> = vec![member.id(), newcomer.id()];
    let stop = CancellationToken::new();
    let defaults = NetConfig::new(fed(), allowed);
    let (pending, per_ip) = (defaults.max_pending_incoming as usize, defaults.max_pending_incoming_per_ip as usize);
    let (target, target_thread) = peer_in(&target_ns, identity(1), defaults, stop.clone());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let listen: Multiaddr = format!("/ip6/{}/tcp/{PORT}", addr6(TARGET, 1)).parse().unwrap();
    rt.block_on(target.listen(listen.clone())).unwrap();
    let target_addr = listen.with(Protocol::P2p(net::peer_id(&identity(1).id())));
    let dialer = || NetConfig::new(fed(), vec![identity(1).id()]);

    // The member connects once, from its address, and leaves.
    let seen = CancellationToken::new();
    let (m, m_thread) = peer_in(&member_ns, identity(2), dialer(), seen.clone());
    rt.block_on(m.dial(target_addr.clone())).unwrap();
    wait(&rt, "the target to see the member", || target.connected(), |c| c.contains(&member.id()));
    seen.cancel();
    m_thread.join().unwrap();
    wait(&rt, "the member to be gone", || target.connected(), |c| !c.contains(&member.id()));

    // Strangers fill what they may.
    let strangers = pending - pending / 4;
    let (held_tx, held_rx) = std_mpsc::channel();
    let to = SocketAddr::new(addr6(TARGET, 1).into(), PORT);
    let flooder = flood(&flooder_ns, crowd.clone(), to, crowd.len() - strangers, held_tx, stop.clone());
    let held = held_rx.recv_timeout(WAIT).expect("the flood settled");
    assert_eq!(held.crowded, per_ip, "one /64 holds the share of one address");
    assert!(held.others.iter().all(|&n| n <= per_ip), "another /64 over its share: {:?}", held.others);
    assert_eq!(held.crowded + held.others.iter().sum::<usize>(), strangers, "strangers hold three quarters");

    // While they do: a roster member never seen before is refused like them…
    let (n, n_thread) = peer_in(&newcomer_ns, identity(3), dialer(), stop.clone());
    let refused =
        rt.block_on(async { tokio::time::timeout(WAIT, n.dial(target_addr.clone())).await }).expect("in time");
    assert!(refused.is_err(), "a newcomer connected while strangers held their slots");
    // …and the member seen before connects.
    let (m, m_thread) = peer_in(&member_ns, identity(2), dialer(), stop.clone());
    let back = rt.block_on(async { tokio::time::timeout(WAIT, m.dial(target_addr)).await }).expect("in time");
    assert_eq!(back.unwrap(), identity(1).id(), "the member seen before connects while strangers hold their slots");

    stop.cancel();
    for t in [flooder, n_thread, m_thread, target_thread] {
        t.join().unwrap();
    }
    eprintln!(
        "handshake slots: {CROWD} silent connections from one /64 held {}; {} from 96 addresses in all held {strangers} of {pending}; the member seen before connected, the newcomer was refused",
        held.crowded,
        crowd.len()
    );
}

/// Polls `get` on `rt` until `until` holds of what it returns.
fn wait<T, E: std::fmt::Debug, F: std::future::Future<Output = Result<T, E>>>(
    rt: &tokio::runtime::Runtime,
    what: &str,
    mut get: impl FnMut() -> F,
    until: impl Fn(&T) -> bool,
) {
    common::wait_until(what, WAIT, || until(&rt.block_on(get()).unwrap()));
}
