//! Serde helpers for the variable-length fields of wire types (byte strings, texts, index
//! lists) that never allocate a length the input only claims.
//!
//! bincode's own `Vec<u8>` and `String` decoders allocate the claimed length (up to the
//! codec's limit) before they look for the bytes: a 100-byte message claiming 60 MiB would make
//! the receiver allocate 60 MiB. These helpers ask the decoder to *borrow* the bytes from the
//! input instead, which it does only after checking that they are there, and copy them then.
//! Lists grow as their elements are read, from a small initial capacity.

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serializer};

/// Largest capacity reserved for a list before its elements have been read.
const INITIAL_CAPACITY: usize = 1024;

/// `#[serde(with = "crate::bounded::bytes")]` for `Vec<u8>` (encoded like `serde_bytes`).
pub(crate) mod bytes {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        serde_bytes::serialize(v, s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_bytes(Bytes)
    }
}

struct Bytes;

impl<'de> Visitor<'de> for Bytes {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
        Ok(v.as_bytes().to_vec())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Vec<u8>, A::Error> {
        collect(seq)
    }
}

/// `#[serde(deserialize_with = "crate::bounded::text")]` for a `String`.
pub(crate) fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    d.deserialize_str(Text)
}

pub(crate) struct Text;

impl Visitor<'_> for Text {
    type Value = String;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }
}

/// `#[serde(deserialize_with = "crate::bounded::list")]` for a `Vec<T>`.
pub(crate) fn list<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    struct List<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for List<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a list")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Vec<T>, A::Error> {
            collect(seq)
        }
    }
    d.deserialize_seq(List(std::marker::PhantomData))
}

fn collect<'de, A: SeqAccess<'de>, T: Deserialize<'de>>(mut seq: A) -> Result<Vec<T>, A::Error> {
    let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(INITIAL_CAPACITY));
    while let Some(x) = seq.next_element()? {
        v.push(x);
    }
    Ok(v)
}
