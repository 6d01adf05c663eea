//! RSA encodings from RFC 8017 that the kernel does not do: EMSA-PSS for
//! signatures and EME-OAEP / EME-PKCS1-v1_5 for decryption, plus the PKCS#1
//! v1.5 signature encoding for verification in userspace.
//!
//! The kernel signs PKCS#1 v1.5 itself; everything else is the raw private
//! operation (`KEYCTL_PKEY_DECRYPT enc=raw`) with the encoding done here.
//! Decoding a decrypted block must not become a padding oracle: both decoders
//! examine every byte whatever they find and fold all checks into one flag
//! with `subtle`. OAEP then fails with one indistinguishable error; PKCS#1
//! v1.5 does not fail at all (implicit rejection, `rejection`).
//!
//! These functions are cross-checked against RustCrypto `rsa` in the tests
//! below (our encodings verify/decrypt there and theirs here).

use crate::hash::Hash;
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq, ConstantTimeGreater};

/// Any decoding failure; deliberately carries no detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invalid;

/// MGF1 (RFC 8017 B.2.1) XORed into `out`.
fn mgf1_xor(out: &mut [u8], hash: Hash, seed: &[u8]) {
    for (counter, chunk) in (0u32..).zip(out.chunks_mut(hash.digest_len())) {
        let mut h = hash.hasher();
        h.update(seed);
        h.update(&counter.to_be_bytes());
        for (o, m) in chunk.iter_mut().zip(h.finish()) {
            *o ^= m;
        }
    }
}

/// Largest PSS salt for a key of `mod_bits` bits: emLen − hLen − 2.
pub fn pss_max_salt(mod_bits: u32, hash: Hash) -> Option<usize> {
    let em_len = (mod_bits as usize - 1).div_ceil(8);
    em_len.checked_sub(hash.digest_len() + 2)
}

/// EMSA-PSS-ENCODE (RFC 8017 9.1.1), returned as a `k`-byte block (with a
/// leading zero byte when emLen < k) ready for the raw private operation.
pub fn pss_encode(
    m_hash: &[u8],
    mod_bits: u32,
    hash: Hash,
    mgf: Hash,
    salt: &[u8],
) -> Result<Vec<u8>, Invalid> {
    let h_len = hash.digest_len();
    let em_bits = mod_bits as usize - 1;
    let em_len = em_bits.div_ceil(8);
    let k = (mod_bits as usize).div_ceil(8);
    if m_hash.len() != h_len || em_len < h_len + salt.len() + 2 {
        return Err(Invalid);
    }
    let mut h = hash.hasher();
    h.update(&[0u8; 8]);
    h.update(m_hash);
    h.update(salt);
    let hh = h.finish();
    // DB = PS || 0x01 || salt, masked with MGF1(H).
    let db_len = em_len - h_len - 1;
    let mut db = vec![0u8; db_len];
    db[db_len - salt.len() - 1] = 0x01;
    db[db_len - salt.len()..].copy_from_slice(salt);
    mgf1_xor(&mut db, mgf, &hh);
    db[0] &= 0xff >> (8 * em_len - em_bits);
    let mut out = vec![0u8; k - em_len];
    out.extend_from_slice(&db);
    out.extend_from_slice(&hh);
    out.push(0xbc);
    Ok(out)
}

/// EMSA-PSS-VERIFY (RFC 8017 9.1.2) on the `k`-byte result of the public
/// operation. A public check on public data: no secrets, plain comparisons.
pub fn pss_verify(
    m_hash: &[u8],
    block: &[u8],
    mod_bits: u32,
    hash: Hash,
    mgf: Hash,
    salt_len: usize,
) -> bool {
    let h_len = hash.digest_len();
    let em_bits = mod_bits as usize - 1;
    let em_len = em_bits.div_ceil(8);
    if m_hash.len() != h_len || block.len() < em_len || em_len < h_len + salt_len + 2 {
        return false;
    }
    let (lead, em) = block.split_at(block.len() - em_len);
    if lead.iter().any(|b| *b != 0) || em[em_len - 1] != 0xbc {
        return false;
    }
    let (masked, rest) = em.split_at(em_len - h_len - 1);
    let hh = &rest[..h_len];
    let top_mask = 0xffu8 >> (8 * em_len - em_bits);
    if masked[0] & !top_mask != 0 {
        return false;
    }
    let mut db = masked.to_vec();
    mgf1_xor(&mut db, mgf, hh);
    db[0] &= top_mask;
    let ps_len = em_len - h_len - salt_len - 2;
    if db[..ps_len].iter().any(|b| *b != 0) || db[ps_len] != 0x01 {
        return false;
    }
    let salt = &db[ps_len + 1..];
    let mut h = hash.hasher();
    h.update(&[0u8; 8]);
    h.update(m_hash);
    h.update(salt);
    h.finish() == hh
}

