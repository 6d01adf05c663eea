//! The hash algorithms of the RSA mechanisms, PSS/OAEP parameters and
//! digests, named as the kernel's `hash=` option names them. A leaf: it
//! depends on nothing else in the crate, so the kernel store, the padding code
//! and the mechanism table can all use it without importing each other.

use cryptoki_sys::*;
use sha1::Sha1;
use sha2::{Digest, Sha224, Sha256, Sha384, Sha512};

/// Hash algorithms, named the way the kernel's `hash=` option names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    pub fn kernel_name(self) -> &'static str {
        match self {
            Hash::Sha1 => "sha1",
            Hash::Sha224 => "sha224",
            Hash::Sha256 => "sha256",
            Hash::Sha384 => "sha384",
            Hash::Sha512 => "sha512",
        }
    }

    pub fn digest_len(self) -> usize {
        match self {
            Hash::Sha1 => 20,
            Hash::Sha224 => 28,
            Hash::Sha256 => 32,
            Hash::Sha384 => 48,
            Hash::Sha512 => 64,
        }
    }

    /// Size of the DER DigestInfo the kernel wraps around the digest, which
    /// decides the smallest key that can carry it.
    pub fn digest_info_len(self) -> usize {
        // Every DigestInfo prefix for these algorithms is 19 bytes except SHA-1's 15.
        self.digest_len() + if self == Hash::Sha1 { 15 } else { 19 }
    }

    pub fn hasher(self) -> Hasher {
        match self {
            Hash::Sha1 => Hasher::Sha1(Sha1::new()),
            Hash::Sha224 => Hasher::Sha224(Sha224::new()),
            Hash::Sha256 => Hasher::Sha256(Sha256::new()),
            Hash::Sha384 => Hasher::Sha384(Sha384::new()),
            Hash::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }
}

/// An incremental hash for multi-part operations.
#[derive(Clone)]
pub enum Hasher {
    Sha1(Sha1),
    Sha224(Sha224),
    Sha256(Sha256),
    Sha384(Sha384),
    Sha512(Sha512),
}

impl Hasher {
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha224(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha384(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    pub fn finish(self) -> Vec<u8> {
        match self {
            Hasher::Sha1(h) => h.finalize().to_vec(),
            Hasher::Sha224(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Sha384(h) => h.finalize().to_vec(),
            Hasher::Sha512(h) => h.finalize().to_vec(),
        }
    }
}

impl Hash {
    /// The hash named by a digest mechanism (`hashAlg` in PSS/OAEP parameters).
    pub fn from_mechanism(m: CK_MECHANISM_TYPE) -> Option<Hash> {
        Some(match m {
            CKM_SHA_1 => Hash::Sha1,
            CKM_SHA224 => Hash::Sha224,
            CKM_SHA256 => Hash::Sha256,
            CKM_SHA384 => Hash::Sha384,
            CKM_SHA512 => Hash::Sha512,
            _ => return None,
        })
    }

    /// The hash of an MGF1 generator (`CKG_MGF1_*`).
    pub fn from_mgf(m: CK_RSA_PKCS_MGF_TYPE) -> Option<Hash> {
        Some(match m {
            CKG_MGF1_SHA1 => Hash::Sha1,
            CKG_MGF1_SHA224 => Hash::Sha224,
            CKG_MGF1_SHA256 => Hash::Sha256,
            CKG_MGF1_SHA384 => Hash::Sha384,
            CKG_MGF1_SHA512 => Hash::Sha512,
            _ => return None,
        })
    }

    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        let mut h = self.hasher();
        h.update(data);
        h.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_have_their_lengths() {
        for h in [
            Hash::Sha1,
            Hash::Sha224,
            Hash::Sha256,
            Hash::Sha384,
            Hash::Sha512,
        ] {
            assert_eq!(h.digest(b"abc").len(), h.digest_len());
        }
        assert_eq!(Hash::Sha256.digest_info_len(), 51);
        assert_eq!(Hash::Sha1.digest_info_len(), 35);
    }
}
