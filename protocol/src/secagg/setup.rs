//! What every party of a round agrees on before it starts: the cohort, the threshold, the
//! neighbourhood graph, the vector's length and word width.

use chacha20::ChaCha20Rng;
use chacha20::rand_core::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::crypto::Binding;
use super::error::{Error, Result};
use super::shamir::MAX_HOLDERS;
use crate::ids::{FederationId, ParticipantId, Round};

/// A member's place in the round's cohort (sorted by [`ParticipantId`]); messages name members
/// by it.
pub type Member = u16;

/// Fewest members a cohort can have: with two, each would learn the other's vector from the sum.
pub const MIN_COHORT: usize = 3;

/// Word widths a masked vector can use, in bits (whole bytes on the wire).
pub const WORD_BITS: [u32; 4] = [8, 16, 24, 32];

/// The parameters a federation sets; the cohort of each round turns them into a [`Setup`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Params {
    /// T: shares needed to rebuild a member's secret, among its neighbours; also the number of
    /// members that must sign the survivor list. At least 2.
    pub threshold: usize,
    /// k: neighbours of each member (`None`: [`default_degree`]). Raised to `threshold` if lower,
    /// to an even number (the graph is a ring with k/2 neighbours on each side), and to the
    /// complete graph (k = n − 1, Bonawitz et al. as published) when that is not smaller.
    pub degree: Option<usize>,
    /// b: each word is summed modulo 2ᵇ (one of [`WORD_BITS`]). See [`super::fixed`] for how to
    /// choose it from the fixed-point scale and the number of members.
    pub bits: u32,
}

impl Params {
    /// k for a cohort of `n` (at least 2), after [`Params::degree`]'s adjustments: what each
    /// member's neighbourhood holds.
    pub fn degree_for(&self, n: usize) -> usize {
        let wanted = self.degree.unwrap_or_else(|| default_degree(n)).max(self.threshold);
        let wanted = wanted + wanted % 2;
        if wanted >= n - 1 { n - 1 } else { wanted }
    }
}

/// Whether T is more than half of a member's `degree` neighbours: below that, two disjoint
/// groups of members could each sign a different survivor list, and nodes refuse the round.
pub fn is_majority(threshold: usize, degree: usize) -> bool {
    2 * threshold > degree
}

/// SecAgg+'s neighbourhood size for a cohort of `n`: 2⌈log₂ n⌉ (before [`Params::degree`]'s
/// adjustments).
pub fn default_degree(n: usize) -> usize {
    2 * (usize::BITS - n.saturating_sub(1).leading_zeros()) as usize
}

/// A round's agreed parameters, with its neighbourhood graph.
#[derive(Clone, Debug)]
pub struct Setup {
    binding: Binding,
    cohort: Vec<ParticipantId>,
    threshold: usize,
    words: usize,
    bits: u32,
    graph: Graph,
}

impl Setup {
    /// The round `round` of `federation` over `cohort` (any order; no repeats), masking vectors of
    /// `words` words. `session` is the digest of the announcement that opens this secure session
    /// of the round: everything signed or sealed in it is bound to it. `graph_seed` draws the
    /// neighbourhood graph: derive it from the round's seed, so every party draws the same one.
    pub fn new(
        federation: FederationId,
        round: Round,
        session: [u8; 32],
        mut cohort: Vec<ParticipantId>,
        params: Params,
        graph_seed: u64,
        words: usize,
    ) -> Result<Self> {
        let n = cohort.len();
        if n < MIN_COHORT || n > usize::from(Member::MAX) + 1 {
            return Err(Error::setup(format!("a cohort of {n} members; expected {MIN_COHORT} to 65,536")));
        }
        cohort.sort_unstable();
        if let Some(w) = cohort.windows(2).find(|w| w[0] == w[1]) {
            return Err(Error::setup(format!("member {} appears twice in the cohort", w[0].short())));
        }
        if !WORD_BITS.contains(&params.bits) {
            return Err(Error::setup(format!("a word width of {} bits; expected one of {WORD_BITS:?}", params.bits)));
        }
        let t = params.threshold;
        if t < 2 || t > n - 1 || t > MAX_HOLDERS {
            return Err(Error::setup(format!(
                "threshold {t} for a cohort of {n}: expected 2 to {}",
                (n - 1).min(MAX_HOLDERS)
            )));
        }
        let degree = params.degree_for(n);
        if degree > MAX_HOLDERS {
            return Err(Error::setup(format!("{degree} neighbours a member; at most {MAX_HOLDERS}")));
        }
        let binding = Binding { federation, round, session };
        let graph = Graph::draw(&binding, &cohort, degree, graph_seed);
        Ok(Self { binding, cohort, threshold: t, words, bits: params.bits, graph })
    }

    /// The federation.
    pub fn federation(&self) -> &FederationId {
        &self.binding.federation
    }

    /// The round.
    pub fn round(&self) -> Round {
        self.binding.round
    }

    /// The digest of the announcement that opened this session of the round.
    pub fn session(&self) -> &[u8; 32] {
        &self.binding.session
    }

