//! One RSA operation, start to finish: the mechanism's encoding in userspace,
//! the private operation in the kernel, the public operation in userspace.
//!
//! Public operations (verify, verify-recover, encrypt) compute x^e mod n here,
//! in userspace, with the public key recovered from the kernel key (checked
//! against the kernel's own public operation when the key was first seen; see
//! `pubkey`), and the padding is checked here too, so every mechanism is
//! served. Public keys are public: doing this outside the kernel gives up no
//! isolation. Square-and-multiply with `num-bigint` (17 modular
//! multiplications for e = 65537) is faster than a syscall into the kernel's
//! generic MPI code, which also has to find the key and set up a crypto
//! transform per call (softhsm-compare's verify table measures both); `num-bigint`'s general `modpow`, whose Montgomery
//! set-up dominates for so small an exponent, and the `rsa` crate are slower
//! than the kernel. An exponent too large for that (never one of the
//! recovered ones) goes to the kernel's raw public operation.

use super::padding::{self, Invalid};
use super::pubkey::{self, small_exponent};
use super::rejection;
use crate::error::{Error, Result};
use crate::kernel::hints::KernelOp;
use crate::kernel::keyctl::Serial;
use crate::kernel::store::KeyStore;
use crate::mechanism::{Padding, Resolved};
use cryptoki_sys::*;
use num_bigint::BigUint;
use zeroize::Zeroizing;

/// A kernel refusal during an operation. The caller (the module) knows the
/// token the key belongs to and decides what it means (a key that left the
/// token is an invalid handle, not a device error).
fn kernel(what: &'static str) -> impl FnOnce(crate::kernel::keyctl::Errno) -> Error {
    move |errno| Error::kernel(KernelOp::UseKey, errno, what)
}

/// What an operation needs of a kernel key. The object layer's `KeyInfo`
/// is one; this layer does not know objects, so it can be tested and reused
/// without them.
pub trait RsaKey {
    fn serial(&self) -> Serial;
    fn public(&self) -> &pubkey::RsaPublic;
    /// The modulus as a number.
    fn n(&self) -> &BigUint;
    fn bits(&self) -> u32;
    /// The kernel's `max_sig_size`: the length of every block.
    fn sig_len(&self) -> usize;
    fn rejection(&self) -> &rejection::RejectionCell;
}

fn key_len(key: &dyn RsaKey) -> usize {
    key.sig_len()
}

/// Left-pads to the key length; `None` if longer.
fn to_block(data: &[u8], k: usize) -> Option<Vec<u8>> {
    (data.len() <= k).then(|| {
        let mut b = vec![0u8; k - data.len()];
        b.extend_from_slice(data);
        b
    })
}

fn below_modulus(block: &[u8], key: &dyn RsaKey) -> bool {
    BigUint::from_bytes_be(block) < *key.n()
}

/// x^e mod n, as a k-byte block. `x` must be below n.
fn public_op(store: &dyn KeyStore, key: &dyn RsaKey, block: &[u8]) -> Result<Vec<u8>> {
    if let Some(e) = small_exponent(&key.public().exponent) {
        let y = pubkey::pow_small(&BigUint::from_bytes_be(block), e, key.n());
        return to_block(&y.to_bytes_be(), key_len(key)).ok_or(Error::new(CKR_DEVICE_ERROR));
    }
    let mut out = vec![0u8; key_len(key)];
    let n = store
        .public_raw(key.serial(), block, &mut out)
        .map_err(kernel("the public operation"))?;
    to_block(&out[..n], key_len(key)).ok_or(Error::new(CKR_DEVICE_ERROR))
}

fn private_op(store: &dyn KeyStore, key: &dyn RsaKey, block: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let mut out = Zeroizing::new(vec![0u8; key_len(key)]);
    let n = store
        .private_raw(key.serial(), block, &mut out)
        .map_err(kernel("the raw private operation"))?;
    // The kernel always returns k bytes here; normalise defensively.
    let v = to_block(&out[..n], key_len(key)).ok_or(Error::new(CKR_DEVICE_ERROR))?;
    Ok(Zeroizing::new(v))
}

