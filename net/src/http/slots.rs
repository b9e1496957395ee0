//! Connection slots: at most [`Slots::total`] connections at once, and at most
//! [`Slots::per_ip`] from one address (IPv6 by its /64, what one host is usually given), so
//! that a few slow clients hold their own slots and never everyone's.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// The slots of one endpoint. Cheap to clone (shared).
#[derive(Clone, Debug)]
pub(crate) struct Slots {
    inner: Arc<Mutex<Taken>>,
    total: usize,
    per_ip: usize,
}

#[derive(Debug, Default)]
struct Taken {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
}

/// A connection's slot, given back when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    slots: Slots,
    key: IpAddr,
}

/// The address whose slots a connection from `ip` takes: IPv4 as it is (an IPv4-mapped IPv6
/// address as its IPv4), IPv6 by its /64.
fn bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

impl Slots {
    pub(crate) fn new(total: usize, per_ip: usize) -> Self {
        Self { inner: Arc::default(), total, per_ip }
    }

    /// A slot for a connection from `ip`, or `None` if its address or everyone's are all taken.
    pub(crate) fn take(&self, ip: IpAddr) -> Option<Slot> {
        let key = bucket(ip);
        let mut t = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mine = t.by_ip.get(&key).copied().unwrap_or(0);
        if t.total >= self.total || mine >= self.per_ip {
            return None;
        }
        t.total += 1;
        t.by_ip.insert(key, mine + 1);
        Some(Slot { slots: self.clone(), key })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut t = self.slots.inner.lock().unwrap_or_else(PoisonError::into_inner);
        t.total = t.total.saturating_sub(1);
        if let Some(n) = t.by_ip.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                t.by_ip.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_per_address_and_in_all_and_given_back() {
        let slots = Slots::new(5, 2);
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        let (a1, _a2) = (slots.take(a).expect("1"), slots.take(a).expect("2"));
        assert!(slots.take(a).is_none(), "a third from one address");
        let _b = (slots.take(b).expect("b1"), slots.take(b).expect("b2"));
        drop(a1);
        let _a3 = slots.take(a).expect("given back");
        let c: IpAddr = "192.0.2.3".parse().expect("ip");
        let _c = slots.take(c).expect("the fifth");
        assert!(slots.take(c).is_none(), "five in all");
    }

    #[test]
    fn ipv6_counts_by_its_64() {
        let slots = Slots::new(10, 2);
        let one: Vec<IpAddr> =
            ["2001:db8::1", "2001:db8::2:3", "2001:db8::ffff"].map(|s| s.parse().expect("ip")).into();
        let _held = (slots.take(one[0]).expect("1"), slots.take(one[1]).expect("2"));
        assert!(slots.take(one[2]).is_none(), "the same /64");
        let _other = slots.take("2001:db8:0:1::1".parse().expect("ip")).expect("another /64");
        let mapped: IpAddr = "::ffff:192.0.2.9".parse().expect("ip");
        let _m = slots.take(mapped).expect("mapped");
        let _v4 = slots.take("192.0.2.9".parse().expect("ip")).expect("its IPv4, once more");
        assert!(slots.take("192.0.2.9".parse().expect("ip")).is_none(), "mapped counts as its IPv4");
    }
}
