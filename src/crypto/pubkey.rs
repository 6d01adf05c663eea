//! Recovering an RSA public key from a kernel key that will not give it back.
//!
//! The kernel never returns key material, yet every client needs the modulus
//! (OpenSSH to build the public key, GnuTLS to size signatures). The kernel does
//! offer the public raw operation E(x) = x^e mod n. E is multiplicative, so for
//! any x, y (with x·y < n) the integer E(x)·E(y) − E(x·y) is a multiple of n,
//! and the gcd of a few such values is n itself (after removing the occasional
//! small cofactor). That needs no knowledge of e and only numbers of twice the
//! key size. The exponent is then found by checking the usual candidates
//! against the sampled values.
//!
//! A key whose recovered modulus does not have the size the kernel reports, or
//! whose exponent is not among the candidates, is rejected rather than guessed.

use crate::error::{Error, Result};
use crate::kernel::hints::KernelOp;
use crate::kernel::keyctl::Errno;
use cryptoki_sys::CKR_KEY_TYPE_INCONSISTENT;
use num_bigint::BigUint;
use num_integer::Integer;
use num_traits::{One, Zero};
use sha1::{Digest, Sha1};

/// Public exponents seen in practice, most likely first.
const EXPONENTS: &[u32] = &[65537, 3, 5, 17, 257, 7, 11, 13, 37, 41];

/// Index pairs (i, j) into the sample points: each gives the multiple
/// E(xᵢ)·E(xⱼ) − E(xᵢ·xⱼ) of n.
const RELATIONS: &[(usize, usize)] = &[(0, 1), (0, 0), (1, 1), (0, 2), (1, 2), (2, 2), (0, 3)];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RsaPublic {
    /// Big-endian modulus without leading zeros.
    pub modulus: Vec<u8>,
    /// Big-endian public exponent without leading zeros.
    pub exponent: Vec<u8>,
}

/// Recovers (n, e) of a `bits`-bit key from `public_op`, which maps x (as a
/// big-endian byte string of the key's length) to x^e mod n.
///
/// `bits` is the kernel's key size, which it reports in whole bytes: the
/// modulus may be up to 7 bits shorter (a 2047-bit key reads as 2048).
///
/// The sample points are just above 2^(bits/2 − 5): large enough that x^e
/// wraps around n even for e = 3 (otherwise E(x)·E(y) − E(xy) is 0 and says
/// nothing), small enough that every product xᵢ·xⱼ stays below n, even
/// for a modulus 7 bits shorter than `bits`.
///
/// A failing public operation is a kernel error (`Error::errno` is set: the
/// key may be usable later); values that do not pin down a key of this size
/// with a known exponent are `CKR_KEY_TYPE_INCONSISTENT` without an errno
/// (the key is not usable through this module).
pub fn recover(
    bits: u32,
    mut public_op: impl FnMut(&[u8]) -> std::result::Result<Vec<u8>, Errno>,
) -> Result<RsaPublic> {
    let inconsistent = |why: &str| Error::refused(CKR_KEY_TYPE_INCONSISTENT, why);
    if !(256..=16384).contains(&bits) {
        return Err(inconsistent("unsupported key size"));
    }
    let k = bits.div_ceil(8) as usize;
    let base = BigUint::one() << (bits / 2 - 5);
    let xs: Vec<BigUint> = [1u32, 3, 5, 7]
        .iter()
        .map(|c| &base + BigUint::from(*c))
        .collect();
    let mut e_of = |x: &BigUint| -> Result<BigUint> {
        let bytes = x.to_bytes_be();
        let mut input = vec![0u8; k];
        input[k - bytes.len()..].copy_from_slice(&bytes);
        let out = public_op(&input)
            .map_err(|e| Error::kernel(KernelOp::UseKey, e, "the public operation"))?;
        Ok(BigUint::from_bytes_be(&out))
    };
    let ex = xs.iter().map(&mut e_of).collect::<Result<Vec<_>>>()?;

    // n has the kernel's size in whole bytes, and no factor below 2^16.
    let right_size = |g: &BigUint| g.bits().div_ceil(8) == u64::from(bits).div_ceil(8);
    let mut g = BigUint::zero();
    for (round, &(i, j)) in RELATIONS.iter().enumerate() {
        let a = &ex[i] * &ex[j];
        let b = e_of(&(&xs[i] * &xs[j]))?;
        let m = if a >= b { a - b } else { b - a };
        g = g.gcd(&m);
        // From the second relation on, g is n times a small cofactor (if
        // any): divide it out. A cofactor below 2^8 can hide in n's byte
        // length (n may be 7 bits short of it), so those always go; larger
        // ones only while g is too long. Trial division on the first, large
        // multiple would only waste time.
        if round > 0 {
            strip_small_factors(&mut g, 256, 0);
            strip_small_factors(&mut g, 65536, u64::from(bits));
        }
        if right_size(&g) {
            break;
        }
    }
    if !right_size(&g) {
        return Err(inconsistent(
            "the recovered modulus does not have the kernel's key size",
        ));
    }
    for &e in EXPONENTS {
        let eb = BigUint::from(e);
        // One point pins e down among the candidates; a second confirms it.
        // Square-and-multiply: for a small e far cheaper than modpow's
        // Montgomery set-up and window table.
        if xs
            .iter()
            .zip(&ex)
            .take(2)
            .all(|(x, y)| &pow_small(x, e, &g) == y)
        {
            return Ok(RsaPublic {
                modulus: g.to_bytes_be(),
                exponent: eb.to_bytes_be(),
            });
        }
    }
    Err(inconsistent(
        "the public exponent is not one of the supported values",
    ))
}

