//! The mechanism table. Each mechanism is a kernel call plus whatever has to
//! happen in userspace around it; adding one means adding a row here and, if
//! it needs new padding, one function — not touching the session logic.

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

/// How a mechanism turns the caller's data into a kernel call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignScheme {
    /// PKCS#1 v1.5 type-1 padding around caller-supplied bytes (normally a
    /// DigestInfo): kernel `enc=pkcs1` without `hash=`.
    Pkcs1Raw,
    /// Hash in userspace, then kernel `enc=pkcs1 hash=H`, which adds the
    /// DigestInfo and the padding.
    Pkcs1Hashed(Hash),
}

#[derive(Debug)]
pub struct MechSpec {
    pub ty: CK_MECHANISM_TYPE,
    pub name: &'static str,
    pub scheme: SignScheme,
    pub flags: CK_FLAGS,
}

/// The kernel's RSA implementation accepts only these modulus sizes
/// (crypto/rsa.c `rsa_check_key_length`): 512, 1024 and 1536 bits are refused
/// in FIPS mode, 2048, 3072 and 4096 always work.
pub const MAX_KEY_BITS: CK_ULONG = 4096;

pub fn min_key_bits() -> CK_ULONG {
    let fips = std::fs::read_to_string("/proc/sys/crypto/fips_enabled")
        .map(|s| s.trim() == "1")
        .unwrap_or(false);
    if fips { 2048 } else { 512 }
}

pub static MECHANISMS: &[MechSpec] = &[
    MechSpec {
        ty: CKM_RSA_PKCS,
        name: "RSA-PKCS",
        scheme: SignScheme::Pkcs1Raw,
        flags: CKF_SIGN,
    },
    MechSpec {
        ty: CKM_SHA1_RSA_PKCS,
        name: "SHA1-RSA-PKCS",
        scheme: SignScheme::Pkcs1Hashed(Hash::Sha1),
        flags: CKF_SIGN,
    },
    MechSpec {
        ty: CKM_SHA224_RSA_PKCS,
        name: "SHA224-RSA-PKCS",
        scheme: SignScheme::Pkcs1Hashed(Hash::Sha224),
        flags: CKF_SIGN,
    },
    MechSpec {
        ty: CKM_SHA256_RSA_PKCS,
        name: "SHA256-RSA-PKCS",
        scheme: SignScheme::Pkcs1Hashed(Hash::Sha256),
        flags: CKF_SIGN,
    },
    MechSpec {
        ty: CKM_SHA384_RSA_PKCS,
        name: "SHA384-RSA-PKCS",
        scheme: SignScheme::Pkcs1Hashed(Hash::Sha384),
        flags: CKF_SIGN,
    },
    MechSpec {
        ty: CKM_SHA512_RSA_PKCS,
        name: "SHA512-RSA-PKCS",
        scheme: SignScheme::Pkcs1Hashed(Hash::Sha512),
        flags: CKF_SIGN,
    },
];

pub fn lookup(ty: CK_MECHANISM_TYPE) -> Option<&'static MechSpec> {
    MECHANISMS.iter().find(|m| m.ty == ty)
}

/// Mechanisms a private key of ours can be used with (`CKA_ALLOWED_MECHANISMS`).
pub fn sign_mechanisms() -> impl Iterator<Item = CK_MECHANISM_TYPE> {
    MECHANISMS
        .iter()
        .filter(|m| m.flags & CKF_SIGN != 0)
        .map(|m| m.ty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_consistent() {
        for (i, m) in MECHANISMS.iter().enumerate() {
            assert!(
                MECHANISMS[..i].iter().all(|o| o.ty != m.ty),
                "duplicate {}",
                m.name
            );
            assert!(std::ptr::eq(lookup(m.ty).unwrap(), m));
        }
        assert!(lookup(CKM_RSA_PKCS_PSS).is_none());
    }

    #[test]
    fn hashes_have_their_lengths() {
        for h in [
            Hash::Sha1,
            Hash::Sha224,
            Hash::Sha256,
            Hash::Sha384,
            Hash::Sha512,
        ] {
            let mut x = h.hasher();
            x.update(b"abc");
            assert_eq!(x.finish().len(), h.digest_len());
        }
        assert_eq!(Hash::Sha256.digest_info_len(), 51);
        assert_eq!(Hash::Sha1.digest_info_len(), 35);
    }
}
