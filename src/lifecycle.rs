//! Making keys for the kernel: PKCS#8 from a PKCS#11 template or from a fresh
//! generation, and the small metadata record kept beside a key.
//!
//! The kernel cannot generate keys and only accepts unencrypted PKCS#8, so
//! private key material must pass through this process once, on its way in.
//! Every copy we make lives in a `Zeroizing` buffer (or RustCrypto's
//! `SecretDocument`/`RsaPrivateKey`, which wipe themselves) and is gone when
//! the creating call returns. A full CRT template is encoded as it is, with no
//! arithmetic on the secrets; only a template without primes, or a
//! generation, runs bignum code (RustCrypto `rsa`).

use crate::pubkey::RsaPublic;
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

fn uint(b: &[u8]) -> Result<UintRef<'_>, CK_RV> {
    UintRef::new(b).map_err(|_| CKR_ATTRIBUTE_VALUE_INVALID)
}

fn wrap_pkcs8(pkcs1_der: &[u8]) -> Result<Zeroizing<Vec<u8>>, CK_RV> {
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
        .map_err(|_| CKR_GENERAL_ERROR)?;
    Ok(out)
}

impl RsaTemplate<'_> {
    /// The public half, which the caller must always give.
    pub fn public(&self) -> Result<RsaPublic, CK_RV> {
        let strip = |b: &[u8]| b.iter().position(|x| *x != 0).map(|i| b[i..].to_vec());
        let modulus = strip(self.modulus.ok_or(CKR_TEMPLATE_INCOMPLETE)?)
            .ok_or(CKR_ATTRIBUTE_VALUE_INVALID)?;
        let exponent = strip(self.public_exponent.ok_or(CKR_TEMPLATE_INCOMPLETE)?)
            .ok_or(CKR_ATTRIBUTE_VALUE_INVALID)?;
        Ok(RsaPublic { modulus, exponent })
    }

    /// Unencrypted PKCS#8 DER, the only form the kernel loads.
    pub fn pkcs8(&self) -> Result<Zeroizing<Vec<u8>>, CK_RV> {
        let n = self.modulus.ok_or(CKR_TEMPLATE_INCOMPLETE)?;
        let e = self.public_exponent.ok_or(CKR_TEMPLATE_INCOMPLETE)?;
        let d = self.private_exponent.ok_or(CKR_TEMPLATE_INCOMPLETE)?;
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
                .map_err(|_| CKR_ATTRIBUTE_VALUE_INVALID)?;
            return wrap_pkcs8(&inner);
        }
        // Without the CRT values, let RustCrypto recover the primes.
        use rsa::BigUint;
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
        .map_err(|_| CKR_TEMPLATE_INCONSISTENT)?;
        encode_rsa(&key)
    }
}

fn encode_rsa(key: &rsa::RsaPrivateKey) -> Result<Zeroizing<Vec<u8>>, CK_RV> {
    use rsa::pkcs8::EncodePrivateKey;
    let doc = key.to_pkcs8_der().map_err(|_| CKR_GENERAL_ERROR)?;
    Ok(Zeroizing::new(doc.as_bytes().to_vec()))
}

/// Modulus sizes the kernel's RSA accepts that are worth generating.
pub const GENERATE_BITS: [u32; 3] = [2048, 3072, 4096];

/// A fresh key pair: PKCS#8 for the kernel and the public half.
pub fn generate(bits: u32, exponent: u64) -> Result<(Zeroizing<Vec<u8>>, RsaPublic), CK_RV> {
    use rsa::traits::PublicKeyParts;
    if !GENERATE_BITS.contains(&bits) {
        return Err(CKR_KEY_SIZE_RANGE);
    }
    if exponent < 3 || exponent % 2 == 0 || exponent > u64::from(u32::MAX) {
        return Err(CKR_ATTRIBUTE_VALUE_INVALID);
    }
    let key = rsa::RsaPrivateKey::new_with_exp(
        &mut *keygen_rng(),
        bits as usize,
        &rsa::BigUint::from(exponent),
    )
    .map_err(|_| CKR_FUNCTION_FAILED)?;
    let public = RsaPublic {
        modulus: key.n().to_bytes_be(),
        exponent: key.e().to_bytes_be(),
    };
    Ok((encode_rsa(&key)?, public))
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

/// What we remember beside a kernel key, in a `user` key of the same keyring
/// (so it has the key's lifetime and the kernel's permissions): a `CKA_ID`
/// chosen by the application, and whether the key was generated here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    pub id: Option<Vec<u8>>,
    pub local: bool,
}