/// EMSA-PKCS1-v1_5 block (type 1) around `t` (a DigestInfo, or the caller's
/// bytes for CKM_RSA_PKCS), for comparison when verifying.
pub fn pkcs1_sig_block(t: &[u8], k: usize) -> Result<Vec<u8>, Invalid> {
    if t.len() + 11 > k {
        return Err(Invalid);
    }
    let mut em = vec![0xffu8; k];
    em[0] = 0;
    em[1] = 1;
    em[k - t.len() - 1] = 0;
    em[k - t.len()..].copy_from_slice(t);
    Ok(em)
}

/// Recovers `t` from a type-1 block (`C_VerifyRecover` with CKM_RSA_PKCS).
pub fn pkcs1_sig_unblock(em: &[u8]) -> Result<Vec<u8>, Invalid> {
    if em.len() < 11 || em[0] != 0 || em[1] != 1 {
        return Err(Invalid);
    }
    let sep = em[2..]
        .iter()
        .position(|b| *b != 0xff)
        .map(|p| p + 2)
        .ok_or(Invalid)?;
    if sep < 10 || em[sep] != 0 {
        return Err(Invalid);
    }
    Ok(em[sep + 1..].to_vec())
}

/// EME-PKCS1-v1_5 encoding (type 2) for encryption, with nonzero random padding.
pub fn pkcs1_enc_block(msg: &[u8], k: usize) -> Result<Vec<u8>, Invalid> {
    if msg.len() + 11 > k {
        return Err(Invalid);
    }
    let ps_len = k - msg.len() - 3;
    let mut em = vec![0u8; k];
    em[1] = 2;
    let ps = &mut em[2..2 + ps_len];
    crate::random::fill(ps).map_err(|_| Invalid)?;
    for b in ps.iter_mut() {
        while *b == 0 {
            let mut one = [0u8];
            crate::random::fill(&mut one).map_err(|_| Invalid)?;
            *b = one[0];
        }
    }
    em[k - msg.len()..].copy_from_slice(msg);
    Ok(em)
}

/// EME-PKCS1-v1_5 decoding (type 2), the verdict only: whether the block is
/// well formed and where its message starts. Every byte is examined and
/// the position found without branching on the block's contents; the
/// caller (`rejection::decode`) never branches on the verdict either.
pub fn pkcs1_dec_verdict(em: &[u8]) -> (Choice, u32) {
    let mut good = em[0].ct_eq(&0) & em[1].ct_eq(&2);
    // Index of the first zero byte after the padding, found in constant time.
    let mut looking = Choice::from(1u8);
    let mut zero_at = 0u32;
    for (i, b) in em.iter().enumerate().skip(2) {
        let is_zero = b.ct_eq(&0);
        zero_at.conditional_assign(&(i as u32), looking & is_zero);
        looking &= !is_zero;
    }
    good &= !looking; // a separator exists
    good &= (zero_at).ct_gt(&9); // at least 8 padding bytes
    (good, zero_at + 1)
}

/// EME-PKCS1-v1_5 decoding with an explicit verdict: only for tests, which
/// need to know which blocks are bad. Decryption never reports it (see
/// `rejection`).
#[cfg(test)]
pub fn pkcs1_dec_block(em: &[u8]) -> Result<Vec<u8>, Invalid> {
    if em.len() < 11 {
        return Err(Invalid);
    }
    let (good, start) = pkcs1_dec_verdict(em);
    if bool::from(good) {
        Ok(em[start as usize..].to_vec())
    } else {
        Err(Invalid)
    }
}

/// EME-OAEP encoding (RFC 8017 7.1.1) into a `k`-byte block.
pub fn oaep_encode(
    msg: &[u8],
    label: &[u8],
    k: usize,
    hash: Hash,
    mgf: Hash,
) -> Result<Vec<u8>, Invalid> {
    let h_len = hash.digest_len();
    if k < 2 * h_len + 2 || msg.len() > k - 2 * h_len - 2 {
        return Err(Invalid);
    }
    let mut lh = hash.hasher();
    lh.update(label);
    let l_hash = lh.finish();
    let mut em = vec![0u8; k];
    let (seed, db) = em[1..].split_at_mut(h_len);
    crate::random::fill(seed).map_err(|_| Invalid)?;
    db[..h_len].copy_from_slice(&l_hash);
    db[db.len() - msg.len() - 1] = 0x01;
    let db_len = db.len();
    db[db_len - msg.len()..].copy_from_slice(msg);
    mgf1_xor(db, mgf, seed);
    mgf1_xor(seed, mgf, db);
    Ok(em)
}

