//! Entry points not implemented (yet): present in the function list, as
//! PKCS#11 requires, and honest about it. Like every other function they
//! answer `CKR_CRYPTOKI_NOT_INITIALIZED` before `C_Initialize` (and in a
//! forked child that has not called it).

use super::{cryptoki_fn, module};
use crate::error::Error;
use cryptoki_sys::*;
use std::ffi::c_void;

pub(super) fn no() -> crate::error::Result<()> {
    module()?;
    Err(Error::new(CKR_FUNCTION_NOT_SUPPORTED))
}

fn not_parallel() -> crate::error::Result<()> {
    module()?;
    Err(Error::new(CKR_FUNCTION_NOT_PARALLEL))
}

cryptoki_fn!(C_InitToken(_slot: CK_SLOT_ID, _pin: *mut CK_UTF8CHAR, _len: CK_ULONG, _label: *mut CK_UTF8CHAR) { no() });
cryptoki_fn!(C_InitPIN(_h: CK_SESSION_HANDLE, _pin: *mut CK_UTF8CHAR, _len: CK_ULONG) { no() });
cryptoki_fn!(C_SetPIN(_h: CK_SESSION_HANDLE, _old: *mut CK_UTF8CHAR, _old_len: CK_ULONG, _new: *mut CK_UTF8CHAR, _new_len: CK_ULONG) { no() });
cryptoki_fn!(C_GetOperationState(_h: CK_SESSION_HANDLE, _state: *mut CK_BYTE, _len: *mut CK_ULONG) { no() });
cryptoki_fn!(C_SetOperationState(_h: CK_SESSION_HANDLE, _state: *mut CK_BYTE, _len: CK_ULONG, _enc: CK_OBJECT_HANDLE, _auth: CK_OBJECT_HANDLE) { no() });
cryptoki_fn!(C_CopyObject(_h: CK_SESSION_HANDLE, _o: CK_OBJECT_HANDLE, _t: *mut CK_ATTRIBUTE, _n: CK_ULONG, _obj: *mut CK_OBJECT_HANDLE) { no() });
cryptoki_fn!(C_EncryptUpdate(_h: CK_SESSION_HANDLE, _d: *mut CK_BYTE, _dl: CK_ULONG, _o: *mut CK_BYTE, _ol: *mut CK_ULONG) { no() });
cryptoki_fn!(C_EncryptFinal(_h: CK_SESSION_HANDLE, _o: *mut CK_BYTE, _ol: *mut CK_ULONG) { no() });
cryptoki_fn!(C_DecryptUpdate(_h: CK_SESSION_HANDLE, _d: *mut CK_BYTE, _dl: CK_ULONG, _o: *mut CK_BYTE, _ol: *mut CK_ULONG) { no() });
cryptoki_fn!(C_DecryptFinal(_h: CK_SESSION_HANDLE, _o: *mut CK_BYTE, _ol: *mut CK_ULONG) { no() });
cryptoki_fn!(C_DigestKey(_h: CK_SESSION_HANDLE, _k: CK_OBJECT_HANDLE) { no() });
cryptoki_fn!(C_SignRecoverInit(_h: CK_SESSION_HANDLE, _m: *mut CK_MECHANISM, _k: CK_OBJECT_HANDLE) { no() });
cryptoki_fn!(C_SignRecover(_h: CK_SESSION_HANDLE, _d: *mut CK_BYTE, _dl: CK_ULONG, _o: *mut CK_BYTE, _ol: *mut CK_ULONG) { no() });
cryptoki_fn!(C_DigestEncryptUpdate(_h: CK_SESSION_HANDLE, _d: *mut CK_BYTE, _dl: CK_ULONG, _o: *mut CK_BYTE, _ol: *mut CK_ULONG) { no() });
cryptoki_fn!(C_DecryptDigestUpdate(_h: CK_SESSION_HANDLE, _d: *mut CK_BYTE, _dl: CK_ULONG, _o: *mut CK_BYTE, _ol: *mut CK_ULONG) { no() });
cryptoki_fn!(C_SignEncryptUpdate(_h: CK_SESSION_HANDLE, _d: *mut CK_BYTE, _dl: CK_ULONG, _o: *mut CK_BYTE, _ol: *mut CK_ULONG) { no() });
cryptoki_fn!(C_DecryptVerifyUpdate(_h: CK_SESSION_HANDLE, _d: *mut CK_BYTE, _dl: CK_ULONG, _o: *mut CK_BYTE, _ol: *mut CK_ULONG) { no() });
cryptoki_fn!(C_GenerateKey(_h: CK_SESSION_HANDLE, _m: *mut CK_MECHANISM, _t: *mut CK_ATTRIBUTE, _n: CK_ULONG, _k: *mut CK_OBJECT_HANDLE) { no() });
cryptoki_fn!(C_WrapKey(_h: CK_SESSION_HANDLE, _m: *mut CK_MECHANISM, _w: CK_OBJECT_HANDLE, _k: CK_OBJECT_HANDLE, _o: *mut CK_BYTE, _ol: *mut CK_ULONG) { no() });
cryptoki_fn!(C_UnwrapKey(_h: CK_SESSION_HANDLE, _m: *mut CK_MECHANISM, _u: CK_OBJECT_HANDLE, _w: *mut CK_BYTE, _wl: CK_ULONG, _t: *mut CK_ATTRIBUTE, _n: CK_ULONG, _k: *mut CK_OBJECT_HANDLE) { no() });
cryptoki_fn!(C_DeriveKey(_h: CK_SESSION_HANDLE, _m: *mut CK_MECHANISM, _b: CK_OBJECT_HANDLE, _t: *mut CK_ATTRIBUTE, _n: CK_ULONG, _k: *mut CK_OBJECT_HANDLE) { no() });
// Legacy functions: the spec's answer for a module without parallel sessions.
cryptoki_fn!(C_GetFunctionStatus(_h: CK_SESSION_HANDLE) { not_parallel() });
cryptoki_fn!(C_CancelFunction(_h: CK_SESSION_HANDLE) { not_parallel() });
cryptoki_fn!(C_WaitForSlotEvent(_flags: CK_FLAGS, _slot: *mut CK_SLOT_ID, _reserved: *mut c_void) { no() });
