//! Enumerated settings (`mode = "acme"`, `kind = "spire"`): serde's derive is
//! the one place their spelling is written. It turns a word into the enum,
//! and it also lists every accepted word, which is where error messages and
//! `as_str` get theirs, so the three can never disagree.
//!
//! The list comes from serde's own protocol: a derived `Deserialize` for an
//! enum hands its deserializer the names of its variants
//! ([`serde::Deserializer::deserialize_enum`]); [`Probe`] is a deserializer
//! that does nothing but keep them.

use std::fmt;

use serde::de::{self, DeserializeOwned, Visitor};
use serde::Deserializer;

/// A configuration enum read from one word of the file.
///
/// Implement it (with no body, or with [`LEAD`](Keyword::LEAD)) on an enum
/// that derives `Deserialize` with `rename_all`/`rename`; unit variants only.
pub(crate) trait Keyword: DeserializeOwned + Copy + PartialEq + 'static {
    /// What an unknown word's message starts with, before the list of
    /// accepted words: `""` or e.g. `"unknown kind; "`.
    const LEAD: &'static str = "";

    /// Every accepted word, in declaration order.
    fn words() -> &'static [&'static str] {
        match Self::deserialize(Probe) {
            Err(Probed::Words(words)) => words,
            _ => &[],
        }
    }

    /// The value a word names, `None` if it names none.
    fn from_word(word: &str) -> Option<Self> {
        Self::deserialize(de::value::StrDeserializer::<de::value::Error>::new(word)).ok()
    }

    /// The word the file spells this value as.
    fn word(self) -> &'static str {
        Self::words()
            .iter()
            .find(|w| Self::from_word(w) == Some(self))
            .expect("every variant of a Keyword enum is a unit variant serde names")
    }

    /// What to say about a word that is none of [`words`](Keyword::words):
    /// `expected a or b`, `expected one of a, b, c`.
    fn expected() -> String {
        match Self::words() {
            [a, b] => format!("{}expected {a} or {b}", Self::LEAD),
            words => format!("{}expected one of {}", Self::LEAD, words.join(", ")),
        }
    }
}

/// A deserializer that only answers `deserialize_enum`, by keeping the
/// variant names it is given.
struct Probe;

/// [`Probe`]'s only outcomes: the names, or "this is no enum".
#[derive(Debug)]
enum Probed {
    Words(&'static [&'static str]),
    NotAnEnum,
}

impl fmt::Display for Probed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("probing the variant names of an enum")
    }
}

impl std::error::Error for Probed {}

impl de::Error for Probed {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Probed::NotAnEnum
    }
}

impl<'de> Deserializer<'de> for Probe {
    type Error = Probed;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Probed> {
        Err(Probed::NotAnEnum)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Probed> {
        Err(Probed::Words(variants))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}