    /// What everything of this session is bound to.
    pub(crate) fn binding(&self) -> &Binding {
        &self.binding
    }

    /// The cohort, sorted; a [`Member`] is an index into it.
    pub fn cohort(&self) -> &[ParticipantId] {
        &self.cohort
    }

    /// The member `id` is, if it is in the cohort.
    pub fn member(&self, id: &ParticipantId) -> Option<Member> {
        self.cohort.binary_search(id).ok().map(|i| i as Member)
    }

    /// The identity of member `m` (which must be in range).
    pub fn id(&self, m: Member) -> &ParticipantId {
        &self.cohort[usize::from(m)]
    }

    /// T.
    pub fn threshold(&self) -> usize {
        self.threshold
    }

    /// k, after [`Params::degree`]'s adjustments.
    pub fn degree(&self) -> usize {
        self.graph.degree
    }

    /// Length of the vectors summed.
    pub fn words(&self) -> usize {
        self.words
    }

    /// b: words are summed modulo 2ᵇ.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// Bytes a masked word takes on the wire.
    pub fn word_bytes(&self) -> usize {
        self.bits as usize / 8
    }

    /// 2ᵇ − 1: the mask that reduces a word modulo 2ᵇ.
    pub(crate) fn word_mask(&self) -> u32 {
        u32::MAX >> (32 - self.bits)
    }

    /// The neighbours of `m`, sorted.
    pub fn neighbours(&self, m: Member) -> &[Member] {
        &self.graph.neighbours[usize::from(m)]
    }

    /// Where `holder` sits among `owner`'s neighbours, from 1: its x in `owner`'s sharing.
    pub(crate) fn share_x(&self, owner: Member, holder: Member) -> Option<u8> {
        self.neighbours(owner).binary_search(&holder).ok().map(|i| (i + 1) as u8)
    }

    /// Whether `a` and `b` are neighbours.
    pub fn adjacent(&self, a: Member, b: Member) -> bool {
        self.neighbours(a).binary_search(&b).is_ok()
    }
}

/// The neighbourhood graph: the cohort in an order drawn from the seed, as a ring where each
/// member is joined to the k/2 nearest on either side (a Harary graph H(k, n) over a random
/// permutation, as SecAgg+ draws it), or the complete graph.
#[derive(Clone, Debug)]
struct Graph {
    degree: usize,
    neighbours: Vec<Vec<Member>>,
}

impl Graph {
    fn draw(binding: &Binding, cohort: &[ParticipantId], degree: usize, seed: u64) -> Self {
        let n = cohort.len();
        let all = 0..n as u32;
        if degree >= n - 1 {
            let neighbours = all.clone().map(|m| all.clone().filter(|&v| v != m).map(|v| v as Member).collect());
            return Self { degree: n - 1, neighbours: neighbours.collect() };
        }
        let mut rng = ChaCha20Rng::from_seed(graph_seed(binding, cohort, seed));
        let mut order: Vec<Member> = all.map(|m| m as Member).collect();
        // Fisher–Yates, with an unbiased draw below each bound.
        for i in (1..n).rev() {
            order.swap(i, below(&mut rng, i as u32 + 1) as usize);
        }
        let mut neighbours = vec![Vec::with_capacity(degree); n];
        for (p, &m) in order.iter().enumerate() {
            for step in 1..=degree / 2 {
                neighbours[usize::from(m)].push(order[(p + step) % n]);
                neighbours[usize::from(m)].push(order[(p + n - step) % n]);
            }
            neighbours[usize::from(m)].sort_unstable();
        }
        Self { degree, neighbours }
    }
}

/// SHA-256 of everything the graph depends on, as the stream cipher's key.
fn graph_seed(binding: &Binding, cohort: &[ParticipantId], seed: u64) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"fedistil/secagg/graph/v1\0");
    super::crypto::bind(&mut ctx, binding);
    ctx.update(&seed.to_le_bytes());
    ctx.update(&(cohort.len() as u64).to_le_bytes());
    for id in cohort {
        ctx.update(&id.0);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// Uniform in 0..bound (bound ≥ 1), by rejection.
fn below(rng: &mut ChaCha20Rng, bound: u32) -> u32 {
    let zone = u32::MAX - u32::MAX % bound;
    loop {
        let x = rng.next_u32();
        if x < zone {
            return x % bound;
        }
    }
}

/// A set of members, as a bitset over the cohort (bit `m % 8` of byte `m / 8`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MemberSet {
    #[serde(with = "crate::bounded::bytes")]
    bits: Vec<u8>,
}

impl MemberSet {
    /// The set of `members` in a cohort of `n` (each must be below `n`).
    pub fn new(n: usize, members: impl IntoIterator<Item = Member>) -> Self {
        let mut bits = vec![0u8; n.div_ceil(8)];
        for m in members {
            bits[usize::from(m) / 8] |= 1 << (m % 8);
        }
        Self { bits }
    }

    /// Whether `m` is in the set.
    pub fn contains(&self, m: Member) -> bool {
        self.bits.get(usize::from(m) / 8).is_some_and(|b| b >> (m % 8) & 1 == 1)
    }

