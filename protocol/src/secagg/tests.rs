//! End-to-end tests of a round: every member's [`Client`] and the [`Server`], each message
//! encoded and decoded through [`crate::codec`] at the round's cap, members dropping at each step.

use std::collections::BTreeSet;

use proptest::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::message::{masking_digest, survivors_digest};
use super::*;
use crate::codec;
use crate::ids::{FederationId, Identity, ParticipantId};

fn federation() -> FederationId {
    FederationId::new("hospitals").unwrap()
}

/// `n` identities, sorted as the cohort is.
fn identities(n: usize) -> Vec<Identity> {
    let mut ids: Vec<Identity> = (0..n)
        .map(|i| {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
            Identity::from_seed(seed).unwrap()
        })
        .collect();
    ids.sort_by_key(|i| i.id());
    ids
}

fn setup_for(ids: &[Identity], round: u64, threshold: usize, degree: Option<usize>, bits: u32, words: usize) -> Setup {
    let cohort = ids.iter().map(Identity::id).collect();
    Setup::new(federation(), round, [round as u8; 32], cohort, Params { threshold, degree, bits }, 42 + round, words)
        .unwrap()
}

/// When a member stops answering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dropout {
    Never,
    /// Before advertising keys.
    BeforeKeys,
    /// After its keys, before its shares.
    BeforeShares,
    /// After its shares, before its masked vector.
    BeforeMasked,
    /// After its masked vector, before signing and unmasking.
    BeforeUnmask,
}

/// Bytes each member sent and received.
#[derive(Clone, Debug, Default)]
struct Traffic {
    up: Vec<usize>,
    down: Vec<usize>,
}

/// Sends `message` through the codec, counting its bytes.
fn wire<T: Serialize + DeserializeOwned>(message: &T, setup: &Setup, count: &mut usize) -> T {
    let bytes = codec::to_bytes(message).unwrap();
    *count += bytes.len();
    codec::from_bytes(&bytes, setup.message_cap()).unwrap()
}

/// Pseudo-random words below 2ᵇ.
fn vectors(n: usize, words: usize, bits: u32, seed: u64) -> Vec<Vec<u32>> {
    let mut state = seed | 1;
    let mask = u32::MAX >> (32 - bits);
    (0..n)
        .map(|_| {
            (0..words)
                .map(|_| {
                    state = crate::seed::mix(state);
                    state as u32 & mask
                })
                .collect()
        })
        .collect()
}

struct Round {
    result: Result<Aggregate>,
    /// Members whose masked vector reached the server.
    masked: BTreeSet<Member>,
    traffic: Traffic,
}

/// Runs a round with honest members and server; a member that drops stops answering.
fn run(setup: &Setup, ids: &[Identity], inputs: &[Vec<u32>], drops: &[Dropout]) -> Round {
    let n = ids.len();
    let mut traffic = Traffic { up: vec![0; n], down: vec![0; n] };
    let mut masked = BTreeSet::new();
    let result = (|| {
        let mut server = Server::new(setup.clone());
        let mut clients: Vec<Option<Client>> = (0..n).map(|_| None).collect();
        for i in (0..n).filter(|&i| drops[i] != Dropout::BeforeKeys) {
            let (client, ad) = Client::start(setup.clone(), &ids[i]).unwrap();
            assert_eq!(usize::from(client.member()), i);
            server.receive_keys(&ids[i].id(), wire(&ad, setup, &mut traffic.up[i])).unwrap();
            clients[i] = Some(client);
        }
        for (id, keys) in server.close_keys()? {
            let i = usize::from(setup.member(&id).unwrap());
            let keys = wire(&keys, setup, &mut traffic.down[i]);
            if drops[i] != Dropout::BeforeShares {
                let bundle = clients[i].as_mut().unwrap().share(&keys).unwrap();
                server.receive_shares(&id, wire(&bundle, setup, &mut traffic.up[i])).unwrap();
            }
        }
        for (id, delivery) in server.close_shares()? {
            let i = usize::from(setup.member(&id).unwrap());
            let delivery = wire(&delivery, setup, &mut traffic.down[i]);
            if drops[i] != Dropout::BeforeMasked {
                let y = clients[i].as_mut().unwrap().mask(&delivery, &inputs[i], &ids[i]).unwrap();
                server.receive_masked(&id, wire(&y, setup, &mut traffic.up[i])).unwrap();
                masked.insert(i as Member);
            }
        }
        let list = server.close_masked()?;
        let answering: Vec<usize> =
            masked.iter().map(|&m| usize::from(m)).filter(|&i| drops[i] != Dropout::BeforeUnmask).collect();
        for &i in &answering {
            let list = wire(&list, setup, &mut traffic.down[i]);
            let signature = clients[i].as_mut().unwrap().sign_survivors(&list, &ids[i]).unwrap();
            server.receive_signature(&ids[i].id(), wire(&signature, setup, &mut traffic.up[i])).unwrap();
        }
        let request = server.close_signatures()?;
        for &i in &answering {
            let request = wire(&server.request_for(&request, &ids[i].id()), setup, &mut traffic.down[i]);
            let response = clients[i].as_mut().unwrap().unmask(&request).unwrap();
            server.receive_unmask(&ids[i].id(), wire(&response, setup, &mut traffic.up[i])).unwrap();
        }
        assert_eq!(server.ready(), server.finish().is_ok());
        server.finish()
    })();
    Round { result, masked, traffic }
}

