//! A stable fingerprint of a saga's step graph.
//!
//! Stored with every execution and compared on load, so that an execution is never resumed against a
//! definition whose steps changed. It covers the saga's name, each step's name and kind, which handler
//! slots are filled, and the branch structure of conditional steps (recursively); it does not cover
//! handler code or names, so renaming a function or reformatting code keeps it. The hash is FNV-1a
//! over a canonical text, which is stable across Rust releases (unlike `std`'s `DefaultHasher`).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::StepDefinition;

/// A 64-bit fingerprint, shown and stored as 16 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(u64);

impl Fingerprint {
    /// The fingerprint of a saga named `name` with `steps`.
    pub(crate) fn of<C>(name: &str, steps: &[StepDefinition<C>]) -> Self {
        Self(fnv1a(canonical(name, steps).as_bytes()))
    }

    /// A fingerprint from its raw value (as stored).
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn from_value(value: u64) -> Self {
        Self(value)
    }

    /// The raw value.
    #[cfg_attr(feature = "testkit", visibility::make(pub))]
    pub(crate) fn value(self) -> u64 {
        self.0
    }
}

/// The canonical text the fingerprint hashes, e.g.
/// `saga(order){local(validate;execute,failure)remote(charge;execute,success)}`.
fn canonical<C>(name: &str, steps: &[StepDefinition<C>]) -> String {
    let mut text = format!("saga({name}){{");
    for step in steps {
        match step {
            StepDefinition::Local(step) => {
                text.push_str(&format!("local({};execute", step.name));
                if step.on_failure.is_some() {
                    text.push_str(",failure");
                }
            }
            StepDefinition::Remote(step) => {
                text.push_str(&format!("remote({};execute", step.name));
                for (present, slot) in [
                    (step.on_success.is_some(), ",success"),
                    (step.on_error.is_some(), ",error"),
                    (step.on_failure.is_some(), ",failure"),
                ] {
                    if present {
                        text.push_str(slot);
                    }
                }
            }
            StepDefinition::Conditional(step) => {
                text.push_str(&format!("conditional({}", step.name));
                for alternative in &step.alternatives {
                    text.push_str(&format!(";if:{}", alternative.saga.fingerprint()));
                }
                if let Some(saga) = &step.else_then {
                    text.push_str(&format!(";else:{}", saga.fingerprint()));
                }
            }
        }
        text.push(')');
    }
    text.push('}');
    text
}

fn fnv1a(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(PRIME)
    })
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl std::str::FromStr for Fingerprint {
    type Err = std::num::ParseIntError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        u64::from_str_radix(text, 16).map(Self)
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.len() != 16 {
            return Err(serde::de::Error::custom(format!(
                "a fingerprint has 16 hex digits, got {text:?}"
            )));
        }
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::fnv1a;

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