    /// The members, in order.
    pub fn iter(&self) -> impl Iterator<Item = Member> + '_ {
        (0..self.bits.len() * 8).map(|m| m as Member).filter(|&m| self.contains(m))
    }

    /// How many members.
    pub fn len(&self) -> usize {
        self.bits.iter().map(|b| b.count_ones() as usize).sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks that the set is over a cohort of `n`: ⌈n / 8⌉ bytes, no bit past the last member.
    pub fn check(&self, n: usize) -> Result<()> {
        let used = n % 8;
        if self.bits.len() != n.div_ceil(8) || (used != 0 && self.bits.last().is_some_and(|b| b >> used != 0)) {
            return Err(Error::Malformed(format!("a member set that is not over a cohort of {n}")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Identity;
    use proptest::prelude::*;

    pub(crate) fn cohort(n: usize) -> Vec<ParticipantId> {
        (0..n).map(|i| Identity::from_seed([i as u8 + 1; 32]).unwrap().id()).collect()
    }

    fn setup(n: usize, threshold: usize, degree: Option<usize>, seed: u64) -> Result<Setup> {
        let params = Params { threshold, degree, bits: 32 };
        Setup::new(FederationId::new("fed").unwrap(), 3, [0; 32], cohort(n), params, seed, 10)
    }

    #[test]
    fn the_default_degree_is_twice_the_rounded_up_logarithm() {
        assert_eq!(default_degree(2), 2);
        assert_eq!(default_degree(10), 8);
        assert_eq!(default_degree(64), 12);
        assert_eq!(default_degree(100), 14);
        assert_eq!(default_degree(1000), 20);
        assert_eq!(setup(100, 8, None, 1).unwrap().degree(), 14);
        assert_eq!(setup(10, 3, None, 1).unwrap().degree(), 8);
        // Small cohorts and large thresholds give the complete graph.
        assert_eq!(setup(5, 2, None, 1).unwrap().degree(), 4);
        assert_eq!(setup(100, 30, None, 1).unwrap().degree(), 30);
        assert_eq!(setup(100, 8, Some(9), 1).unwrap().degree(), 10);
    }

    #[test]
    fn cohorts_thresholds_and_widths_out_of_range_are_refused() {
        assert!(matches!(setup(2, 2, None, 0), Err(Error::Setup(_))));
        assert!(matches!(setup(5, 1, None, 0), Err(Error::Setup(_))));
        assert!(matches!(setup(5, 5, None, 0), Err(Error::Setup(_))));
        let mut twice = cohort(4);
        twice[3] = twice[0];
        let params = Params { threshold: 2, degree: None, bits: 32 };
        let fed = FederationId::new("fed").unwrap();
        assert!(matches!(Setup::new(fed.clone(), 1, [0; 32], twice, params, 0, 1), Err(Error::Setup(_))));
        let params = Params { threshold: 2, degree: None, bits: 12 };
        assert!(matches!(Setup::new(fed, 1, [0; 32], cohort(4), params, 0, 1), Err(Error::Setup(_))));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn the_graph_is_regular_symmetric_and_the_same_for_every_party(
            n in 3usize..80, t in 2usize..12, k in proptest::option::of(2usize..40), seed in any::<u64>(),
        ) {
            prop_assume!(t < n);
            let s = setup(n, t, k, seed).unwrap();
            let degree = s.degree();
            prop_assert!(degree >= t && degree < n);
            for m in 0..n as Member {
                let nb = s.neighbours(m);
                prop_assert_eq!(nb.len(), degree);
                prop_assert!(nb.windows(2).all(|w| w[0] < w[1]) && !nb.contains(&m));
                for &v in nb {
                    prop_assert!(s.adjacent(v, m));
                }
            }
            // Another party, given the cohort in another order, draws the same graph.
            let mut shuffled = cohort(n);
            shuffled.reverse();
            let params = Params { threshold: t, degree: k, bits: 32 };
            let again = Setup::new(FederationId::new("fed").unwrap(), 3, [0; 32], shuffled, params, seed, 10).unwrap();
            for m in 0..n as Member {
                prop_assert_eq!(again.neighbours(m), s.neighbours(m));
            }
        }
    }

    #[test]
    fn the_seed_changes_the_graph() {
        let a = setup(60, 4, None, 1).unwrap();
        let b = setup(60, 4, None, 2).unwrap();
        assert!((0..60).any(|m| a.neighbours(m) != b.neighbours(m)));
    }

    #[test]
    fn member_sets_round_trip_and_refuse_stray_bits() {
        let s = MemberSet::new(11, [0, 3, 10]);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0, 3, 10]);
        assert_eq!(s.len(), 3);
        assert!(s.check(11).is_ok());
        assert!(s.check(12).is_ok() && s.check(16).is_ok()); // same bytes, no stray bit
        assert!(s.check(10).is_err());
        assert!(s.check(17).is_err());
        let wire = crate::codec::to_bytes(&s).unwrap();
        assert_eq!(crate::codec::from_bytes::<MemberSet>(&wire, 64).unwrap(), s);
    }
}