/// Members of `set` with at least T neighbours in it, until none is left without.
fn prune(setup: &Setup, mut set: BTreeSet<Member>) -> BTreeSet<Member> {
    loop {
        let weak: Vec<Member> = set
            .iter()
            .copied()
            .filter(|&m| setup.neighbours(m).iter().filter(|v| set.contains(v)).count() < setup.threshold())
            .collect();
        if weak.is_empty() {
            return set;
        }
        weak.iter().for_each(|m| {
            set.remove(m);
        });
    }
}

/// Whether the round must succeed, from the protocol's rules: who is left at each step, then T
/// survivors and T signers, and T answering holders for every secret the server must rebuild.
fn should_succeed(setup: &Setup, drops: &[Dropout]) -> bool {
    let t = setup.threshold();
    let left = |set: &BTreeSet<Member>, drop: Dropout| -> BTreeSet<Member> {
        set.iter().copied().filter(|&m| drops[usize::from(m)] != drop).collect()
    };
    let all: BTreeSet<Member> = (0..drops.len() as Member).collect();
    let u1 = prune(setup, left(&all, Dropout::BeforeKeys));
    let u2 = prune(setup, left(&u1, Dropout::BeforeShares));
    let u3 = left(&u2, Dropout::BeforeMasked);
    let u4 = left(&u3, Dropout::BeforeUnmask);
    let holders = |u: Member, set: &BTreeSet<Member>| setup.neighbours(u).iter().filter(|v| set.contains(v)).count();
    !u1.is_empty()
        && !u2.is_empty()
        && u3.len() >= t
        && u4.len() >= t
        && u2.iter().all(|&u| (!u3.contains(&u) && holders(u, &u3) == 0) || holders(u, &u4) >= t)
}

fn plain_sum(inputs: &[Vec<u32>], members: &BTreeSet<Member>, bits: u32) -> Vec<u32> {
    let mut sum = vec![0u32; inputs[0].len()];
    for &m in members {
        sum.iter_mut().zip(&inputs[usize::from(m)]).for_each(|(a, x)| *a = a.wrapping_add(*x));
    }
    sum.iter_mut().for_each(|a| *a &= u32::MAX >> (32 - bits));
    sum
}

