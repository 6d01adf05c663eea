//! Implicit rejection for PKCS#1 v1.5 decryption, as in "Implementation
//! Guidance for the PKCS #1 RSA Cryptography Specification"
//! (draft-kario-rsa-guidance, now draft-irtf-cfrg-rsa-guidance) and OpenSSL
//! 3.2+: a ciphertext whose padding is bad decrypts, without any error, to a
//! synthetic message that only the key's holder can compute, so neither the
//! return code nor the output tells a Bleichenbacher attacker whether the
//! padding was good.
//!
//! The draft keys its derivation with SHA-256 of the private exponent. The
//! module never has d, so the key here is SHA-256 of a private operation on a
//! fixed input, x0^d mod n ([`fixed_input`], [`derive_key`]). That value is
//!
//! - secret from whoever cannot use the key: computing an e-th root of a
//!   pseudo-random x0 is the RSA problem (x0 is a full-domain hash of n, so
//!   nobody knows an x with x^e = x0);
//! - deterministic: the same for the same key in every process, every kernel
//!   and after every reboot, which implicit rejection needs (two processes
//!   answering the same bad ciphertext differently would reveal that it was
//!   bad);
//! - never an output of this key elsewhere: x0 is the hash of a label of our
//!   own and n, so it is neither a PKCS#1 v1.5 nor a PSS signature block (that
//!   would take a hash preimage), and no signature the key makes, public
//!   as signatures are, equals x0^d.
//!
//! Whoever can use the key can compute x0^d too (raw RSA), but can also
//! decrypt any ciphertext outright: the secret only has to hold against
//! those who cannot. From the key-derivation key on, everything is the
//! draft's, checked against its known answers below.

use super::padding::{self, Invalid};
use hmac::{Hmac, Mac};
use num_bigint::BigUint;
use sha2::{Digest, Sha256};
use std::sync::OnceLock;
use subtle::{ConditionallySelectable, ConstantTimeLess};
use zeroize::Zeroizing;

/// The 32-byte key of the key-derivation HMAC (the draft's SHA-256 of d).
pub type RejectionKey = Zeroizing<[u8; 32]>;

/// Domain separation for [`fixed_input`]; a new derivation gets a new label.
const FIXED_INPUT_LABEL: &[u8] = b"keyring-pkcs11 PKCS#1 v1.5 implicit rejection v1";

/// The input x0 of the private operation behind a key's [`RejectionKey`]:
/// k bytes of MGF1-SHA-256 over the label and I2OSP(n, k), with the bits at
/// and above bit `bits - 1` cleared (so x0 < n) and bit `bits - 2` set (so x0
/// is not 0 or 1, whose roots are themselves).
pub fn fixed_input(n: &BigUint, bits: u32, k: usize) -> Vec<u8> {
    let n_bytes = n.to_bytes_be();
    let mut seed = FIXED_INPUT_LABEL.to_vec();
    seed.extend(std::iter::repeat_n(0u8, k.saturating_sub(n_bytes.len())));
    seed.extend_from_slice(&n_bytes);
    let mut x = Vec::with_capacity(k + 32);
    for counter in 0u32.. {
        if x.len() >= k {
            break;
        }
        let mut h = Sha256::new();
        h.update(&seed);
        h.update(counter.to_be_bytes());
        x.extend_from_slice(&h.finalize());
    }
    x.truncate(k);
    // Bit i of the number is bit i % 8 of byte k - 1 - i / 8.
    let bits = bits as usize;
    for i in bits - 1..8 * k {
        x[k - 1 - i / 8] &= !(1u8 << (i % 8));
    }
    x[k - 1 - (bits - 2) / 8] |= 1u8 << ((bits - 2) % 8);
    x
}

/// The key-derivation key from the private operation's result (k bytes):
/// SHA-256 of it, as the draft hashes I2OSP(d, k).
pub fn derive_key(private_result: &[u8]) -> RejectionKey {
    Zeroizing::new(Sha256::digest(private_result).into())
}

/// A key's [`RejectionKey`], computed at the first PKCS#1 v1.5 decryption
/// with that key in this process and kept with what the module knows about
/// the key (`operation::RsaKey::rejection`), wiped when that is dropped. It never appears
/// in `Debug` output, so it cannot reach a log.
#[derive(Clone, Default)]
pub struct RejectionCell(OnceLock<RejectionKey>);

