//! Private key material on its way into the kernel: PKCS#8 from a PKCS#11
//! template or from a fresh generation. The only code of the module that ever
//! holds private key material.
//!
//! The kernel cannot generate keys and only accepts unencrypted PKCS#8, so
//! private key material must pass through this process once, on its way in.
//! Every copy we make lives in a `Zeroizing` buffer (or RustCrypto's
//! `SecretDocument`/`RsaPrivateKey`, which wipe themselves) and is gone when
//! the creating call returns. A full CRT template is encoded as it is, with no
//! arithmetic on the secrets; only a template without primes, or a
//! generation, runs bignum code (RustCrypto `rsa`).

use crate::crypto::pubkey::RsaPublic;
use crate::error::{Error, Result};
use cryptoki_sys::*;
use pkcs1::UintRef;
use pkcs8::der::Encode;
use zeroize::Zeroizing;

/// The RSA private key attributes of a `C_CreateObject` template, borrowed.
#[derive(Default)]
pub struct RsaTemplate<'a> {
    pub modulus: Option<&'a [u8]>,
    pub public_exponent: Option<&'a [u8]>,
    pub private_exponent: Option<&'a [u8]>,
    pub prime1: Option<&'a [u8]>,
    pub prime2: Option<&'a [u8]>,
    pub exponent1: Option<&'a [u8]>,
    pub exponent2: Option<&'a [u8]>,
    pub coefficient: Option<&'a [u8]>,
}

fn uint(b: &[u8]) -> Result<UintRef<'_>> {
    UintRef::new(b).map_err(|_| Error::new(CKR_ATTRIBUTE_VALUE_INVALID))
}

fn wrap_pkcs8(pkcs1_der: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let info = pkcs8::PrivateKeyInfo {
        algorithm: pkcs8::AlgorithmIdentifierRef {
            oid: pkcs8::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1"),
            parameters: Some(pkcs8::der::asn1::AnyRef::NULL),
        },
        private_key: pkcs1_der,
        public_key: None,
    };
    let mut out = Zeroizing::new(Vec::new());
    info.encode_to_vec(&mut out)
        .map_err(|_| Error::new(CKR_GENERAL_ERROR))?;
    Ok(out)
}

impl RsaTemplate<'_> {
    /// The public half, which the caller must always give.
    pub fn public(&self) -> Result<RsaPublic> {
        let strip = |b: &[u8]| b.iter().position(|x| *x != 0).map(|i| b[i..].to_vec());
        let modulus = strip(self.modulus.ok_or(Error::new(CKR_TEMPLATE_INCOMPLETE))?)
            .ok_or(Error::new(CKR_ATTRIBUTE_VALUE_INVALID))?;
        let exponent = strip(
            self.public_exponent
                .ok_or(Error::new(CKR_TEMPLATE_INCOMPLETE))?,
        )
        .ok_or(Error::new(CKR_ATTRIBUTE_VALUE_INVALID))?;
        Ok(RsaPublic { modulus, exponent })
    }

    /// Unencrypted PKCS#8 DER, the only form the kernel loads.
    pub fn pkcs8(&self) -> Result<Zeroizing<Vec<u8>>> {
        let n = self.modulus.ok_or(Error::new(CKR_TEMPLATE_INCOMPLETE))?;
        let e = self
            .public_exponent
            .ok_or(Error::new(CKR_TEMPLATE_INCOMPLETE))?;
        let d = self
            .private_exponent
            .ok_or(Error::new(CKR_TEMPLATE_INCOMPLETE))?;
        if let (Some(p), Some(q), Some(dp), Some(dq), Some(qi)) = (
            self.prime1,
            self.prime2,
            self.exponent1,
            self.exponent2,
            self.coefficient,
        ) {
            let key = pkcs1::RsaPrivateKey {
                modulus: uint(n)?,
                public_exponent: uint(e)?,
                private_exponent: uint(d)?,
                prime1: uint(p)?,
                prime2: uint(q)?,
                exponent1: uint(dp)?,
                exponent2: uint(dq)?,
                coefficient: uint(qi)?,
                other_prime_infos: None,
            };
            let mut inner = Zeroizing::new(Vec::new());
            key.encode_to_vec(&mut inner)
                .map_err(|_| Error::new(CKR_ATTRIBUTE_VALUE_INVALID))?;
            return wrap_pkcs8(&inner);
        }
        // Without the CRT values, let RustCrypto recover the primes. Its
        // recovery subtracts one from n and from d·e unchecked: a zero
        // modulus or private exponent panics there instead of failing.
        use rsa::BigUint;
        if n.iter().all(|b| *b == 0) || d.iter().all(|b| *b == 0) {
            return Err(Error::refused(
                CKR_ATTRIBUTE_VALUE_INVALID,
                "a zero modulus or private exponent",
            ));
        }
        let primes: Vec<BigUint> = match (self.prime1, self.prime2) {
            (Some(p), Some(q)) => vec![BigUint::from_bytes_be(p), BigUint::from_bytes_be(q)],
            _ => Vec::new(),
        };
        let key = rsa::RsaPrivateKey::from_components(
            BigUint::from_bytes_be(n),
            BigUint::from_bytes_be(e),
            BigUint::from_bytes_be(d),
            primes,
        )
        .map_err(|_| {
            Error::refused(
                CKR_TEMPLATE_INCONSISTENT,
                "the private exponent does not fit the modulus and public exponent",
            )
        })?;
        self.agree(&key)?;
        encode_rsa(&key)
    }

    /// Every part the template gives is the key's (a leading zero is an
    /// encoding), where the key was not made from those parts as they are:
    /// PKCS#8 in `CKA_VALUE` beside them, or CRT values the recovery
    /// computed anew. A part that disagrees would otherwise be dropped, and
    /// the public ones would read back as the key's, not as given.
    pub fn agree(&self, key: &rsa::RsaPrivateKey) -> Result<()> {
        use rsa::BigUint;
        use rsa::traits::{PrivateKeyParts, PublicKeyParts};
        let primes = key.primes();
        let crt = key.crt_coefficient();
        let parts: [(Option<&[u8]>, Option<&BigUint>); 8] = [
            (self.modulus, Some(key.n())),
            (self.public_exponent, Some(key.e())),
            (self.private_exponent, Some(key.d())),
            (self.prime1, primes.first()),
            (self.prime2, primes.get(1)),
            (self.exponent1, key.dp()),
            (self.exponent2, key.dq()),
            (self.coefficient, crt.as_ref()),
        ];
        if parts.iter().all(|(given, of)| {
            given.is_none_or(|g| of.is_some_and(|v| BigUint::from_bytes_be(g) == *v))
        }) {
            Ok(())
        } else {
            Err(Error::refused(
                CKR_TEMPLATE_INCONSISTENT,
                "a part of the RSA key given in the template is not the key's",
            ))
        }
    }
}