fn cohorts() -> impl Strategy<Value = (usize, usize, Option<usize>, u32, usize, Vec<Dropout>, u64)> {
    (3usize..=30).prop_flat_map(|n| (Just(n), 2..n)).prop_flat_map(|(n, t)| {
        let drop = prop_oneof![
            24 => Just(Dropout::Never),
            1 => Just(Dropout::BeforeKeys),
            1 => Just(Dropout::BeforeShares),
            1 => Just(Dropout::BeforeMasked),
            1 => Just(Dropout::BeforeUnmask),
        ];
        (
            Just(n),
            Just(t),
            proptest::option::of(t..n),
            proptest::sample::select(WORD_BITS.to_vec()),
            1usize..40,
            proptest::collection::vec(drop, n),
            any::<u64>(),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// The unmasked sum is the survivors' plain sum modulo 2ᵇ, bit for bit, whenever the rules
    /// say enough members are left; otherwise the server refuses with a typed reason.
    #[test]
    fn the_unmasked_sum_is_the_survivors_plain_sum_bit_for_bit((n, t, k, bits, words, drops, seed) in cohorts()) {
        let ids = identities(n);
        let setup = setup_for(&ids, 7, t, k, bits, words);
        let inputs = vectors(n, words, bits, seed);
        let round = run(&setup, &ids, &inputs, &drops);
        let expected = should_succeed(&setup, &drops);
        match round.result {
            Ok(aggregate) => {
                prop_assert!(expected, "the round succeeded where the rules say it cannot");
                let survivors: Vec<ParticipantId> = round.masked.iter().map(|&m| *setup.id(m)).collect();
                prop_assert_eq!(&aggregate.survivors, &survivors);
                prop_assert_eq!(aggregate.sum, plain_sum(&inputs, &round.masked, bits));
            }
            Err(e) => {
                prop_assert!(!expected, "the round failed where the rules say it succeeds: {e}");
                prop_assert!(matches!(
                    e,
                    Error::TooFewSurvivors { .. } | Error::TooFewSignatures { .. } | Error::Unrecoverable { .. }
                ), "{e}");
            }
        }
    }
}

#[test]
fn every_stage_of_dropout_in_one_round_still_gives_the_exact_sum() {
    // 20 members, the default sparse graph (k = 10), T = 4; two members drop at each step.
    let ids = identities(20);
    let setup = setup_for(&ids, 1, 4, None, 32, 300);
    assert_eq!(setup.degree(), 10);
    let mut drops = vec![Dropout::Never; 20];
    for (i, d) in
        [Dropout::BeforeKeys, Dropout::BeforeShares, Dropout::BeforeMasked, Dropout::BeforeUnmask].iter().enumerate()
    {
        drops[i * 5] = *d;
        drops[i * 5 + 2] = *d;
    }
    let inputs = vectors(20, 300, 32, 9);
    let round = run(&setup, &ids, &inputs, &drops);
    let aggregate = round.result.unwrap();
    // Survivors: everyone but the six that dropped before their masked vector.
    assert_eq!(round.masked.len(), 14);
    assert_eq!(aggregate.sum, plain_sum(&inputs, &round.masked, 32));
}

#[test]
fn below_the_threshold_the_server_gets_nothing_and_says_why() {
    let ids = identities(6);
    let setup = setup_for(&ids, 1, 4, None, 32, 10);
    let inputs = vectors(6, 10, 32, 1);
    let with = |pattern: &[(usize, Dropout)]| {
        let mut drops = vec![Dropout::Never; 6];
        pattern.iter().for_each(|&(i, d)| drops[i] = d);
        run(&setup, &ids, &inputs, &drops).result
    };
    // Three of six advertise: each has two neighbours left, fewer than T = 4.
    assert_eq!(
        with(&[(0, Dropout::BeforeKeys), (1, Dropout::BeforeKeys), (2, Dropout::BeforeKeys)]),
        Err(Error::TooFewSurvivors { stage: Stage::Keys, have: 3, need: 5 })
    );
    assert_eq!(
        with(&[(0, Dropout::BeforeShares), (1, Dropout::BeforeShares)]),
        Err(Error::TooFewSurvivors { stage: Stage::Shares, have: 4, need: 5 })
    );
    // Three vectors of six: each survivor has two surviving neighbours to hold its shares.
    assert!(matches!(
        with(&[(0, Dropout::BeforeMasked), (1, Dropout::BeforeMasked), (2, Dropout::BeforeMasked)]),
        Err(Error::TooFewSurvivors { stage: Stage::Masked, have: 3, need: 4 })
    ));
    assert!(matches!(
        with(&[(0, Dropout::BeforeMasked), (1, Dropout::BeforeMasked)]),
        Err(Error::Unrecoverable { have: 3, need: 4, .. })
    ));
    // Five vectors, but three answer: too few signatures of the list.
    assert_eq!(
        with(&[(0, Dropout::BeforeMasked), (1, Dropout::BeforeUnmask), (2, Dropout::BeforeUnmask)]),
        Err(Error::TooFewSignatures { have: 3, need: 4 })
    );
    // Five vectors, four answer: member 2's self-mask seed has three holders left, not four.
    assert!(matches!(
        with(&[(0, Dropout::BeforeMasked), (1, Dropout::BeforeUnmask)]),
        Err(Error::Unrecoverable { secret: SecretKind::SelfMask, have: 3, need: 4, .. })
    ));
    // One vector missing: still enough.
    let survivors: BTreeSet<Member> = (1..6).collect();
    let aggregate = with(&[(0, Dropout::BeforeMasked)]).unwrap();
    assert_eq!(aggregate.sum, plain_sum(&inputs, &survivors, 32));
}

/// A round of `n` brought to the unmask step (every vector in), with each member's client.
fn masked_round(n: usize, threshold: usize) -> (Vec<Identity>, Setup, Vec<Client>, Server) {
    let ids = identities(n);
    let setup = setup_for(&ids, 3, threshold, None, 32, 8);
    masked(ids, setup)
}

/// `setup`'s round, for the members `ids`, brought to the unmask step.
fn masked(ids: Vec<Identity>, setup: Setup) -> (Vec<Identity>, Setup, Vec<Client>, Server) {
    let inputs = vectors(ids.len(), setup.words(), setup.bits(), 5);
    let mut server = Server::new(setup.clone());
    let mut clients = Vec::new();
    for id in &ids {
        let (client, ad) = Client::start(setup.clone(), id).unwrap();
        server.receive_keys(&id.id(), ad).unwrap();
        clients.push(client);
    }
    for (id, keys) in server.close_keys().unwrap() {
        let i = usize::from(setup.member(&id).unwrap());
        server.receive_shares(&id, clients[i].share(&keys).unwrap()).unwrap();
    }
    for (id, delivery) in server.close_shares().unwrap() {
        let i = usize::from(setup.member(&id).unwrap());
        server.receive_masked(&id, clients[i].mask(&delivery, &inputs[i], &ids[i]).unwrap()).unwrap();
    }
    (ids, setup, clients, server)
}

/// An unmask request for `survivors`, signed by the identities `signers` (whatever they signed
/// before: a colluding member signs anything).
fn request(setup: &Setup, ids: &[Identity], survivors: &[Member], signers: &[Member]) -> UnmaskRequest {
    let survivors = MemberSet::new(setup.cohort().len(), survivors.iter().copied());
    let digest = survivors_digest(setup, &survivors);
    let signatures = signers.iter().map(|&m| (m, Signature(ids[usize::from(m)].sign(&digest)))).collect();
    // Each survivor masked with every neighbour (every member shared in `masked_round`).
    let masking = survivors
        .iter()
        .map(|v| {
            let with = MemberSet::new(setup.cohort().len(), setup.neighbours(v).iter().copied());
            let signature = Signature(ids[usize::from(v)].sign(&masking_digest(setup, v, &with)));
            (v, SignedMasking { with, signature })
        })
        .collect();
    UnmaskRequest { federation: setup.federation().clone(), round: setup.round(), survivors, signatures, masking }
}

#[test]
fn an_honest_member_never_reveals_both_shares_of_one_member() {
    let (ids, setup, mut clients, _) = masked_round(6, 3);
    let everyone: Vec<Member> = (0..6).collect();
    let without_1: Vec<Member> = vec![0, 2, 3, 4, 5];
    // Member 0 has not signed a list; two lists, each signed by three others.
    let first = clients[0].unmask(&request(&setup, &ids, &everyone, &[2, 3, 4])).unwrap();
    assert!(first.self_shares.iter().any(|&(m, _)| m == 1) && first.key_shares.is_empty());
    // The list it answered binds it as a signature would: another list is refused, whatever it
    // asks, and so is signing one.
    assert_eq!(clients[0].unmask(&request(&setup, &ids, &without_1, &[2, 3, 4])), Err(Error::ListChanged));
    let other = SurvivorList {
        federation: setup.federation().clone(),
        round: setup.round(),
        survivors: MemberSet::new(6, without_1.iter().copied()),
    };
    assert_eq!(clients[0].sign_survivors(&other, &ids[0]), Err(Error::ListChanged));
    // The same list again is answered the same.
    assert_eq!(clients[0].unmask(&request(&setup, &ids, &everyone, &[3, 4, 5])).unwrap(), first);
    // A member that signed one list signs no other, nor answers another.
    let list = |survivors: &[Member]| SurvivorList {
        federation: setup.federation().clone(),
        round: setup.round(),
        survivors: MemberSet::new(6, survivors.iter().copied()),
    };
    clients[2].sign_survivors(&list(&without_1), &ids[2]).unwrap();
    assert_eq!(clients[2].sign_survivors(&list(&everyone), &ids[2]), Err(Error::ListChanged));
    assert_eq!(clients[2].unmask(&request(&setup, &ids, &everyone, &[3, 4, 5])), Err(Error::ListChanged));
    let answer = clients[2].unmask(&request(&setup, &ids, &without_1, &[3, 4, 5])).unwrap();
    assert!(answer.key_shares.iter().any(|&(m, _)| m == 1));
}

/// A lying server lists member 1 as a survivor with T − 1 members that are not its neighbours,
/// and asks member 1's neighbours, left off the list, for their shares: if they answered, their
/// shares of 1's self-mask seed and their neighbours' wrapping keys would unmask 1's vector
/// alone. A member the list counts as dropped neither signs it nor answers it.
#[test]
fn a_member_left_off_the_list_neither_signs_nor_unmasks() {
    let (ids, setup, mut clients, _) = masked_round(6, 3);
    let list = [1, 4, 5];
    let signed = request(&setup, &ids, &list, &list);
    let survivors = SurvivorList {
        federation: setup.federation().clone(),
        round: setup.round(),
        survivors: signed.survivors.clone(),
    };
    for off in [0u16, 2, 3] {
        let i = usize::from(off);
        assert!(matches!(clients[i].unmask(&signed), Err(Error::Unexpected { .. })), "member {off} answered");
        assert!(matches!(clients[i].sign_survivors(&survivors, &ids[i]), Err(Error::Unexpected { .. })));
    }
    // Members on the list answer it.
    assert!(clients[4].unmask(&signed).is_ok());
}

#[test]
fn an_unmask_request_without_t_valid_signatures_of_survivors_is_refused() {
    let (ids, setup, mut clients, _) = masked_round(6, 3);
    let everyone: Vec<Member> = (0..6).collect();
    let c = &mut clients[0];
    assert_eq!(c.unmask(&request(&setup, &ids, &everyone, &[1, 2])), Err(Error::TooFewSignatures { have: 2, need: 3 }));
    assert!(matches!(c.unmask(&request(&setup, &ids, &everyone, &[1, 2, 2])), Err(Error::Malformed(_))));
    // A signature of a member that is not on the list.
    let some = [0, 1, 2, 3];
    assert!(matches!(c.unmask(&request(&setup, &ids, &some, &[1, 2, 5])), Err(Error::Unexpected { .. })));
    // A forged signature, and one over another list.
    let mut forged = request(&setup, &ids, &everyone, &[1, 2, 3]);
    forged.signatures[2].1.0[0] ^= 1;
    assert_eq!(c.unmask(&forged), Err(Error::BadSignature { signer: *setup.id(3) }));
    let mut other = request(&setup, &ids, &everyone, &[1, 2, 3]);
    other.signatures[0] = request(&setup, &ids, &some, &[1]).signatures[0];
    assert_eq!(c.unmask(&other), Err(Error::BadSignature { signer: *setup.id(1) }));
    // A list shorter than T is refused before its signatures are read.
    assert!(matches!(c.unmask(&request(&setup, &ids, &[0, 1], &[0, 1])), Err(Error::TooFewSurvivors { .. })));
    // Nothing was revealed by the refusals: a valid request is still answered in full.
    let answer = c.unmask(&request(&setup, &ids, &everyone, &[1, 2, 3])).unwrap();
    assert_eq!(answer.self_shares.len(), setup.degree());
}

#[test]
fn a_tampered_or_misaddressed_share_is_refused() {
    let ids = identities(5);
    let setup = setup_for(&ids, 2, 2, None, 32, 4);
    let mut server = Server::new(setup.clone());
    let mut clients = Vec::new();
    for id in &ids {
        let (client, ad) = Client::start(setup.clone(), id).unwrap();
        server.receive_keys(&id.id(), ad).unwrap();
        clients.push(client);
    }
    for (id, keys) in server.close_keys().unwrap() {
        let i = usize::from(setup.member(&id).unwrap());
        server.receive_shares(&id, clients[i].share(&keys).unwrap()).unwrap();
    }
    let deliveries = server.close_shares().unwrap();
    let (_, delivery) = &deliveries[0];
    let mut tampered = delivery.clone();
    tampered.shares[1].ciphertext[5] ^= 0x40;
    let from = *setup.id(tampered.shares[1].from);
    assert_eq!(clients[0].mask(&tampered, &[0; 4], &ids[0]), Err(Error::Decrypt { from }));
    // Member 1's share for member 0, replayed as if it were member 2's.
    let mut swapped = delivery.clone();
    let (a, b) = (swapped.shares[0].from, swapped.shares[1].from);
    swapped.shares[0].from = b;
    swapped.shares[1].from = a;
    assert!(matches!(clients[0].mask(&swapped, &[0; 4], &ids[0]), Err(Error::Decrypt { .. })));
    // A share for another member.
    assert!(matches!(clients[1].mask(delivery, &[0; 4], &ids[1]), Err(Error::Unexpected { .. })));
    // The untouched delivery still works: refusals changed nothing.
    assert!(clients[0].mask(delivery, &[0; 4], &ids[0]).is_ok());
}

#[test]
fn a_key_advertisement_signed_for_another_round_or_federation_is_refused() {
    let ids = identities(4);
    let here = setup_for(&ids, 5, 2, None, 32, 4);
    let other_round = setup_for(&ids, 6, 2, None, 32, 4);
    let cohort = ids.iter().map(Identity::id).collect();
    let params = Params { threshold: 2, degree: None, bits: 32 };
    let other_fed = Setup::new(FederationId::new("elsewhere").unwrap(), 5, [5; 32], cohort, params, 47, 4).unwrap();
    let (mut client, _) = Client::start(here.clone(), &ids[0]).unwrap();
    let mut server = Server::new(here.clone());
    for wrong in [&other_round, &other_fed] {
        // Member 1's keys made and signed for another round (or federation)…
        let (_, mut ad) = Client::start(wrong.clone(), &ids[1]).unwrap();
        // …as they are: refused for their binding.
        assert!(matches!(server.receive_keys(&ids[1].id(), ad.clone()), Err(Error::Binding { .. })));
        // …relabelled for this round: refused for their signature, by the server and by the member.
        ad.federation = here.federation().clone();
        ad.round = here.round();
        let signer = ids[1].id();
        assert_eq!(server.receive_keys(&signer, ad.clone()), Err(Error::BadSignature { signer }));
        ad.keys.retain(|k| k.to == 0);
        assert_eq!(client.share(&ad), Err(Error::BadSignature { signer }));
    }
    // Keys delivered by another peer than their signer are refused by the server, and so are
    // keys for some neighbours only.
    let (_, mut ad) = Client::start(here.clone(), &ids[1]).unwrap();
    assert!(matches!(server.receive_keys(&ids[2].id(), ad.clone()), Err(Error::Malformed(_))));
    ad.keys.pop();
    assert!(matches!(server.receive_keys(&ids[1].id(), ad), Err(Error::Malformed(_))));
}

/// The aggregator restarted and announced round 3 again: a new session of the same round, with
/// fresh keys. Nothing signed in the old session (survivor lists, masking sets, pair keys) counts
/// in the new one, so a server cannot mix the two sessions' signatures to ask an honest member
/// for shares it would not give in either.
#[test]
fn signatures_from_another_session_of_the_same_round_are_refused() {
    let (ids, old, _, _) = masked_round(6, 3);
    let cohort = ids.iter().map(Identity::id).collect();
    let params = Params { threshold: 3, degree: None, bits: 32 };
    let new = Setup::new(federation(), old.round(), [99; 32], cohort, params, 42 + old.round(), 8).unwrap();
    assert_eq!((new.federation(), new.round()), (old.federation(), old.round()));
    let everyone: Vec<Member> = (0..6).collect();
    // Keys signed for the old session: the binding (federation and round) matches, the
    // signature does not.
    let (_, ad) = Client::start(old.clone(), &ids[1]).unwrap();
    let mut server = Server::new(new.clone());
    let signer = ids[1].id();
    assert_eq!(server.receive_keys(&signer, ad.clone()), Err(Error::BadSignature { signer }));
    let (mut client, _) = Client::start(new.clone(), &ids[0]).unwrap();
    let mut to_0 = ad;
    to_0.keys.retain(|k| k.to == 0);
    assert_eq!(client.share(&to_0), Err(Error::BadSignature { signer }));
    // The new session brought to the unmask step; a request whose survivor signatures, or whose
    // masking sets, were signed in the old session is refused, and the same request signed in the
    // new session is answered.
    let (ids, new, mut clients, _) = masked(ids, new);
    let mut stale_list = request(&new, &ids, &everyone, &[1, 2, 3]);
    stale_list.signatures = request(&old, &ids, &everyone, &[1, 2, 3]).signatures;
    assert_eq!(clients[0].unmask(&stale_list), Err(Error::BadSignature { signer: *new.id(1) }));
    let mut stale_masking = request(&new, &ids, &everyone, &[1, 2, 3]);
    stale_masking.masking = request(&old, &ids, &everyone, &[1, 2, 3]).masking;
    assert!(matches!(clients[0].unmask(&stale_masking), Err(Error::BadSignature { .. })));
    assert!(clients[0].unmask(&request(&new, &ids, &everyone, &[1, 2, 3])).is_ok());
}

/// Pearson's chi-square statistic of byte counts against the uniform distribution.
fn chi_square(bytes: &[u8]) -> f64 {
    let mut counts = [0u64; 256];
    bytes.iter().for_each(|&b| counts[usize::from(b)] += 1);
    let expected = bytes.len() as f64 / 256.0;
    counts.iter().map(|&c| (c as f64 - expected).powi(2) / expected).sum()
}

fn correlation(a: &[f64], b: &[f64]) -> f64 {
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (ma, mb) = (mean(a), mean(b));
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let var = |v: &[f64], m: f64| v.iter().map(|x| (x - m).powi(2)).sum::<f64>();
    cov / (var(a, ma) * var(b, mb)).sqrt()
}

#[test]
fn masked_vectors_look_uniform_and_uncorrelated_with_the_true_soft_labels() {
    // Ten members' soft labels, 250 samples of 10 classes at S = 255 (b = 16), skewed towards
    // class 0 so that the plain words are far from uniform.
    let (n, samples, classes) = (10, 250, 10);
    let fp = FixedPoint::COARSE;
    let bits = fp.bits_for(n).unwrap();
    let ids = identities(n);
    let words = FixedPoint::words(samples, classes);
    let setup = setup_for(&ids, 1, 4, None, bits, words);
    let inputs: Vec<Vec<u32>> = (0..n)
        .map(|i| {
            let probs: Vec<f32> = (0..samples * classes)
                .map(|j| if j % classes == (i + j / classes) % 3 { 0.73 } else { 0.03 })
                .collect();
            fp.encode(&probs, classes, &vec![false; samples]).unwrap()
        })
        .collect();
    let mut server = Server::new(setup.clone());
    let mut clients = Vec::new();
    for id in &ids {
        let (client, ad) = Client::start(setup.clone(), id).unwrap();
        server.receive_keys(&id.id(), ad).unwrap();
        clients.push(client);
    }
    for (id, keys) in server.close_keys().unwrap() {
        let i = usize::from(setup.member(&id).unwrap());
        server.receive_shares(&id, clients[i].share(&keys).unwrap()).unwrap();
    }
    // What the aggregator receives: every member's masked vector.
    let mut received = Vec::new();
    for (id, delivery) in server.close_shares().unwrap() {
        let i = usize::from(setup.member(&id).unwrap());
        let y = clients[i].mask(&delivery, &inputs[i], &ids[i]).unwrap();
        received.push((i, codec::to_bytes(&y).unwrap(), y.words.clone()));
        server.receive_masked(&id, y).unwrap();
    }
    // 255 degrees of freedom: mean 255, sd 22.6; 400 is 6.4 sd out (p < 1e-9).
    let plain: Vec<u8> = inputs[0].iter().flat_map(|w| (*w as u16).to_le_bytes()).collect();
    assert!(chi_square(&plain) > 10_000.0, "the plain vector is far from uniform");
    for (i, wire, packed) in &received {
        let chi = chi_square(wire);
        assert!(chi < 400.0, "member {i}'s masked message: chi-square {chi:.0}");
        let masked: Vec<f64> = packed.chunks_exact(2).map(|b| f64::from(u16::from_le_bytes([b[0], b[1]]))).collect();
        let truth: Vec<f64> = inputs[*i].iter().map(|&w| f64::from(w)).collect();
        // 2,750 pairs: the sd of r under independence is 1/√2750 ≈ 0.019; 0.1 is 5 sd.
        let r = correlation(&masked, &truth);
        assert!(r.abs() < 0.1, "member {i}: correlation {r:.3} with its true vector");
    }
    // The released consensus is still exact.
    let list = server.close_masked().unwrap();
    for (i, c) in clients.iter_mut().enumerate() {
        server.receive_signature(&ids[i].id(), c.sign_survivors(&list, &ids[i]).unwrap()).unwrap();
    }
    let request = server.close_signatures().unwrap();
    for (i, c) in clients.iter_mut().enumerate() {
        let request = server.request_for(&request, &ids[i].id());
        server.receive_unmask(&ids[i].id(), c.unmask(&request).unwrap()).unwrap();
    }
    let aggregate = server.finish().unwrap();
    assert_eq!(aggregate.sum, plain_sum(&inputs, &(0..n as Member).collect(), bits));
    let tally = fp.tally(&aggregate.sum, classes, n).unwrap();
    assert_eq!(tally.counts(), &vec![n as u32; samples][..]);
}

/// Bytes a member sends and receives in a round, at 10, 50 and 100 members: run with
/// `cargo test --workspace --release bytes_per_member -- --nocapture` to see the table.
#[test]
fn bytes_per_member_per_round_grow_with_log_n() {
    println!("members  k   T  b   words  vector  up/member  down/member  overhead/member  round ms");
    println!("(bytes: mean over members; round ms: every member and the server in one thread, not a benchmark)");
    let mut overheads = Vec::new();
    for (bits, words) in [(32, 250 * 10 * 2), (16, FixedPoint::words(250, 10))] {
        for n in [10, 50, 100] {
            let ids = identities(n);
            let k = default_degree(n);
            let t = k / 2 + 1;
            let setup = setup_for(&ids, 1, t, None, bits, words);
            let inputs = vectors(n, words, bits, 3);
            let started = std::time::Instant::now();
            let round = run(&setup, &ids, &inputs, &vec![Dropout::Never; n]);
            let ms = started.elapsed().as_millis();
            assert!(round.result.is_ok());
            let up = round.traffic.up.iter().sum::<usize>() / n;
            let down = round.traffic.down.iter().sum::<usize>() / n;
            let vector = words * setup.word_bytes();
            let overhead = up + down - vector;
            println!(
                "{n:>7} {:>3} {t:>3} {bits:>2} {words:>6} {vector:>7} {up:>10} {down:>12} {overhead:>16} {ms:>9}",
                setup.degree()
            );
            overheads.push((n, setup.degree(), overhead));
        }
    }
    // Everything but the vector grows with k (here 2⌈log₂ n⌉), not with n: about 590 bytes a
    // neighbour (its key up and down, 101 bytes each; our shares for it, 86, and their copy
    // down; our wrapped seed, 51; our share of its secret at the end, 34; its signed masking set
    // in the unmask request, about 80; and T/k of the list's signatures, 68 bytes each). The
    // masking set's n/8-byte bitmap is the one term that grows with n, by 1 byte in 8 members.
    for (n, k, overhead) in overheads {
        assert!(overhead < 640 * k, "n = {n}, k = {k}: {overhead} bytes of overhead");
    }
}

#[test]
fn the_server_refuses_what_does_not_fit_the_step_and_a_corrupt_share_spoils_nothing_silently() {
    let (ids, setup, mut clients, mut server) = masked_round(6, 3);
    let id = |m: usize| ids[m].id();
    // Every vector is in: a second one, or one of the wrong length, or a call of another step.
    let (_, fresh) = Client::start(setup.clone(), &ids[0]).unwrap();
    assert!(matches!(server.receive_keys(&id(0), fresh), Err(Error::Stage { got: Stage::Keys, .. })));
    let nobody = SignedMasking { with: MemberSet::new(6, []), signature: Signature([0; 64]) };
    let y = MaskedInput {
        federation: setup.federation().clone(),
        round: setup.round(),
        words: vec![0; 32],
        masking: nobody,
    };
    assert!(matches!(server.receive_masked(&id(0), y.clone()), Err(Error::Malformed(_))));
    let short = MaskedInput { words: vec![0; 31], ..y.clone() };
    assert!(matches!(server.receive_masked(&id(0), short), Err(Error::Malformed(_))));
    let stranger = Identity::from_seed([200; 32]).unwrap().id();
    assert!(matches!(server.close_signatures(), Err(Error::Stage { .. })));
    let list = server.close_masked().unwrap();
    assert!(matches!(server.receive_masked(&id(0), y), Err(Error::Stage { .. })));
    for (i, c) in clients.iter_mut().enumerate() {
        let signature = c.sign_survivors(&list, &ids[i]).unwrap();
        assert!(matches!(server.receive_signature(&stranger, signature.clone()), Err(Error::Unexpected { .. })));
        // A signature relayed by another member is refused: it is not theirs.
        if i > 0 {
            assert_eq!(server.receive_signature(&id(0), signature.clone()), Err(Error::BadSignature { signer: id(0) }));
        }
        server.receive_signature(&id(i), signature).unwrap();
    }
    let request = server.close_signatures().unwrap();
    assert_eq!(request.signatures.len(), 3);
    let mut answers: Vec<UnmaskResponse> =
        clients.iter_mut().zip(&ids).map(|(c, i)| c.unmask(&server.request_for(&request, &i.id())).unwrap()).collect();
    // A share of a member that is not the sender's neighbour's, or of the wrong kind, is refused.
    let mut wrong_kind = answers[1].clone();
    wrong_kind.key_shares.push(wrong_kind.self_shares.remove(0));
    assert!(matches!(server.receive_unmask(&id(1), wrong_kind), Err(Error::Malformed(_))));
    let mut outside = answers[1].clone();
    outside.key_shares.push((60_000, [0; 32]));
    assert!(matches!(server.receive_unmask(&id(1), outside), Err(Error::Malformed(_))));
    let mut own = answers[1].clone();
    own.self_shares.push((1, [0; 32]));
    assert!(matches!(server.receive_unmask(&id(1), own), Err(Error::Malformed(_))));
    // Member 1 reveals a wrong share of member 0's seed: the rebuilt seed misses its commitment.
    answers[1].self_shares.iter_mut().filter(|(m, _)| *m == 0).for_each(|(_, s)| s[0] ^= 1);
    for (i, a) in answers.into_iter().enumerate() {
        server.receive_unmask(&id(i), a.clone()).unwrap();
        assert!(matches!(server.receive_unmask(&id(i), a), Err(Error::Malformed(_))));
    }
    assert!(server.ready());
    assert_eq!(server.finish(), Err(Error::Corrupt { member: id(0), secret: SecretKind::SelfMask }));
}

#[test]
fn a_client_takes_each_step_once_and_in_order() {
    let ids = identities(4);
    let setup = setup_for(&ids, 1, 2, None, 16, 3);
    let (mut client, _) = Client::start(setup.clone(), &ids[0]).unwrap();
    let delivery = ShareDelivery { federation: setup.federation().clone(), round: 1, shares: Vec::new() };
    assert_eq!(
        client.mask(&delivery, &[0; 3], &ids[0]),
        Err(Error::Stage { got: Stage::Shares, expected: Stage::Keys })
    );
    let request = request(&setup, &ids, &[0, 1, 2, 3], &[1, 2]);
    assert!(matches!(client.unmask(&request), Err(Error::Stage { got: Stage::Unmask, .. })));
    let others: Vec<KeyAdvertisement> = ids[1..].iter().map(|i| Client::start(setup.clone(), i).unwrap().1).collect();
    let mine = KeyAdvertisement {
        federation: setup.federation().clone(),
        round: 1,
        keys: others.iter().flat_map(|a| a.keys.iter().filter(|k| k.to == 0).cloned()).collect(),
    };
    // One neighbour's key is too few for T = 2; three are enough, once.
    let one = KeyAdvertisement { keys: mine.keys[..1].to_vec(), ..mine.clone() };
    assert_eq!(client.share(&one), Err(Error::TooFewNeighbours { stage: Stage::Keys, have: 1, need: 2 }));
    client.share(&mine).unwrap();
    assert!(matches!(client.share(&mine), Err(Error::Stage { got: Stage::Keys, expected: Stage::Shares })));
    // Words of b bits or more, or a vector of another length, are refused before anything else.
    assert!(matches!(client.mask(&delivery, &[0, 1 << 16, 0], &ids[0]), Err(Error::Input(_))));
    assert!(matches!(client.mask(&delivery, &[0; 4], &ids[0]), Err(Error::Input(_))));
    assert_eq!(
        client.mask(&delivery, &[0; 3], &ids[0]),
        Err(Error::TooFewNeighbours { stage: Stage::Shares, have: 0, need: 2 })
    );
    // Someone else's identity cannot start as a member it is not.
    let outsider = Identity::from_seed([99; 32]).unwrap();
    assert!(matches!(Client::start(setup, &outsider), Err(Error::Unexpected { .. })));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn decoding_arbitrary_bytes_as_any_message_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = codec::from_bytes::<KeyAdvertisement>(&data, 1 << 12);
        let _ = codec::from_bytes::<ShareBundle>(&data, 1 << 12);
        let _ = codec::from_bytes::<ShareDelivery>(&data, 1 << 12);
        let _ = codec::from_bytes::<MaskedInput>(&data, 1 << 12);
        let _ = codec::from_bytes::<SurvivorList>(&data, 1 << 12);
        let _ = codec::from_bytes::<SurvivorSignature>(&data, 1 << 12);
        let _ = codec::from_bytes::<UnmaskRequest>(&data, 1 << 12);
        let _ = codec::from_bytes::<UnmaskResponse>(&data, 1 << 12);
    }
}

#[test]
fn a_signature_of_another_length_does_not_decode() {
    let fed = federation();
    let good = SurvivorSignature { federation: fed, round: 1, signature: Signature([7; 64]) };
    let bytes = codec::to_bytes(&good).unwrap();
    assert_eq!(codec::from_bytes::<SurvivorSignature>(&bytes, 1 << 10).unwrap(), good);
    // The signature is the last field: its length prefix is 64 bytes from the end, less one.
    let mut short = bytes[..bytes.len() - 1].to_vec();
    let at = short.len() - 64;
    short[at] = 63;
    assert!(codec::from_bytes::<SurvivorSignature>(&short, 1 << 10).is_err());
}