/// The exponent as a `u32` if it fits (big-endian, possibly with leading zeros).
pub fn small_exponent(e: &[u8]) -> Option<u32> {
    let e = &e[e.iter().take_while(|b| **b == 0).count()..];
    (e.len() <= 4)
        .then(|| e.iter().fold(0u32, |a, b| a << 8 | u32::from(*b)))
        .filter(|e| *e > 1)
}

/// x^e mod n for a small e, by square-and-multiply: for e = 65537, 17
/// multiplications and reductions, far cheaper than `modpow`'s Montgomery
/// set-up and window table. Public data only (not constant-time).
pub fn pow_small(x: &BigUint, e: u32, n: &BigUint) -> BigUint {
    let mut r = BigUint::one();
    for i in (0..32 - e.leading_zeros()).rev() {
        r = (&r * &r) % n;
        if e >> i & 1 == 1 {
            r = (&r * x) % n;
        }
    }
    r
}

/// Divides out factors below `below` (a real RSA modulus has none below
/// 2^16) until `g` is down to `target_bits`.
fn strip_small_factors(g: &mut BigUint, below: u32, target_bits: u64) {
    if g.is_zero() {
        return;
    }
    let mut p = 2u32;
    while p < below && g.bits() > target_bits {
        let pb = BigUint::from(p);
        loop {
            let (q, r) = g.div_rem(&pb);
            if r.is_zero() && !q.is_one() {
                *g = q;
            } else {
                break;
            }
        }
        p += if p == 2 { 1 } else { 2 };
    }
}

impl RsaPublic {
    pub fn bits(&self) -> u32 {
        BigUint::from_bytes_be(&self.modulus).bits() as u32
    }

    /// PKCS#1 `RSAPublicKey` DER.
    pub fn pkcs1_der(&self) -> Vec<u8> {
        use pkcs1::der::Encode;
        let key = pkcs1::RsaPublicKey {
            modulus: pkcs1::UintRef::new(&self.modulus)
                .expect("modulus is a valid unsigned integer"),
            public_exponent: pkcs1::UintRef::new(&self.exponent)
                .expect("exponent is a valid unsigned integer"),
        };
        key.to_der().expect("RSAPublicKey encodes")
    }

    /// X.509 `SubjectPublicKeyInfo` DER (`CKA_PUBLIC_KEY_INFO`).
    pub fn spki_der(&self) -> Vec<u8> {
        use spki::der::{Encode, asn1::BitStringRef};
        let pkcs1 = self.pkcs1_der();
        let spki = spki::SubjectPublicKeyInfoRef {
            algorithm: spki::AlgorithmIdentifierRef {
                oid: spki::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1"),
                parameters: Some(spki::der::asn1::AnyRef::NULL),
            },
            subject_public_key: BitStringRef::from_bytes(&pkcs1).expect("bit string"),
        };
        spki.to_der().expect("SubjectPublicKeyInfo encodes")
    }

