//! Lower-case hexadecimal, for ids, hashes and key files.

/// `bytes` as lower-case hex.
pub fn encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Exactly `N` bytes from `2N` hex digits (either case); `None` for anything else.
pub fn decode<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.as_bytes();
    if s.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        *o = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trips(bytes in proptest::array::uniform32(any::<u8>())) {
            let s = encode(&bytes);
            prop_assert_eq!(decode::<32>(&s), Some(bytes));
            prop_assert_eq!(decode::<32>(&s.to_uppercase()), Some(bytes));
        }
    }

    #[test]
    fn refuses_wrong_length_and_non_hex() {
        assert_eq!(decode::<2>("abc"), None);
        assert_eq!(decode::<2>("abcg"), None);
        assert_eq!(decode::<2>("+bcd"), None);
        assert_eq!(encode(&[0, 255, 16]), "00ff10");
    }
}