fn encode_rsa(key: &rsa::RsaPrivateKey) -> Result<Zeroizing<Vec<u8>>> {
    use rsa::pkcs8::EncodePrivateKey;
    let doc = key
        .to_pkcs8_der()
        .map_err(|_| Error::new(CKR_GENERAL_ERROR))?;
    Ok(Zeroizing::new(doc.as_bytes().to_vec()))
}

/// Modulus sizes the kernel's RSA accepts that are worth generating.
pub const GENERATE_BITS: [u32; 3] = [2048, 3072, 4096];

/// A fresh key pair: PKCS#8 for the kernel and the public half.
pub fn generate(bits: u32, exponent: u64) -> Result<(Zeroizing<Vec<u8>>, RsaPublic)> {
    if !GENERATE_BITS.contains(&bits) {
        return Err(Error::refused(
            CKR_KEY_SIZE_RANGE,
            format!("cannot generate a {bits}-bit key: the sizes are 2048, 3072 and 4096"),
        ));
    }
    if exponent < 3 || exponent % 2 == 0 || exponent > u64::from(u32::MAX) {
        return Err(Error::refused(
            CKR_ATTRIBUTE_VALUE_INVALID,
            format!("public exponent {exponent}: it must be odd, at least 3 and fit 32 bits"),
        ));
    }
    // A fuzzer's own keys (see `kernel::mock::install_generator`), past the
    // same checks.
    #[cfg(feature = "mock")]
    if let Some(pool) = crate::kernel::mock::GENERATOR.get() {
        return generated(&pool(bits, exponent).ok_or(Error::new(CKR_FUNCTION_FAILED))?);
    }
    let key = rsa::RsaPrivateKey::new_with_exp(
        &mut *keygen_rng(),
        bits as usize,
        &rsa::BigUint::from(exponent),
    )
    .map_err(|_| Error::new(CKR_FUNCTION_FAILED))?;
    generated(&key)
}

/// The randomness of new keys: the kernel's.
#[cfg(not(feature = "test-hooks"))]
fn keygen_rng() -> Box<rsa::rand_core::OsRng> {
    Box::new(rsa::rand_core::OsRng)
}

// A test-only build (tests/memory.rs) seeds key generation from
// KEYRING_PKCS11_TEST_KEYGEN_SEED (64 hex digits), so the test can derive the
// same key and search memory for its secrets without ever holding them in
// the process it scans. Never in a release build.
#[cfg(all(feature = "test-hooks", not(debug_assertions)))]
compile_error!("the test-hooks feature makes generated keys predictable: debug builds only");

