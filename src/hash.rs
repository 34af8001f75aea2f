//! The one hash the sidecar uses for its own keys (statement-cache keys, statement
//! fingerprints, jitter seeds): SipHash with fixed keys, so a fingerprint printed in a log
//! means the same statement in every process and every release built with the same std.

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher, Hash};

/// A 64-bit hash of `value`, the same in every process.
pub fn stable(value: impl Hash) -> u64 {
    BuildHasherDefault::<DefaultHasher>::default().hash_one(value)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_hash_is_stable_and_discriminating() {
        assert_eq!(super::stable("SELECT 1"), super::stable("SELECT 1"));
        assert_ne!(super::stable("SELECT 1"), super::stable("SELECT 2"));
    }
}