/// EME-OAEP decoding (RFC 8017 7.1.2) without early exits on the block's
/// contents: the label hash, the separator search and the leading zero are
/// all folded into one verdict.
pub fn oaep_decode(em: &[u8], label: &[u8], hash: Hash, mgf: Hash) -> Result<Vec<u8>, Invalid> {
    let h_len = hash.digest_len();
    let k = em.len();
    if k < 2 * h_len + 2 {
        return Err(Invalid);
    }
    let mut lh = hash.hasher();
    lh.update(label);
    let l_hash = lh.finish();
    let mut seed = em[1..1 + h_len].to_vec();
    let mut db = em[1 + h_len..].to_vec();
    mgf1_xor(&mut seed, mgf, &db);
    mgf1_xor(&mut db, mgf, &seed);
    let mut good = em[0].ct_eq(&0) & db[..h_len].ct_eq(&l_hash);
    let mut looking = Choice::from(1u8);
    let mut one_at = 0u32;
    let mut bad_byte = Choice::from(0u8);
    for (i, b) in db.iter().enumerate().skip(h_len) {
        let is_one = b.ct_eq(&1);
        let is_zero = b.ct_eq(&0);
        one_at.conditional_assign(&(i as u32), looking & is_one);
        bad_byte |= looking & !is_one & !is_zero;
        looking &= !is_one;
    }
    good &= !looking & !bad_byte;
    let out = if bool::from(good) {
        Ok(db[one_at as usize + 1..].to_vec())
    } else {
        Err(Invalid)
    };
    zeroize::Zeroize::zeroize(&mut db);
    zeroize::Zeroize::zeroize(&mut seed);
    out
}