#[cfg(feature = "test-hooks")]
fn keygen_rng() -> Box<dyn rsa::rand_core::CryptoRngCore> {
    use rand_chacha::rand_core::SeedableRng;
    let Ok(hex) = std::env::var("KEYRING_PKCS11_TEST_KEYGEN_SEED") else {
        return Box::new(rsa::rand_core::OsRng);
    };
    let mut seed = [0u8; 32];
    for (i, b) in seed.iter_mut().enumerate() {
        *b = hex
            .get(2 * i..2 * i + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .expect("KEYRING_PKCS11_TEST_KEYGEN_SEED: 64 hex digits");
    }
    Box::new(rand_chacha::ChaCha20Rng::from_seed(seed))
}

fn generated(key: &rsa::RsaPrivateKey) -> Result<(Zeroizing<Vec<u8>>, RsaPublic)> {
    use rsa::traits::PublicKeyParts;
    let public = RsaPublic {
        modulus: key.n().to_bytes_be(),
        exponent: key.e().to_bytes_be(),
    };
    Ok((encode_rsa(key)?, public))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::pkcs8::DecodePrivateKey;
    use rsa::traits::{PrivateKeyParts, PublicKeyParts};
    /// Found by the fuzzer (fuzz/corpus/ffi holds the input): n/e/d with a
    /// zero modulus (or private exponent) panicked in RustCrypto's prime
    /// recovery, and C_CreateObject answered CKR_GENERAL_ERROR. Seen to
    /// fail (panic) without the check in `pkcs8`.
    #[test]
    fn zero_modulus_or_exponent_is_invalid_not_a_panic() {
        let k = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1024).unwrap();
        let (n, e, d) = (
            k.n().to_bytes_be(),
            k.e().to_bytes_be(),
            k.d().to_bytes_be(),
        );
        let zero = [0u8; 4];
        for (n, d) in [
            (&zero[..], &d[..]),
            (&n[..], &zero[..]),
            (&[0u8][..], &[0u8][..]),
        ] {
            let t = RsaTemplate {
                modulus: Some(n),
                public_exponent: Some(&e),
                private_exponent: Some(d),
                ..Default::default()
            };
            assert_eq!(
                t.pkcs8().err().map(|e| e.rv),
                Some(CKR_ATTRIBUTE_VALUE_INVALID)
            );
        }
    }

    #[test]
    fn full_template_encodes_without_arithmetic_and_round_trips() {
        let k = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1024).unwrap();
        let b = |x: &rsa::BigUint| x.to_bytes_be();
        let (n, e, d, p, q) = (
            b(k.n()),
            b(k.e()),
            b(k.d()),
            b(&k.primes()[0]),
            b(&k.primes()[1]),
        );
        let (dp, dq) = (b(k.dp().unwrap()), b(k.dq().unwrap()));
        let qi = k.qinv().unwrap().to_biguint().unwrap().to_bytes_be();
        let t = RsaTemplate {
            modulus: Some(&n),
            public_exponent: Some(&e),
            private_exponent: Some(&d),
            prime1: Some(&p),
            prime2: Some(&q),
            exponent1: Some(&dp),
            exponent2: Some(&dq),
            coefficient: Some(&qi),
        };
        let der = t.pkcs8().unwrap();
        assert_eq!(rsa::RsaPrivateKey::from_pkcs8_der(&der).unwrap(), k);
        // Without CRT values the primes are recovered.
        let short = RsaTemplate {
            modulus: Some(&n),
            public_exponent: Some(&e),
            private_exponent: Some(&d),
            ..Default::default()
        };
        assert_eq!(
            rsa::RsaPrivateKey::from_pkcs8_der(&short.pkcs8().unwrap())
                .unwrap()
                .n(),
            k.n()
        );
        assert_eq!(t.public().unwrap().modulus, n);
        let none = RsaTemplate {
            modulus: Some(&n),
            ..Default::default()
        };
        assert_eq!(
            none.pkcs8().err().map(|e| e.rv),
            Some(CKR_TEMPLATE_INCOMPLETE)
        );
    }

    /// A partial set of CRT values is not encoded (the key is recovered
    /// from n/e/d and the primes): each value given must still be the
    /// key's. Seen to fail before `agree` was called here: a wrong
    /// CKA_EXPONENT_1 beside n/e/d was dropped and the key stored.
    #[test]
    fn parts_beside_a_recovered_key_must_be_its_own() {
        let k = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1024).unwrap();
        let b = |x: &rsa::BigUint| x.to_bytes_be();
        let (n, e, d, p, q) = (
            b(k.n()),
            b(k.e()),
            b(k.d()),
            b(&k.primes()[0]),
            b(&k.primes()[1]),
        );
        let dp = b(k.dp().unwrap());
        let mut wrong = dp.clone();
        wrong[0] ^= 1;
        let t = |dp: &[u8]| {
            RsaTemplate {
                modulus: Some(&n),
                public_exponent: Some(&e),
                private_exponent: Some(&d),
                prime1: Some(&p),
                prime2: Some(&q),
                exponent1: Some(dp),
                ..Default::default()
            }
            .pkcs8()
            .map(|_| ())
            .map_err(|e| e.rv)
        };
        assert_eq!(t(&dp), Ok(()));
        assert_eq!(t(&wrong), Err(CKR_TEMPLATE_INCONSISTENT));
    }

    #[test]
    fn generation_sizes() {
        assert_eq!(
            generate(1024, 65537).err().map(|e| e.rv),
            Some(CKR_KEY_SIZE_RANGE)
        );
        assert_eq!(
            generate(2048, 4).err().map(|e| e.rv),
            Some(CKR_ATTRIBUTE_VALUE_INVALID)
        );
    }
}