impl RejectionCell {
    pub fn get(&self) -> Option<&[u8; 32]> {
        self.0.get().map(|k| &**k)
    }

    /// Keeps `key` unless another thread got there first; either way, the
    /// value kept (both derive from the same key, so they are equal).
    pub fn get_or_set(&self, key: RejectionKey) -> &[u8; 32] {
        let _ = self.0.set(key);
        self.0.get().expect("set above")
    }
}

impl std::fmt::Debug for RejectionCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = if self.0.get().is_some() {
            "derived"
        } else {
            "not yet derived"
        };
        write!(f, "RejectionCell({state})")
    }
}

/// A function of the key: two views of one key are equal whatever the cell
/// holds.
impl PartialEq for RejectionCell {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for RejectionCell {}

type HmacSha256 = Hmac<Sha256>;

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Zeroizing<[u8; 32]> {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    for p in parts {
        m.update(p);
    }
    Zeroizing::new(m.finalize().into_bytes().into())
}

/// The draft's PRF: HMAC-SHA-256(kdk, I2OSP(i, 2) || label || I2OSP(bits, 2))
/// for i = 0, 1, …, concatenated and cut to `len` bytes (`len * 8` < 2^16).
fn prf(kdk: &[u8; 32], label: &[u8], len: usize) -> Zeroizing<Vec<u8>> {
    let bits = u16::try_from(len * 8).expect("checked by the caller");
    let mut out = Zeroizing::new(Vec::with_capacity(len.next_multiple_of(32)));
    for i in 0..len.div_ceil(32) {
        let i = u16::try_from(i).expect("fewer than 2^16 blocks");
        out.extend_from_slice(&*hmac_sha256(
            kdk,
            &[&i.to_be_bytes(), label, &bits.to_be_bytes()],
        ));
    }
    out.truncate(len);
    out
}

/// How many 16-bit length candidates the PRF gives.
const LENGTH_CANDIDATES: usize = 128;

/// EME-PKCS1-v1_5 decoding with implicit rejection: `em` is the private
/// operation's k-byte result for `ciphertext` (k bytes). A good block gives
/// its message; any other gives the synthetic message for this ciphertext
/// and key, of a length in 0..=k-11 as a real message's. Which of the two is
/// chosen and copied in constant time (`subtle`): every byte of both is read.
/// Fails only for what is public: a key too small for PKCS#1 v1.5 or too
/// large for the PRF, or a ciphertext that is not k bytes.
pub fn decode(em: &[u8], ciphertext: &[u8], key: &[u8; 32]) -> Result<Zeroizing<Vec<u8>>, Invalid> {
    let k = em.len();
    if k < 11 || k * 8 > usize::from(u16::MAX) || ciphertext.len() != k {
        return Err(Invalid);
    }
    let kdk = hmac_sha256(key, &[ciphertext]);
    let synthetic = prf(&kdk, b"message", k);
    let candidates = prf(&kdk, b"length", 2 * LENGTH_CANDIDATES);
    // The last candidate below k - 10 after masking to its bit length is the
    // synthetic message's length; none (probability 2^-128) leaves 0.
    let max_sep_offset = u16::try_from(k - 10).expect("k * 8 fits 16 bits");
    let mask = u16::MAX >> max_sep_offset.leading_zeros();
    let mut synthetic_len = 0u16;
    for c in candidates.chunks_exact(2) {
        let candidate = u16::from_be_bytes([c[0], c[1]]) & mask;
        synthetic_len.conditional_assign(&candidate, candidate.ct_lt(&max_sep_offset));
    }
    let (good, msg_start) = padding::pkcs1_dec_verdict(em);
    let synthetic_start = (k - usize::from(synthetic_len)) as u32;
    // Neither the length nor where the message starts says which one it is:
    // a real message can have any length in the same range.
    let start = u32::conditional_select(&synthetic_start, &msg_start, good) as usize;
    let mut out = Zeroizing::new(vec![0u8; k - start]);
    for (o, (real, fake)) in out
        .iter_mut()
        .zip(em[start..].iter().zip(&synthetic[start..]))
    {
        *o = u8::conditional_select(fake, real, good);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::pkcs8::DecodePrivateKey;
    use rsa::traits::{PrivateKeyParts, PublicKeyParts};
    use rsa::{Pkcs1v15Encrypt, RsaPrivateKey};

    /// m^d mod n as k bytes.
    fn private_raw(key: &RsaPrivateKey, c: &[u8]) -> Vec<u8> {
        let v = rsa::BigUint::from_bytes_be(c)
            .modpow(key.d(), key.n())
            .to_bytes_be();
        [vec![0u8; key.size() - v.len()], v].concat()
    }

    /// The draft's key-derivation key: SHA-256(I2OSP(d, k)).
    fn draft_key(key: &RsaPrivateKey) -> RejectionKey {
        let d = key.d().to_bytes_be();
        derive_key(&[vec![0u8; key.size() - d.len()], d].concat())
    }

    /// The module's: SHA-256(I2OSP(x0^d mod n, k)).
    fn module_key(key: &RsaPrivateKey) -> RejectionKey {
        let n = BigUint::from_bytes_be(&key.n().to_bytes_be());
        let x0 = fixed_input(&n, key.n().bits() as u32, key.size());
        derive_key(&private_raw(key, &x0))
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    struct Vector {
        name: String,
        ciphertext: Vec<u8>,
        message: Vec<u8>,
    }

    /// The keys and vectors of `testdata/implicit-rejection.txt`.
    fn vectors() -> Vec<(usize, RsaPrivateKey, Vec<Vector>)> {
        let text = include_str!("testdata/implicit-rejection.txt");
        let mut out: Vec<(usize, RsaPrivateKey, Vec<Vector>)> = Vec::new();
        let mut lines = text.lines().filter(|l| !l.starts_with('#'));
        while let Some(line) = lines.next() {
            if let Some(bits) = line.strip_prefix("key ") {
                let pem: Vec<&str> = lines
                    .by_ref()
                    .take_while(|l| *l != "-----END PRIVATE KEY-----")
                    .collect();
                let pem = format!("{}\n-----END PRIVATE KEY-----\n", pem.join("\n"));
                let key = RsaPrivateKey::from_pkcs8_pem(&pem).expect("vector key");
                out.push((bits.parse().unwrap(), key, Vec::new()));
            } else if let Some(name) = line.strip_prefix("vector ") {
                let ct = lines.next().unwrap().strip_prefix("ct ").unwrap();
                let msg = lines.next().unwrap().strip_prefix("msg").unwrap().trim();
                out.last_mut().unwrap().2.push(Vector {
                    name: name.to_string(),
                    ciphertext: hex(ct),
                    message: hex(msg),
                });
            }
        }
        out
    }

    /// Everything from the key-derivation key on is the draft's: fed the
    /// draft's key (from d), the decoder gives every known answer.
    #[test]
    fn the_drafts_vectors() {
        let all = vectors();
        assert_eq!(
            all.iter()
                .map(|(b, _, v)| (*b, v.len()))
                .collect::<Vec<_>>(),
            [(2048, 22), (2049, 15), (3072, 16), (4096, 14)]
        );
        let mut synthetic = 0;
        for (bits, key, vs) in &all {
            assert_eq!(key.n().bits(), *bits);
            let k = key.size();
            let dk = draft_key(key);
            for v in vs {
                // A short ciphertext is the same number: left-pad it.
                let c = [vec![0u8; k - v.ciphertext.len()], v.ciphertext.clone()].concat();
                let em = private_raw(key, &c);
                let got = decode(&em, &c, &dk).unwrap();
                assert_eq!(*got, v.message, "{bits}-bit {}", v.name);
                if padding::pkcs1_dec_block(&em).is_err() {
                    synthetic += 1;
                }
            }
        }
        // Most vectors are bad ciphertexts: the synthetic path is what is
        // being checked, not only the real one.
        assert!(synthetic >= 40, "{synthetic} synthetic answers");
    }

    #[test]
    fn deterministic_per_key_and_ciphertext() {
        let (_, key, _) = &vectors()[0];
        let (_, again, _) = &vectors()[0];
        let k = key.size();
        // The same key, read again (another process, another kernel key of
        // the same material), derives the same secret.
        let mk = module_key(key);
        assert_eq!(*mk, *module_key(again));
        assert_ne!(*mk, *draft_key(key), "x0^d is not d");
        let garbage = vec![0x11u8; k];
        let em = private_raw(key, &garbage);
        assert!(padding::pkcs1_dec_block(&em).is_err());
        let one = decode(&em, &garbage, &mk).unwrap();
        assert_eq!(*one, *decode(&em, &garbage, &module_key(again)).unwrap());
        assert!(one.len() <= k - 11);
        // Another secret, another message; another ciphertext too.
        let mut other_key = *mk;
        other_key[0] ^= 1;
        assert_ne!(*one, *decode(&em, &garbage, &other_key).unwrap());
        let mut c2 = garbage.clone();
        c2[k - 1] = 0x12;
        let em2 = private_raw(key, &c2);
        assert_ne!(*one, *decode(&em2, &c2, &mk).unwrap());
    }

    #[test]
    fn good_ciphertexts_still_decrypt_and_bad_lengths_are_plausible() {
        let mut rng = rsa::rand_core::OsRng;
        let key = RsaPrivateKey::new(&mut rng, 1031).unwrap();
        let k = key.size();
        let mk = module_key(&key);
        for msg in [&b""[..], b"x", b"forty two", &[0x5a; 118]] {
            let c = key
                .to_public_key()
                .encrypt(&mut rng, Pkcs1v15Encrypt, msg)
                .unwrap();
            assert_eq!(*decode(&private_raw(&key, &c), &c, &mk).unwrap(), msg);
        }
        // Bad blocks of every kind: lengths fall anywhere in 0..=k-11, and
        // the same bad ciphertext always gives the same message.
        let mut lengths = std::collections::BTreeSet::new();
        for i in 0..200u32 {
            let mut c = vec![0u8; k];
            c[1..5].copy_from_slice(&i.to_be_bytes());
            c[k - 1] = 7;
            let em = private_raw(&key, &c);
            if padding::pkcs1_dec_block(&em).is_ok() {
                continue;
            }
            let m = decode(&em, &c, &mk).unwrap();
            assert!(m.len() <= k - 11);
            assert_eq!(*m, *decode(&em, &c, &mk).unwrap());
            lengths.insert(m.len());
        }
        // About 97 of the 120 possible lengths are expected in 200 draws.
        assert!(lengths.len() > 60, "{} distinct lengths", lengths.len());
        assert!(*lengths.first().unwrap() < 20 && *lengths.last().unwrap() > k - 31);
        // What is public fails: a ciphertext of the wrong length.
        assert_eq!(decode(&[0u8; 129], &[0u8; 128], &mk), Err(Invalid));
        assert_eq!(decode(&[0u8; 10], &[0u8; 10], &mk), Err(Invalid));
    }

    #[test]
    fn the_fixed_input_is_below_n_and_depends_on_n() {
        let mut rng = rsa::rand_core::OsRng;
        for bits in [1031usize, 1032, 1033] {
            let key = RsaPrivateKey::new(&mut rng, bits).unwrap();
            let n = BigUint::from_bytes_be(&key.n().to_bytes_be());
            let k = key.size();
            let x0 = fixed_input(&n, bits as u32, k);
            assert_eq!(x0.len(), k);
            let x = BigUint::from_bytes_be(&x0);
            assert!(x < n);
            assert_eq!(x.bits() as usize, bits - 1, "bit bits-2 is set");
            assert_eq!(x0, fixed_input(&n, bits as u32, k));
            let n2 = &n + 2u32;
            assert_ne!(x0, fixed_input(&n2, bits as u32, k));
            // Not a PKCS#1 v1.5 signature block, whose e-th root the key
            // would hand out to anyone asking for a signature.
            assert!(padding::pkcs1_sig_unblock(&x0).is_err());
        }
    }

    #[test]
    fn the_secret_never_reaches_debug_output() {
        let cell = RejectionCell::default();
        assert_eq!(format!("{cell:?}"), "RejectionCell(not yet derived)");
        let kept = *cell.get_or_set(Zeroizing::new([0xab; 32]));
        assert_eq!(kept, [0xab; 32]);
        // A second derivation racing the first keeps the first.
        assert_eq!(*cell.get_or_set(Zeroizing::new([0xcd; 32])), [0xab; 32]);
        let shown = format!("{cell:?}");
        assert_eq!(shown, "RejectionCell(derived)");
        assert!(!shown.to_lowercase().contains("ab"));
    }
}