/// DER DigestInfo prefixes (RFC 8017 9.2, note 1).
pub fn digest_info_prefix(hash: Hash) -> &'static [u8] {
    match hash {
        Hash::Sha1 => &[
            0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04,
            0x14,
        ],
        Hash::Sha224 => &[
            0x30, 0x2d, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x04, 0x05, 0x00, 0x04, 0x1c,
        ],
        Hash::Sha256 => &[
            0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x01, 0x05, 0x00, 0x04, 0x20,
        ],
        Hash::Sha384 => &[
            0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x02, 0x05, 0x00, 0x04, 0x30,
        ],
        Hash::Sha512 => &[
            0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x03, 0x05, 0x00, 0x04, 0x40,
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::traits::{PrivateKeyParts, PublicKeyParts};
    use rsa::{BigUint, Oaep, Pkcs1v15Encrypt, Pss, RsaPrivateKey};

    fn key() -> RsaPrivateKey {
        use std::sync::OnceLock;
        static K: OnceLock<RsaPrivateKey> = OnceLock::new();
        K.get_or_init(|| RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1031).unwrap())
            .clone()
    }

    fn private_raw(k: &RsaPrivateKey, block: &[u8]) -> Vec<u8> {
        let v = BigUint::from_bytes_be(block)
            .modpow(k.d(), k.n())
            .to_bytes_be();
        let mut out = vec![0u8; k.size() - v.len()];
        out.extend(v);
        out
    }

    fn public_raw(k: &RsaPrivateKey, block: &[u8]) -> Vec<u8> {
        let v = BigUint::from_bytes_be(block)
            .modpow(k.e(), k.n())
            .to_bytes_be();
        let mut out = vec![0u8; k.size() - v.len()];
        out.extend(v);
        out
    }

    fn digest(h: Hash, m: &[u8]) -> Vec<u8> {
        let mut x = h.hasher();
        x.update(m);
        x.finish()
    }

    #[test]
    fn pss_signatures_verify_with_rustcrypto_and_back() {
        // 1031 bits: emLen < k exercises the leading-zero and top-bit masking.
        let k = key();
        let bits = k.n().bits() as u32;
        let m = digest(Hash::Sha256, b"message");
        for salt_len in [0usize, 20, 32, pss_max_salt(bits, Hash::Sha256).unwrap()] {
            let salt = vec![0x5a; salt_len];
            let em = pss_encode(&m, bits, Hash::Sha256, Hash::Sha256, &salt).unwrap();
            let sig = private_raw(&k, &em);
            k.to_public_key()
                .verify(Pss::new_with_salt::<sha2::Sha256>(salt_len), &m, &sig)
                .unwrap();
            assert!(pss_verify(
                &m,
                &public_raw(&k, &sig),
                bits,
                Hash::Sha256,
                Hash::Sha256,
                salt_len
            ));
            assert!(!pss_verify(
                &m,
                &public_raw(&k, &sig),
                bits,
                Hash::Sha256,
                Hash::Sha256,
                salt_len + 1
            ));
            let other = digest(Hash::Sha256, b"other");
            assert!(!pss_verify(
                &other,
                &public_raw(&k, &sig),
                bits,
                Hash::Sha256,
                Hash::Sha256,
                salt_len
            ));
        }
        // RustCrypto's signature verifies here.
        let sig = k
            .sign_with_rng(
                &mut rsa::rand_core::OsRng,
                Pss::new_with_salt::<sha2::Sha512>(32),
                &digest(Hash::Sha512, b"x"),
            )
            .unwrap();
        assert!(pss_verify(
            &digest(Hash::Sha512, b"x"),
            &public_raw(&k, &sig),
            bits,
            Hash::Sha512,
            Hash::Sha512,
            32
        ));
        assert!(pss_encode(&m, bits, Hash::Sha256, Hash::Sha256, &[0; 200]).is_err());
    }

    #[test]
    fn oaep_round_trips_with_rustcrypto() {
        let k = key();
        let size = k.size();
        for label in [&b""[..], b"a label"] {
            let ct = k
                .to_public_key()
                .encrypt(
                    &mut rsa::rand_core::OsRng,
                    Oaep::new_with_label::<sha2::Sha256, _>(
                        String::from_utf8(label.to_vec()).unwrap(),
                    ),
                    b"secret",
                )
                .unwrap();
            let em = private_raw(&k, &ct);
            assert_eq!(
                oaep_decode(&em, label, Hash::Sha256, Hash::Sha256).unwrap(),
                b"secret"
            );
            assert_eq!(
                oaep_decode(&em, b"wrong", Hash::Sha256, Hash::Sha256),
                Err(Invalid)
            );
            let mine = oaep_encode(b"to you", label, size, Hash::Sha256, Hash::Sha256).unwrap();
            let ct = public_raw(&k, &mine);
            let label_s = String::from_utf8(label.to_vec()).unwrap();
            assert_eq!(
                k.decrypt(Oaep::new_with_label::<sha2::Sha256, _>(label_s), &ct)
                    .unwrap(),
                b"to you"
            );
        }
        let mut em = oaep_encode(b"m", b"", size, Hash::Sha1, Hash::Sha1).unwrap();
        assert_eq!(oaep_decode(&em, b"", Hash::Sha1, Hash::Sha1).unwrap(), b"m");
        em[0] = 1;
        assert_eq!(oaep_decode(&em, b"", Hash::Sha1, Hash::Sha1), Err(Invalid));
        assert!(oaep_encode(&vec![0; size], b"", size, Hash::Sha1, Hash::Sha1).is_err());
    }

    #[test]
    fn pkcs1_encryption_round_trips_and_rejects_bad_blocks() {
        let k = key();
        let ct = k
            .to_public_key()
            .encrypt(&mut rsa::rand_core::OsRng, Pkcs1v15Encrypt, b"hello")
            .unwrap();
        assert_eq!(pkcs1_dec_block(&private_raw(&k, &ct)).unwrap(), b"hello");
        let em = pkcs1_enc_block(b"world", k.size()).unwrap();
        assert!(em[2..k.size() - 6].iter().all(|b| *b != 0));
        assert_eq!(
            k.decrypt(Pkcs1v15Encrypt, &public_raw(&k, &em)).unwrap(),
            b"world"
        );
        let mut bad = em.clone();
        bad[1] = 1;
        assert_eq!(pkcs1_dec_block(&bad), Err(Invalid));
        let mut short_pad = em.clone();
        short_pad[5] = 0;
        assert_eq!(pkcs1_dec_block(&short_pad), Err(Invalid));
        let mut no_sep = vec![0u8, 2];
        no_sep.extend(vec![7u8; 40]);
        assert_eq!(pkcs1_dec_block(&no_sep), Err(Invalid));
        // An empty message is valid.
        let e = pkcs1_enc_block(b"", 64).unwrap();
        assert_eq!(pkcs1_dec_block(&e).unwrap(), b"");
    }

    #[test]
    fn pkcs1_signature_blocks() {
        let b = pkcs1_sig_block(b"abc", 32).unwrap();
        assert_eq!(&b[..3], &[0, 1, 0xff]);
        assert_eq!(pkcs1_sig_unblock(&b).unwrap(), b"abc");
        assert!(pkcs1_sig_block(&[0; 22], 32).is_err());
        let mut bad = b.clone();
        bad[4] = 0;
        assert!(pkcs1_sig_unblock(&bad).is_err());
        for h in [
            Hash::Sha1,
            Hash::Sha224,
            Hash::Sha256,
            Hash::Sha384,
            Hash::Sha512,
        ] {
            assert_eq!(
                digest_info_prefix(h).len() + h.digest_len(),
                h.digest_info_len()
            );
        }
    }
}
