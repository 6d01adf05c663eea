//! One RSA operation, start to finish: the mechanism's encoding in userspace,
//! the private operation in the kernel, the public operation in userspace.
//!
//! Public operations (verify, encrypt) use the kernel's raw public operation
//! (`KEYCTL_PKEY_ENCRYPT enc=raw`) with the padding checked here. Measured in
//! the lab (`examples/public_ops.rs`), `num-bigint` in userspace reached only
//! 0.31–0.38× the kernel's speed for the same x^e mod n, and the kernel's own
//! `KEYCTL_PKEY_VERIFY` knows PKCS#1 v1.5 only; the raw operation serves every
//! padding at the kernel's speed.

use crate::keyctl::Errno;
use crate::mechanism::{Padding, Resolved};
use crate::object::KeyInfo;
use crate::padding::{self, Invalid};
use crate::store::KeyStore;
use cryptoki_sys::*;
use num_bigint::BigUint;
use zeroize::Zeroizing;

/// Why an operation failed: a PKCS#11 answer of ours, or the kernel's refusal
/// (which the caller maps, knowing the token the key belongs to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpError {
    Ck(CK_RV),
    Kernel(Errno),
}

impl From<CK_RV> for OpError {
    fn from(rv: CK_RV) -> Self {
        OpError::Ck(rv)
    }
}

type OpResult<T> = Result<T, OpError>;

fn key_len(key: &KeyInfo) -> usize {
    key.sig_len
}

/// Left-pads to the key length; `None` if longer.
fn to_block(data: &[u8], k: usize) -> Option<Vec<u8>> {
    (data.len() <= k).then(|| {
        let mut b = vec![0u8; k - data.len()];
        b.extend_from_slice(data);
        b
    })
}

fn below_modulus(block: &[u8], key: &KeyInfo) -> bool {
    BigUint::from_bytes_be(block) < key.n
}

/// x^e mod n, as a k-byte block. `x` must be below n.
fn public_op(store: &dyn KeyStore, key: &KeyInfo, block: &[u8]) -> OpResult<Vec<u8>> {
    let mut out = vec![0u8; key_len(key)];
    let n = store
        .public_raw(key.serial, block, &mut out)
        .map_err(OpError::Kernel)?;
    to_block(&out[..n], key_len(key)).ok_or(OpError::Ck(CKR_DEVICE_ERROR))
}

fn private_op(store: &dyn KeyStore, key: &KeyInfo, block: &[u8]) -> OpResult<Zeroizing<Vec<u8>>> {
    let mut out = Zeroizing::new(vec![0u8; key_len(key)]);
    let n = store
        .private_raw(key.serial, block, &mut out)
        .map_err(OpError::Kernel)?;
    // The kernel always returns k bytes here; normalise defensively.
    let v = to_block(&out[..n], key_len(key)).ok_or(OpError::Ck(CKR_DEVICE_ERROR))?;
    Ok(Zeroizing::new(v))
}

/// Signs `payload`: the message digest for mechanisms that hash, the
/// caller's input for CKM_RSA_PKCS, CKM_RSA_PKCS_PSS and CKM_RSA_X_509.
pub fn sign(
    store: &dyn KeyStore,
    key: &KeyInfo,
    m: &Resolved,
    payload: &[u8],
) -> OpResult<Vec<u8>> {
    let k = key_len(key);
    let sig = match m.spec.padding {
        Padding::Pkcs1 => {
            if m.spec.hash.is_none() && payload.len() + 11 > k {
                return Err(CKR_DATA_LEN_RANGE.into());
            }
            let mut sig = vec![0u8; k];
            let n = store
                .sign(key.serial, m.spec.hash, payload, &mut sig)
                .map_err(OpError::Kernel)?;
            to_block(&sig[..n], k).ok_or(OpError::Ck(CKR_DEVICE_ERROR))?
        }
        Padding::Pss => {
            let p = m.pss.expect("resolved PSS parameters");
            if payload.len() != p.hash.digest_len() {
                return Err(CKR_DATA_LEN_RANGE.into());
            }
            let mut salt = vec![0u8; p.salt_len];
            crate::random::fill(&mut salt).map_err(|_| OpError::Ck(CKR_FUNCTION_FAILED))?;
            let em = padding::pss_encode(payload, key.bits, p.hash, p.mgf, &salt)
                .map_err(|_| OpError::Ck(CKR_KEY_SIZE_RANGE))?;
            private_op(store, key, &em)?.to_vec()
        }
        Padding::Raw => {
            let block = to_block(payload, k).ok_or(OpError::Ck(CKR_DATA_LEN_RANGE))?;
            if !below_modulus(&block, key) {
                return Err(CKR_DATA_INVALID.into());
            }
            private_op(store, key, &block)?.to_vec()
        }
        Padding::Oaep | Padding::Digest | Padding::KeyGen => {
            return Err(CKR_MECHANISM_INVALID.into());
        }
    };
    Ok(sig)
}