    /// `CKA_ID`: SHA-1 of the DER `RSAPublicKey`, which is also what OpenSSL
    /// and RFC 5280 (method 1) use as a certificate's subject key identifier,
    /// so a certificate imported later pairs with the key by default. It
    /// depends only on the public key, so it is stable across sessions,
    /// machines and reloads of the same key.
    pub fn key_id(&self) -> Vec<u8> {
        Sha1::digest(self.pkcs1_der()).to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::traits::PublicKeyParts;

    fn oracle(
        key: &rsa::RsaPublicKey,
    ) -> impl FnMut(&[u8]) -> std::result::Result<Vec<u8>, Errno> + '_ {
        move |x| {
            let k = key.size();
            let v = rsa::BigUint::from_bytes_be(x)
                .modpow(key.e(), key.n())
                .to_bytes_be();
            let mut out = vec![0u8; k - v.len()];
            out.extend_from_slice(&v);
            Ok(out)
        }
    }

    #[test]
    fn recovers_modulus_and_exponent() {
        let mut rng = rand_core_compat::rng();
        for (bits, e) in [(1024usize, 65537u64), (1024, 3), (2048, 65537)] {
            let sk =
                rsa::RsaPrivateKey::new_with_exp(&mut rng, bits, &rsa::BigUint::from(e)).unwrap();
            let pk = sk.to_public_key();
            let got = recover(bits as u32, oracle(&pk)).unwrap();
            assert_eq!(got.modulus, pk.n().to_bytes_be());
            assert_eq!(got.exponent, pk.e().to_bytes_be());
            assert_eq!(got.bits(), bits as u32);
        }
    }

    #[test]
    fn moduli_that_are_not_whole_bytes_are_recovered() {
        let mut rng = rand_core_compat::rng();
        for bits in [1023usize, 1020, 1017] {
            let sk = rsa::RsaPrivateKey::new(&mut rng, bits).unwrap();
            let pk = sk.to_public_key();
            // The kernel reports the size in whole bytes.
            let got = recover(1024, oracle(&pk)).unwrap();
            assert_eq!(got.modulus, pk.n().to_bytes_be(), "{bits} bits");
            assert_eq!(got.bits() as usize, pk.n().bits());
        }
    }

    #[test]
    fn pow_small_agrees_with_modpow() {
        let n = BigUint::parse_bytes(
            b"c5a3f1e2d4b6978812345678abcdef0123456789fedcba98765432100fedcba9",
            16,
        )
        .unwrap();
        let x = BigUint::parse_bytes(b"1234567890abcdef1234567890abcdef12345", 16).unwrap();
        for &e in EXPONENTS.iter().chain(&[1, 2, u32::MAX]) {
            assert_eq!(
                pow_small(&x, e, &n),
                x.modpow(&BigUint::from(e), &n),
                "e = {e}"
            );
        }
        // An exponent the oracle does not use is told apart.
        assert_ne!(pow_small(&x, 3, &n), pow_small(&x, 65537, &n));
    }

    #[test]
    fn rejects_wrong_size_and_failing_oracle() {
        let mut rng = rand_core_compat::rng();
        let sk = rsa::RsaPrivateKey::new(&mut rng, 1024).unwrap();
        let pk = sk.to_public_key();
        let wrong = recover(2048, oracle(&pk)).unwrap_err();
        assert_eq!((wrong.rv, wrong.errno()), (CKR_KEY_TYPE_INCONSISTENT, None));
        let failing = |_: &[u8]| -> std::result::Result<Vec<u8>, Errno> { Err(Errno(5)) };
        assert_eq!(recover(2048, failing).unwrap_err().errno(), Some(Errno(5)));
    }

    #[test]
    fn key_id_is_sha1_of_rsapublickey() {
        let p = RsaPublic {
            modulus: vec![0xC3; 128],
            exponent: vec![1, 0, 1],
        };
        let der = p.pkcs1_der();
        assert_eq!(der[0], 0x30);
        assert_eq!(p.key_id(), Sha1::digest(&der).to_vec());
        assert_eq!(p.key_id().len(), 20);
        // The SPKI wraps exactly that RSAPublicKey.
        let spki = p.spki_der();
        assert!(spki.windows(der.len()).any(|w| w == der.as_slice()));
    }

    /// rsa 0.9 wants a rand_core 0.6 RNG; the OS one is enough for tests.
    mod rand_core_compat {
        pub fn rng() -> rsa::rand_core::OsRng {
            rsa::rand_core::OsRng
        }
    }
}