/// Signs `payload`: the message digest for mechanisms that hash, the
/// caller's input for CKM_RSA_PKCS, CKM_RSA_PKCS_PSS and CKM_RSA_X_509.
pub fn sign(
    store: &dyn KeyStore,
    key: &dyn RsaKey,
    m: &Resolved,
    payload: &[u8],
) -> Result<Vec<u8>> {
    let k = key_len(key);
    let sig = match m.spec.padding {
        Padding::Pkcs1 => {
            if m.spec.hash.is_none() && payload.len() + 11 > k {
                return Err(Error::new(CKR_DATA_LEN_RANGE));
            }
            let mut sig = vec![0u8; k];
            let n = store
                .sign(key.serial(), m.spec.hash, payload, &mut sig)
                .map_err(kernel("a PKCS#1 v1.5 signature"))?;
            to_block(&sig[..n], k).ok_or(Error::new(CKR_DEVICE_ERROR))?
        }
        Padding::Pss => {
            let p = m.pss.expect("resolved PSS parameters");
            if payload.len() != p.hash.digest_len() {
                return Err(Error::new(CKR_DATA_LEN_RANGE));
            }
            let mut salt = vec![0u8; p.salt_len];
            crate::random::fill(&mut salt).map_err(|_| Error::new(CKR_FUNCTION_FAILED))?;
            let em = padding::pss_encode(payload, key.bits(), p.hash, p.mgf, &salt)
                .map_err(|_| Error::new(CKR_KEY_SIZE_RANGE))?;
            private_op(store, key, &em)?.to_vec()
        }
        Padding::Raw => {
            let block = to_block(payload, k).ok_or(Error::new(CKR_DATA_LEN_RANGE))?;
            if !below_modulus(&block, key) {
                return Err(Error::new(CKR_DATA_INVALID));
            }
            private_op(store, key, &block)?.to_vec()
        }
        Padding::Oaep | Padding::Digest | Padding::KeyGen => {
            return Err(Error::new(CKR_MECHANISM_INVALID));
        }
    };
    Ok(sig)
}

/// Verifies `signature` over `payload` (as for [`sign`]).
pub fn verify(
    store: &dyn KeyStore,
    key: &dyn RsaKey,
    m: &Resolved,
    payload: &[u8],
    signature: &[u8],
) -> Result<()> {
    let k = key_len(key);
    if signature.len() != k {
        return Err(Error::new(CKR_SIGNATURE_LEN_RANGE));
    }
    if !below_modulus(signature, key) {
        return Err(Error::new(CKR_SIGNATURE_INVALID));
    }
    let em = public_op(store, key, signature)?;
    let good = match m.spec.padding {
        Padding::Pkcs1 => {
            let t = match m.spec.hash {
                Some(h) => [padding::digest_info_prefix(h), payload].concat(),
                None if payload.len() + 11 > k => return Err(Error::new(CKR_DATA_LEN_RANGE)),
                None => payload.to_vec(),
            };
            padding::pkcs1_sig_block(&t, k).is_ok_and(|want| want == em)
        }
        Padding::Pss => {
            let p = m.pss.expect("resolved PSS parameters");
            if payload.len() != p.hash.digest_len() {
                return Err(Error::new(CKR_DATA_LEN_RANGE));
            }
            padding::pss_verify(payload, &em, key.bits(), p.hash, p.mgf, p.salt_len)
        }
        Padding::Raw => to_block(payload, k).ok_or(Error::new(CKR_DATA_LEN_RANGE))? == em,
        Padding::Oaep | Padding::Digest | Padding::KeyGen => {
            return Err(Error::new(CKR_MECHANISM_INVALID));
        }
    };
    if good {
        Ok(())
    } else {
        Err(Error::new(CKR_SIGNATURE_INVALID))
    }
}

/// `C_VerifyRecover`: the data a CKM_RSA_PKCS or CKM_RSA_X_509 signature carries.
pub fn verify_recover(
    store: &dyn KeyStore,
    key: &dyn RsaKey,
    m: &Resolved,
    signature: &[u8],
) -> Result<Vec<u8>> {
    if signature.len() != key_len(key) {
        return Err(Error::new(CKR_SIGNATURE_LEN_RANGE));
    }
    if !below_modulus(signature, key) {
        return Err(Error::new(CKR_SIGNATURE_INVALID));
    }
    let em = public_op(store, key, signature)?;
    match m.spec.padding {
        Padding::Pkcs1 if m.spec.hash.is_none() => {
            padding::pkcs1_sig_unblock(&em).map_err(|_| Error::new(CKR_SIGNATURE_INVALID))
        }
        Padding::Raw => Ok(em),
        _ => Err(Error::new(CKR_MECHANISM_INVALID)),
    }
}

pub fn encrypt(
    store: &dyn KeyStore,
    key: &dyn RsaKey,
    m: &Resolved,
    data: &[u8],
) -> Result<Vec<u8>> {
    let k = key_len(key);
    let block = match m.spec.padding {
        Padding::Pkcs1 if m.spec.hash.is_none() => {
            padding::pkcs1_enc_block(data, k).map_err(|_| Error::new(CKR_DATA_LEN_RANGE))?
        }
        Padding::Oaep => {
            let p = m.oaep.as_ref().expect("resolved OAEP parameters");
            padding::oaep_encode(data, &p.label, k, p.hash, p.mgf)
                .map_err(|_| Error::new(CKR_DATA_LEN_RANGE))?
        }
        Padding::Raw => {
            let b = to_block(data, k).ok_or(Error::new(CKR_DATA_LEN_RANGE))?;
            if !below_modulus(&b, key) {
                return Err(Error::new(CKR_DATA_INVALID));
            }
            b
        }
        _ => return Err(Error::new(CKR_MECHANISM_INVALID)),
    };
    public_op(store, key, &block)
}