/// Metadata keys are named after the key's public-key ID, which every
/// process derives the same way.
pub const META_PREFIX: &str = "keyring-pkcs11:";

pub fn meta_description(derived_id: &[u8]) -> String {
    format!("{META_PREFIX}{}", hex(derived_id))
}

pub fn hex(b: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(2 * b.len());
    for x in b {
        s.push(DIGITS[usize::from(x >> 4)] as char);
        s.push(DIGITS[usize::from(x & 15)] as char);
    }
    s
}

pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Meta {
    /// A line-based text record, readable with `keyctl print`.
    pub fn encode(&self) -> Vec<u8> {
        let mut s = String::from("keyring-pkcs11 1\n");
        if let Some(id) = &self.id {
            s.push_str(&format!("id={}\n", hex(id)));
        }
        if self.local {
            s.push_str("local=1\n");
        }
        s.into_bytes()
    }

    pub fn decode(b: &[u8]) -> Option<Meta> {
        let text = std::str::from_utf8(b).ok()?;
        let mut lines = text.lines();
        if lines.next()? != "keyring-pkcs11 1" {
            return None;
        }
        let mut m = Meta::default();
        for l in lines {
            match l.split_once('=') {
                Some(("id", v)) => m.id = Some(unhex(v)?),
                Some(("local", v)) => m.local = v == "1",
                _ => {}
            }
        }
        Some(m)
    }
}

/// A certificate stored beside the keys, in a `user` key of the token's
/// keyring: a short text header (label, id) then the DER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRecord {
    pub label: String,
    pub id: Vec<u8>,
    pub der: Vec<u8>,
}

pub const CERT_PREFIX: &str = "keyring-pkcs11:cert:";
const CERT_MAGIC: &str = "keyring-pkcs11-cert 1\n";

impl CertRecord {
    /// Named after the certificate's SHA-1, so the same certificate is
    /// stored once per keyring.
    pub fn description(&self) -> String {
        use sha1::Digest;
        format!("{CERT_PREFIX}{}", hex(&sha1::Sha1::digest(&self.der)))
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = format!(
            "{CERT_MAGIC}label={}\nid={}\n\n",
            hex(self.label.as_bytes()),
            hex(&self.id)
        )
        .into_bytes();
        out.extend_from_slice(&self.der);
        out
    }

    pub fn decode(b: &[u8]) -> Option<CertRecord> {
        let rest = b.strip_prefix(CERT_MAGIC.as_bytes())?;
        let split = rest.windows(2).position(|w| w == b"\n\n")?;
        let head = std::str::from_utf8(&rest[..split]).ok()?;
        let mut r = CertRecord {
            label: String::new(),
            id: Vec::new(),
            der: rest[split + 2..].to_vec(),
        };
        for l in head.lines() {
            match l.split_once('=') {
                Some(("label", v)) => r.label = String::from_utf8(unhex(v)?).ok()?,
                Some(("id", v)) => r.id = unhex(v)?,
                _ => {}
            }
        }
        Some(r)
    }
}

/// Why an `add_key` hit EDQUOT and how to get out of it: which of the
/// caller's two key quotas is full (from `/proc/key-users`) and the sysctl
/// that raises it. Shared by the module's log and the CLI's error message, so
/// both name the same knob.
pub fn quota_hints() -> Vec<String> {
    let text = std::fs::read_to_string("/proc/key-users").unwrap_or_default();
    quota_hints_for(crate::keyctl::uid(), &text)
}

