//! PKCS#11 §5.8–5.13 and §5.15: encryption, decryption, message digests,
//! signatures, verification, verify-recover, and random numbers. Single-part
//! calls take their input through `input`, which copies it when it shares
//! memory with the output (in-place encryption and decryption).

use super::{array, bytes, cryptoki_fn, input, mechanism, module, two_call};
use crate::error::Error;
use crate::module::OpKind;
use cryptoki_sys::*;

pub(super) fn op_init(
    h: CK_SESSION_HANDLE,
    kind: OpKind,
    p_mechanism: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> crate::error::Result<()> {
    let m = module()?;
    // SAFETY: `mechanism` checks the pointer; the caller promises the rest.
    let (ty, params) = unsafe { mechanism(p_mechanism)? };
    m.op_init(h, kind, ty, &params, key)
}

cryptoki_fn!(C_SignInit(h: CK_SESSION_HANDLE, p_mechanism: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE) {
    op_init(h, OpKind::Sign, p_mechanism, key)
});

cryptoki_fn!(C_Sign(h: CK_SESSION_HANDLE, p_data: *mut CK_BYTE, data_len: CK_ULONG, p_signature: *mut CK_BYTE, pul_signature_len: *mut CK_ULONG) {
    let m = module()?;
    let data = input(p_data, data_len, p_signature, pul_signature_len)?;
    two_call(p_signature, pul_signature_len, |buf| m.sign(h, Some(&data), buf))
});

cryptoki_fn!(C_SignUpdate(h: CK_SESSION_HANDLE, p_part: *mut CK_BYTE, part_len: CK_ULONG) {
    let m = module()?;
    m.op_update(h, OpKind::Sign, bytes(p_part, part_len)?)
});

cryptoki_fn!(C_SignFinal(h: CK_SESSION_HANDLE, p_signature: *mut CK_BYTE, pul_signature_len: *mut CK_ULONG) {
    let m = module()?;
    two_call(p_signature, pul_signature_len, |buf| m.sign(h, None, buf))
});

cryptoki_fn!(C_VerifyInit(h: CK_SESSION_HANDLE, p_mechanism: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE) {
    op_init(h, OpKind::Verify, p_mechanism, key)
});

cryptoki_fn!(C_Verify(h: CK_SESSION_HANDLE, p_data: *mut CK_BYTE, data_len: CK_ULONG, p_signature: *mut CK_BYTE, signature_len: CK_ULONG) {
    let m = module()?;
    m.verify(h, Some(bytes(p_data, data_len)?), bytes(p_signature, signature_len)?)
});

cryptoki_fn!(C_VerifyUpdate(h: CK_SESSION_HANDLE, p_part: *mut CK_BYTE, part_len: CK_ULONG) {
    let m = module()?;
    m.op_update(h, OpKind::Verify, bytes(p_part, part_len)?)
});

cryptoki_fn!(C_VerifyFinal(h: CK_SESSION_HANDLE, p_signature: *mut CK_BYTE, signature_len: CK_ULONG) {
    let m = module()?;
    m.verify(h, None, bytes(p_signature, signature_len)?)
});

cryptoki_fn!(C_VerifyRecoverInit(h: CK_SESSION_HANDLE, p_mechanism: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE) {
    op_init(h, OpKind::VerifyRecover, p_mechanism, key)
});

cryptoki_fn!(C_VerifyRecover(h: CK_SESSION_HANDLE, p_signature: *mut CK_BYTE, signature_len: CK_ULONG, p_data: *mut CK_BYTE, pul_data_len: *mut CK_ULONG) {
    let m = module()?;
    let sig = input(p_signature, signature_len, p_data, pul_data_len)?;
    two_call(p_data, pul_data_len, |buf| m.verify_recover(h, &sig, buf))
});

cryptoki_fn!(C_EncryptInit(h: CK_SESSION_HANDLE, p_mechanism: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE) {
    op_init(h, OpKind::Encrypt, p_mechanism, key)
});

cryptoki_fn!(C_Encrypt(h: CK_SESSION_HANDLE, p_data: *mut CK_BYTE, data_len: CK_ULONG, p_out: *mut CK_BYTE, pul_out_len: *mut CK_ULONG) {
    let m = module()?;
    let data = input(p_data, data_len, p_out, pul_out_len)?;
    two_call(p_out, pul_out_len, |buf| m.encrypt(h, &data, buf))
});

cryptoki_fn!(C_DecryptInit(h: CK_SESSION_HANDLE, p_mechanism: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE) {
    op_init(h, OpKind::Decrypt, p_mechanism, key)
});

cryptoki_fn!(C_Decrypt(h: CK_SESSION_HANDLE, p_data: *mut CK_BYTE, data_len: CK_ULONG, p_out: *mut CK_BYTE, pul_out_len: *mut CK_ULONG) {
    let m = module()?;
    let data = input(p_data, data_len, p_out, pul_out_len)?;
    two_call(p_out, pul_out_len, |buf| m.decrypt(h, &data, buf))
});

pub(super) fn digest_init(
    h: CK_SESSION_HANDLE,
    p_mechanism: *mut CK_MECHANISM,
) -> crate::error::Result<()> {
    let m = module()?;
    // SAFETY: `mechanism` checks the pointer; the caller promises the rest.
    let (ty, params) = unsafe { mechanism(p_mechanism)? };
    m.digest_init(h, ty, &params)
}

cryptoki_fn!(C_DigestInit(h: CK_SESSION_HANDLE, p_mechanism: *mut CK_MECHANISM) {
    digest_init(h, p_mechanism)
});

cryptoki_fn!(C_Digest(h: CK_SESSION_HANDLE, p_data: *mut CK_BYTE, data_len: CK_ULONG, p_digest: *mut CK_BYTE, pul_digest_len: *mut CK_ULONG) {
    let m = module()?;
    let data = input(p_data, data_len, p_digest, pul_digest_len)?;
    two_call(p_digest, pul_digest_len, |buf| m.digest(h, Some(&data), buf))
});

cryptoki_fn!(C_DigestUpdate(h: CK_SESSION_HANDLE, p_part: *mut CK_BYTE, part_len: CK_ULONG) {
    let m = module()?;
    m.digest_update(h, bytes(p_part, part_len)?)
});

cryptoki_fn!(C_DigestFinal(h: CK_SESSION_HANDLE, p_digest: *mut CK_BYTE, pul_digest_len: *mut CK_ULONG) {
    let m = module()?;
    two_call(p_digest, pul_digest_len, |buf| m.digest(h, None, buf))
});

cryptoki_fn!(C_GenerateRandom(h: CK_SESSION_HANDLE, p_out: *mut CK_BYTE, out_len: CK_ULONG) {
    let m = module()?;
    m.session_info(h)?;
    let buf = array(p_out, out_len)?;
    crate::random::fill(buf).map_err(|_| Error::new(CKR_FUNCTION_FAILED))
});

cryptoki_fn!(C_SeedRandom(h: CK_SESSION_HANDLE, _p_seed: *mut CK_BYTE, _seed_len: CK_ULONG) {
    // The kernel's generator takes no seed from us.
    module()?.session_info(h)?;
    Err(Error::new(CKR_RANDOM_SEED_NOT_SUPPORTED))
});