/// The key's implicit-rejection secret (`rejection`): SHA-256 of the
/// private operation on the key's fixed input, done at the key's first
/// PKCS#1 v1.5 decryption in this process and kept with the key (`RsaKey::rejection`). No lock
/// is held across that kernel call: threads racing here both derive the same
/// value, and the first one kept wins.
fn rejection_key<'a>(store: &dyn KeyStore, key: &'a dyn RsaKey) -> Result<&'a [u8; 32]> {
    if let Some(r) = key.rejection().get() {
        return Ok(r);
    }
    let x0 = rejection::fixed_input(key.n(), key.bits(), key_len(key));
    let s = private_op(store, key, &x0)?;
    Ok(key.rejection().get_or_set(rejection::derive_key(&s)))
}

/// Decrypts. A ciphertext that is not k bytes or not below n is refused
/// (`CKR_ENCRYPTED_DATA_LEN_RANGE`, `CKR_ENCRYPTED_DATA_INVALID`): both are
/// public facts about it. Past that, PKCS#1 v1.5 never fails (implicit
/// rejection: bad padding gives a synthetic message), and OAEP fails with
/// the one `CKR_ENCRYPTED_DATA_INVALID` whatever is wrong.
pub fn decrypt(
    store: &dyn KeyStore,
    key: &dyn RsaKey,
    m: &Resolved,
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    if ciphertext.len() != key_len(key) {
        return Err(Error::new(CKR_ENCRYPTED_DATA_LEN_RANGE));
    }
    if !below_modulus(ciphertext, key) {
        return Err(Error::new(CKR_ENCRYPTED_DATA_INVALID));
    }
    let invalid = |_: Invalid| Error::new(CKR_ENCRYPTED_DATA_INVALID);
    match m.spec.padding {
        Padding::Pkcs1 if m.spec.hash.is_none() => {
            let secret = rejection_key(store, key)?;
            let em = private_op(store, key, ciphertext)?;
            rejection::decode(&em, ciphertext, secret).map_err(invalid)
        }
        Padding::Oaep => {
            let p = m.oaep.as_ref().expect("resolved OAEP parameters");
            let em = private_op(store, key, ciphertext)?;
            padding::oaep_decode(&em, &p.label, p.hash, p.mgf)
                .map(Zeroizing::new)
                .map_err(invalid)
        }
        Padding::Raw => private_op(store, key, ciphertext),
        _ => Err(Error::new(CKR_MECHANISM_INVALID)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::pubkey::RsaPublic;
    use crate::kernel::mock::MockStore;
    use crate::kernel::store::TokenKind;
    use rsa::traits::PublicKeyParts;

    struct Key(Serial, RsaPublic, BigUint, rejection::RejectionCell);

    impl RsaKey for Key {
        fn serial(&self) -> Serial {
            self.0
        }
        fn public(&self) -> &RsaPublic {
            &self.1
        }
        fn n(&self) -> &BigUint {
            &self.2
        }
        fn bits(&self) -> u32 {
            self.1.bits()
        }
        fn sig_len(&self) -> usize {
            128
        }
        fn rejection(&self) -> &rejection::RejectionCell {
            &self.3
        }
    }

    #[test]
    fn small_exponents_are_read_and_others_left_to_the_kernel() {
        assert_eq!(small_exponent(&[1, 0, 1]), Some(65537));
        assert_eq!(small_exponent(&[0, 0, 3]), Some(3));
        assert_eq!(small_exponent(&[0xff, 0xff, 0xff, 0xff]), Some(u32::MAX));
        assert_eq!(small_exponent(&[1, 0, 0, 0, 1]), None);
        assert_eq!(small_exponent(&[1]), None);
        assert_eq!(small_exponent(&[]), None);
    }

    #[test]
    fn userspace_public_op_equals_the_kernels() {
        let store = MockStore::default();
        store.add_keyring(&TokenKind::User);
        for e in [3u32, 65537] {
            let sk = rsa::RsaPrivateKey::new_with_exp(
                &mut rsa::rand_core::OsRng,
                1024,
                &rsa::BigUint::from(e),
            )
            .unwrap();
            let serial = store.add_key(&TokenKind::User, "asymmetric", "k", Some(sk.clone()));
            let public = RsaPublic {
                modulus: sk.n().to_bytes_be(),
                exponent: sk.e().to_bytes_be(),
            };
            let n = BigUint::from_bytes_be(&public.modulus);
            let key = Key(serial, public, n, Default::default());
            // Small values (short results, left-padded), large ones, and n − 1.
            let n_minus_1 = (sk.n() - 1u32).to_bytes_be();
            for x in [
                vec![0u8; 128],
                [vec![0u8; 127], vec![2]].concat(),
                vec![0x5a; 128],
                n_minus_1,
            ] {
                let mut want = vec![0u8; 128];
                let len = store.public_raw(serial, &x, &mut want).unwrap();
                let want = to_block(&want[..len], 128).unwrap();
                assert_eq!(public_op(&store, &key, &x).unwrap(), want, "e = {e}");
            }
        }
    }
}