/// `quota_hints` over a given `/proc/key-users` text.
pub fn quota_hints_for(uid: u32, key_users: &str) -> Vec<String> {
    // Root has quotas of its own, under other names.
    let (keys_sysctl, bytes_sysctl) = if uid == 0 {
        ("root_maxkeys", "root_maxbytes")
    } else {
        ("maxkeys", "maxbytes")
    };
    // "  uid: usage nkeys/nikeys qnkeys/maxkeys qnbytes/maxbytes"
    let fields: Option<Vec<(u64, u64)>> = key_users
        .lines()
        .find(|l| l.split(':').next().map(str::trim) == Some(&uid.to_string()))
        .and_then(|l| {
            l.split_once(':')?
                .1
                .split_whitespace()
                .skip(1)
                .map(|f| {
                    let (a, b) = f.split_once('/')?;
                    Some((a.parse().ok()?, b.parse().ok()?))
                })
                .collect()
        });
    let mut hints = Vec::new();
    let raise = |name: &str, now: u64| {
        format!(
            "raise it (as root): sysctl -w kernel.keys.{name}={}  (to keep it: a file in /etc/sysctl.d/)",
            (now * 2).max(1)
        )
    };
    match fields.as_deref() {
        Some([_, (qnkeys, maxkeys), (qnbytes, maxbytes)]) => {
            if qnkeys >= maxkeys {
                hints.push(format!(
                    "uid {uid} owns {qnkeys} keys and kernel.keys.{keys_sysctl} allows {maxkeys}: the number-of-keys quota is exhausted"
                ));
                hints.push(raise(keys_sysctl, *maxkeys));
            } else {
                hints.push(format!(
                    "uid {uid} uses {qnbytes} bytes for keys and kernel.keys.{bytes_sysctl} allows {maxbytes}: the key-bytes quota is exhausted"
                ));
                hints.push(raise(bytes_sysctl, *maxbytes));
            }
        }
        _ => hints.push(format!(
            "see /proc/key-users; raise kernel.keys.{keys_sysctl} or kernel.keys.{bytes_sysctl} with sysctl (as root)"
        )),
    }
    hints.push(
        "or free some: keyctl show @u lists your keys; keyctl unlink ID @u removes one".into(),
    );
    hints
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::pkcs8::DecodePrivateKey;
    use rsa::traits::{PrivateKeyParts, PublicKeyParts};

    #[test]
    fn quota_hints_name_the_full_quota_and_its_sysctl() {
        let text = "    0:    20 19/19 19/1000000 2000/25000000\n 1001:     5 200/200 200/200 3000/20000\n 1002:     2 3/3 3/200 19990/20000\n";
        let keys = quota_hints_for(1001, text);
        assert!(
            keys[0].contains("owns 200 keys and kernel.keys.maxkeys allows 200"),
            "{keys:?}"
        );
        assert!(
            keys[1].contains("sysctl -w kernel.keys.maxkeys=400"),
            "{keys:?}"
        );
        let bytes = quota_hints_for(1002, text);
        assert!(
            bytes[0].contains("kernel.keys.maxbytes allows 20000"),
            "{bytes:?}"
        );
        assert!(
            bytes[1].contains("sysctl -w kernel.keys.maxbytes=40000"),
            "{bytes:?}"
        );
        let root = quota_hints_for(0, "    0:    20 19/19 1000000/1000000 2000/25000000\n");
        assert!(root[1].contains("kernel.keys.root_maxkeys="), "{root:?}");
        // Unreadable or unknown: both knobs are named.
        let none = quota_hints_for(1003, text);
        assert!(
            none[0].contains("kernel.keys.maxkeys or kernel.keys.maxbytes"),
            "{none:?}"
        );
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
        assert_eq!(none.pkcs8().err(), Some(CKR_TEMPLATE_INCOMPLETE));
    }

    #[test]
    fn generation_sizes_and_metadata() {
        assert_eq!(generate(1024, 65537).err(), Some(CKR_KEY_SIZE_RANGE));
        assert_eq!(generate(2048, 4).err(), Some(CKR_ATTRIBUTE_VALUE_INVALID));
        let m = Meta {
            id: Some(vec![1, 0xab]),
            local: true,
        };
        assert_eq!(Meta::decode(&m.encode()), Some(m));
        assert_eq!(Meta::decode(b"something else"), None);
        assert_eq!(meta_description(&[0xde, 0xad]), "keyring-pkcs11:dead");
        let all: Vec<u8> = (0..=255).collect();
        let want: String = all.iter().map(|x| format!("{x:02x}")).collect();
        assert_eq!(hex(&all), want);
        assert_eq!(unhex(&want), Some(all));
        assert_eq!(hex(&[]), "");
        let c = CertRecord {
            label: "web cert".into(),
            id: vec![1, 2],
            der: vec![0x30, 0x0a, 0x0a, 0x00],
        };
        assert_eq!(CertRecord::decode(&c.encode()), Some(c.clone()));
        assert!(c.description().starts_with(CERT_PREFIX));
    }
}