/// Verifies `signature` over `payload` (as for [`sign`]).
pub fn verify(
    store: &dyn KeyStore,
    key: &KeyInfo,
    m: &Resolved,
    payload: &[u8],
    signature: &[u8],
) -> OpResult<()> {
    let k = key_len(key);
    if signature.len() != k {
        return Err(CKR_SIGNATURE_LEN_RANGE.into());
    }
    if !below_modulus(signature, key) {
        return Err(CKR_SIGNATURE_INVALID.into());
    }
    let em = public_op(store, key, signature)?;
    let good = match m.spec.padding {
        Padding::Pkcs1 => {
            let t = match m.spec.hash {
                Some(h) => [padding::digest_info_prefix(h), payload].concat(),
                None if payload.len() + 11 > k => return Err(CKR_DATA_LEN_RANGE.into()),
                None => payload.to_vec(),
            };
            padding::pkcs1_sig_block(&t, k).is_ok_and(|want| want == em)
        }
        Padding::Pss => {
            let p = m.pss.expect("resolved PSS parameters");
            if payload.len() != p.hash.digest_len() {
                return Err(CKR_DATA_LEN_RANGE.into());
            }
            padding::pss_verify(payload, &em, key.bits, p.hash, p.mgf, p.salt_len)
        }
        Padding::Raw => to_block(payload, k).ok_or(OpError::Ck(CKR_DATA_LEN_RANGE))? == em,
        Padding::Oaep | Padding::Digest | Padding::KeyGen => {
            return Err(CKR_MECHANISM_INVALID.into());
        }
    };
    if good {
        Ok(())
    } else {
        Err(CKR_SIGNATURE_INVALID.into())
    }
}

/// `C_VerifyRecover`: the data a CKM_RSA_PKCS or CKM_RSA_X_509 signature carries.
pub fn verify_recover(
    store: &dyn KeyStore,
    key: &KeyInfo,
    m: &Resolved,
    signature: &[u8],
) -> OpResult<Vec<u8>> {
    if signature.len() != key_len(key) {
        return Err(CKR_SIGNATURE_LEN_RANGE.into());
    }
    if !below_modulus(signature, key) {
        return Err(CKR_SIGNATURE_INVALID.into());
    }
    let em = public_op(store, key, signature)?;
    match m.spec.padding {
        Padding::Pkcs1 if m.spec.hash.is_none() => {
            padding::pkcs1_sig_unblock(&em).map_err(|_| CKR_SIGNATURE_INVALID.into())
        }
        Padding::Raw => Ok(em),
        _ => Err(CKR_MECHANISM_INVALID.into()),
    }
}

pub fn encrypt(
    store: &dyn KeyStore,
    key: &KeyInfo,
    m: &Resolved,
    data: &[u8],
) -> OpResult<Vec<u8>> {
    let k = key_len(key);
    let block = match m.spec.padding {
        Padding::Pkcs1 if m.spec.hash.is_none() => {
            padding::pkcs1_enc_block(data, k).map_err(|_| CKR_DATA_LEN_RANGE)?
        }
        Padding::Oaep => {
            let p = m.oaep.as_ref().expect("resolved OAEP parameters");
            padding::oaep_encode(data, &p.label, k, p.hash, p.mgf)
                .map_err(|_| CKR_DATA_LEN_RANGE)?
        }
        Padding::Raw => {
            let b = to_block(data, k).ok_or(OpError::Ck(CKR_DATA_LEN_RANGE))?;
            if !below_modulus(&b, key) {
                return Err(CKR_DATA_INVALID.into());
            }
            b
        }
        _ => return Err(CKR_MECHANISM_INVALID.into()),
    };
    public_op(store, key, &block)
}

/// Decrypts. Every malformed ciphertext — wrong padding, wrong label, a value
/// not below n — gives the same `CKR_ENCRYPTED_DATA_INVALID`.
pub fn decrypt(
    store: &dyn KeyStore,
    key: &KeyInfo,
    m: &Resolved,
    ciphertext: &[u8],
) -> OpResult<Zeroizing<Vec<u8>>> {
    if ciphertext.len() != key_len(key) {
        return Err(CKR_ENCRYPTED_DATA_LEN_RANGE.into());
    }
    if !below_modulus(ciphertext, key) {
        return Err(CKR_ENCRYPTED_DATA_INVALID.into());
    }
    let em = private_op(store, key, ciphertext)?;
    let invalid = |_: Invalid| OpError::Ck(CKR_ENCRYPTED_DATA_INVALID);
    match m.spec.padding {
        Padding::Pkcs1 if m.spec.hash.is_none() => padding::pkcs1_dec_block(&em)
            .map(Zeroizing::new)
            .map_err(invalid),
        Padding::Oaep => {
            let p = m.oaep.as_ref().expect("resolved OAEP parameters");
            padding::oaep_decode(&em, &p.label, p.hash, p.mgf)
                .map(Zeroizing::new)
                .map_err(invalid)
        }
        Padding::Raw => Ok(em),
        _ => Err(CKR_MECHANISM_INVALID.into()),
    }
}
