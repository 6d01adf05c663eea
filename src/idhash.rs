//! A hasher for the module's internal maps, whose keys are small integers
//! (kernel serials, handles we hand out, slot numbers).
//!
//! std's default SipHash resists collision attacks on untrusted keys at about
//! 20 instructions per byte; these keys are not chosen by an attacker, and a
//! `C_FindObjects` over a 1000-key token does ~3000 lookups: with SipHash,
//! hashing was 60 % of the instructions of listing a token (callgrind). This
//! is FxHash's multiply-rotate (rustc's own hasher), a few instructions a
//! word.

use std::hash::{BuildHasherDefault, Hasher};

pub type IdHashMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<IdHasher>>;

#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

const K: u64 = 0x517c_c1b7_2722_0a95;

impl IdHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(K);
    }
}

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(b));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn write_i32(&mut self, i: i32) {
        self.add(u64::from(i as u32));
    }
    fn write_isize(&mut self, i: isize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn distinct_small_keys_hash_apart_and_maps_work() {
        let b = BuildHasherDefault::<IdHasher>::default();
        let hashes: std::collections::HashSet<u64> =
            (0..10_000u64).map(|i| b.hash_one(i)).collect();
        assert_eq!(hashes.len(), 10_000);
        assert_ne!(b.hash_one((1usize, 2i32)), b.hash_one((2usize, 1i32)));
        assert_ne!(b.hash_one(&b"abc"[..]), b.hash_one(&b"abd"[..]));
        let mut m: IdHashMap<i32, usize> = IdHashMap::default();
        for i in 0..5000 {
            m.insert(i * 7919, i as usize);
        }
        assert!((0..5000).all(|i| m[&(i * 7919)] == i as usize));
        assert_eq!(m.get(&1), None);
    }
}
