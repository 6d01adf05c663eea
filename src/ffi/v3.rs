//! PKCS#11 3.0: `C_GetInterfaceList`/`C_GetInterface` offer two interfaces
//! named "PKCS 11": a real 3.0 list (the default) and the 2.40 list that
//! `C_GetFunctionList` returns. Each list's `C_GetInfo` reports its own
//! version, so a client never sees a version its list's layout contradicts.
//!
//! What 3.0 adds is answered honestly: `C_LoginUser` is `C_Login` (tokens
//! have no named users, and access is the kernel's decision, not a PIN's),
//! `C_SessionCancel` really cancels, and the message-based functions, which
//! exist for AEAD and streaming signatures that kernel RSA keys do not have,
//! return `CKR_FUNCTION_NOT_SUPPORTED`. No interface claims
//! `CKF_INTERFACE_FORK_SAFE`: a forked child must call `C_Initialize` again.

use super::crypto::*;
use super::general::*;
use super::keys::*;
use super::list::{C_GetFunctionList, function_list};
use super::object::*;
use super::session::*;
use super::slot::*;
use super::unsupported::{no, *};
use super::{cryptoki_fn, module, out, write_list};
use crate::error::Error;
use crate::module::OpKind;
use cryptoki_sys::*;
use std::ffi::{CStr, c_void};

const VERSION_3_0: CK_VERSION = CK_VERSION { major: 3, minor: 0 };

static NAME: &CStr = c"PKCS 11";

static FUNCTION_LIST_3_0: CK_FUNCTION_LIST_3_0 = function_list!(CK_FUNCTION_LIST_3_0 {
    version: VERSION_3_0,
    C_GetInfo: get_info_3_0,
    inits: [
        encrypt_init_3_0,
        decrypt_init_3_0,
        digest_init_3_0,
        sign_init_3_0,
        verify_init_3_0,
        verify_recover_init_3_0
    ],
    C_GetInterfaceList: Some(C_GetInterfaceList),
    C_GetInterface: Some(C_GetInterface),
    C_LoginUser: Some(C_LoginUser),
    C_SessionCancel: Some(C_SessionCancel),
    C_MessageEncryptInit: Some(C_MessageEncryptInit),
    C_EncryptMessage: Some(C_EncryptMessage),
    C_EncryptMessageBegin: Some(C_EncryptMessageBegin),
    C_EncryptMessageNext: Some(C_EncryptMessageNext),
    C_MessageEncryptFinal: Some(C_MessageEncryptFinal),
    C_MessageDecryptInit: Some(C_MessageDecryptInit),
    C_DecryptMessage: Some(C_DecryptMessage),
    C_DecryptMessageBegin: Some(C_DecryptMessageBegin),
    C_DecryptMessageNext: Some(C_DecryptMessageNext),
    C_MessageDecryptFinal: Some(C_MessageDecryptFinal),
    C_MessageSignInit: Some(C_MessageSignInit),
    C_SignMessage: Some(C_SignMessage),
    C_SignMessageBegin: Some(C_SignMessageBegin),
    C_SignMessageNext: Some(C_SignMessageNext),
    C_MessageSignFinal: Some(C_MessageSignFinal),
    C_MessageVerifyInit: Some(C_MessageVerifyInit),
    C_VerifyMessage: Some(C_VerifyMessage),
    C_VerifyMessageBegin: Some(C_VerifyMessageBegin),
    C_VerifyMessageNext: Some(C_VerifyMessageNext),
    C_MessageVerifyFinal: Some(C_MessageVerifyFinal),
});

/// The interfaces, most capable first: `C_GetInterface` without a name or
/// version returns the first.
struct Interfaces([CK_INTERFACE; 2]);

// SAFETY: the pointers inside point to immutable statics; nothing writes
// through them (the spec gives clients read-only use of interfaces).
unsafe impl Sync for Interfaces {}

static INTERFACES: Interfaces = Interfaces([
    CK_INTERFACE {
        pInterfaceName: NAME.as_ptr() as *mut CK_UTF8CHAR,
        pFunctionList: &FUNCTION_LIST_3_0 as *const CK_FUNCTION_LIST_3_0 as *mut c_void,
        flags: 0,
    },
    CK_INTERFACE {
        pInterfaceName: NAME.as_ptr() as *mut CK_UTF8CHAR,
        pFunctionList: &super::list::FUNCTION_LIST as *const CK_FUNCTION_LIST as *mut c_void,
        flags: 0,
    },
]);

/// The version at the head of an interface's function list: both list
/// layouts start with a `CK_VERSION`.
fn list_version(i: &CK_INTERFACE) -> CK_VERSION {
    // SAFETY: every pFunctionList in INTERFACES points to a function list
    // static, whose first field is its CK_VERSION.
    unsafe { *(i.pFunctionList as *const CK_VERSION) }
}

cryptoki_fn!(unexported get_info_3_0(p_info: *mut CK_INFO) {
    get_info(p_info, VERSION_3_0)
});

// PKCS#11 3.0 §5.8–5.13: "C_SignInit can be called with pMechanism set to
// NULL_PTR to terminate an active signature operation" (and likewise for
// each kind). Our operations can always be ended, so
// CKR_OPERATION_CANCEL_FAILED never arises. With no operation of that kind
// active there is nothing to end and the call succeeds, as C_SessionCancel
// does: the text names no other result, and CKR_OPERATION_NOT_INITIALIZED is
// not among these functions' return values. The 2.40 list keeps 2.40's
// answer, CKR_ARGUMENTS_BAD: 2.40 has no such form. C_SignRecoverInit stays
// unsupported whatever its arguments: no sign-recover operation ever exists.
fn cancel_or(
    h: CK_SESSION_HANDLE,
    p_mechanism: *mut CK_MECHANISM,
    flag: CK_FLAGS,
    init: impl FnOnce() -> crate::error::Result<()>,
) -> crate::error::Result<()> {
    if p_mechanism.is_null() {
        return module()?.session_cancel(h, flag);
    }
    init()
}

cryptoki_fn!(unexported sign_init_3_0(h: CK_SESSION_HANDLE, p_mechanism: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE) {
    cancel_or(h, p_mechanism, CKF_SIGN, || op_init(h, OpKind::Sign, p_mechanism, key))
});

cryptoki_fn!(unexported verify_init_3_0(h: CK_SESSION_HANDLE, p_mechanism: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE) {
    cancel_or(h, p_mechanism, CKF_VERIFY, || op_init(h, OpKind::Verify, p_mechanism, key))
});

cryptoki_fn!(unexported verify_recover_init_3_0(h: CK_SESSION_HANDLE, p_mechanism: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE) {
    cancel_or(h, p_mechanism, CKF_VERIFY_RECOVER, || op_init(h, OpKind::VerifyRecover, p_mechanism, key))
});

cryptoki_fn!(unexported encrypt_init_3_0(h: CK_SESSION_HANDLE, p_mechanism: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE) {
    cancel_or(h, p_mechanism, CKF_ENCRYPT, || op_init(h, OpKind::Encrypt, p_mechanism, key))
});

cryptoki_fn!(unexported decrypt_init_3_0(h: CK_SESSION_HANDLE, p_mechanism: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE) {
    cancel_or(h, p_mechanism, CKF_DECRYPT, || op_init(h, OpKind::Decrypt, p_mechanism, key))
});

cryptoki_fn!(unexported digest_init_3_0(h: CK_SESSION_HANDLE, p_mechanism: *mut CK_MECHANISM) {
    cancel_or(h, p_mechanism, CKF_DIGEST, || digest_init(h, p_mechanism))
});

// Callable before C_Initialize, like C_GetFunctionList.
cryptoki_fn!(C_GetInterfaceList(p_list: *mut CK_INTERFACE, pul_count: *mut CK_ULONG) {
    write_list(&INTERFACES.0, p_list, pul_count)
});

cryptoki_fn!(C_GetInterface(p_name: *mut CK_UTF8CHAR, p_version: *mut CK_VERSION, pp_interface: *mut *mut CK_INTERFACE, flags: CK_FLAGS) {
    let slot = out(pp_interface)?;
    let name = (!p_name.is_null()).then(|| CStr::from_ptr(p_name as *const std::ffi::c_char));
    let version = p_version.as_ref().copied();
    let found = INTERFACES.0.iter().find(|i| {
        name.is_none_or(|n| n == NAME)
            && version.is_none_or(|v| {
                let l = list_version(i);
                (l.major, l.minor) == (v.major, v.minor)
            })
            && i.flags & flags == flags
    });
    match found {
        Some(i) => {
            *slot = i as *const CK_INTERFACE as *mut CK_INTERFACE;
            Ok(())
        }
        None => Err(Error::new(CKR_ARGUMENTS_BAD)),
    }
});

// Like C_Login, the PIN and the user name are deliberately not read.
cryptoki_fn!(C_LoginUser(h: CK_SESSION_HANDLE, user: CK_USER_TYPE, _pin: *mut CK_UTF8CHAR, _pin_len: CK_ULONG, _username: *mut CK_UTF8CHAR, _username_len: CK_ULONG) {
    module()?.login(h, user)
});

cryptoki_fn!(C_SessionCancel(h: CK_SESSION_HANDLE, flags: CK_FLAGS) {
    module()?.session_cancel(h, flags)
});

cryptoki_fn!(C_MessageEncryptInit(_h: CK_SESSION_HANDLE, _m: *mut CK_MECHANISM, _k: CK_OBJECT_HANDLE) { no() });
cryptoki_fn!(C_EncryptMessage(_h: CK_SESSION_HANDLE, _p: *mut c_void, _pl: CK_ULONG, _a: *mut CK_BYTE, _al: CK_ULONG, _d: *mut CK_BYTE, _dl: CK_ULONG, _o: *mut CK_BYTE, _ol: *mut CK_ULONG) { no() });
cryptoki_fn!(C_EncryptMessageBegin(_h: CK_SESSION_HANDLE, _p: *mut c_void, _pl: CK_ULONG, _a: *mut CK_BYTE, _al: CK_ULONG) { no() });
cryptoki_fn!(C_EncryptMessageNext(_h: CK_SESSION_HANDLE, _p: *mut c_void, _pl: CK_ULONG, _d: *mut CK_BYTE, _dl: CK_ULONG, _o: *mut CK_BYTE, _ol: *mut CK_ULONG, _f: CK_FLAGS) { no() });
cryptoki_fn!(C_MessageEncryptFinal(_h: CK_SESSION_HANDLE) { no() });
cryptoki_fn!(C_MessageDecryptInit(_h: CK_SESSION_HANDLE, _m: *mut CK_MECHANISM, _k: CK_OBJECT_HANDLE) { no() });
cryptoki_fn!(C_DecryptMessage(_h: CK_SESSION_HANDLE, _p: *mut c_void, _pl: CK_ULONG, _a: *mut CK_BYTE, _al: CK_ULONG, _d: *mut CK_BYTE, _dl: CK_ULONG, _o: *mut CK_BYTE, _ol: *mut CK_ULONG) { no() });
cryptoki_fn!(C_DecryptMessageBegin(_h: CK_SESSION_HANDLE, _p: *mut c_void, _pl: CK_ULONG, _a: *mut CK_BYTE, _al: CK_ULONG) { no() });
cryptoki_fn!(C_DecryptMessageNext(_h: CK_SESSION_HANDLE, _p: *mut c_void, _pl: CK_ULONG, _d: *mut CK_BYTE, _dl: CK_ULONG, _o: *mut CK_BYTE, _ol: *mut CK_ULONG, _f: CK_FLAGS) { no() });
cryptoki_fn!(C_MessageDecryptFinal(_h: CK_SESSION_HANDLE) { no() });
cryptoki_fn!(C_MessageSignInit(_h: CK_SESSION_HANDLE, _m: *mut CK_MECHANISM, _k: CK_OBJECT_HANDLE) { no() });
cryptoki_fn!(C_SignMessage(_h: CK_SESSION_HANDLE, _p: *mut c_void, _pl: CK_ULONG, _d: *mut CK_BYTE, _dl: CK_ULONG, _o: *mut CK_BYTE, _ol: *mut CK_ULONG) { no() });
cryptoki_fn!(C_SignMessageBegin(_h: CK_SESSION_HANDLE, _p: *mut c_void, _pl: CK_ULONG) { no() });
cryptoki_fn!(C_SignMessageNext(_h: CK_SESSION_HANDLE, _p: *mut c_void, _pl: CK_ULONG, _d: *mut CK_BYTE, _dl: CK_ULONG, _o: *mut CK_BYTE, _ol: *mut CK_ULONG) { no() });
cryptoki_fn!(C_MessageSignFinal(_h: CK_SESSION_HANDLE) { no() });
cryptoki_fn!(C_MessageVerifyInit(_h: CK_SESSION_HANDLE, _m: *mut CK_MECHANISM, _k: CK_OBJECT_HANDLE) { no() });
cryptoki_fn!(C_VerifyMessage(_h: CK_SESSION_HANDLE, _p: *mut c_void, _pl: CK_ULONG, _d: *mut CK_BYTE, _dl: CK_ULONG, _s: *mut CK_BYTE, _sl: CK_ULONG) { no() });
cryptoki_fn!(C_VerifyMessageBegin(_h: CK_SESSION_HANDLE, _p: *mut c_void, _pl: CK_ULONG) { no() });
cryptoki_fn!(C_VerifyMessageNext(_h: CK_SESSION_HANDLE, _p: *mut c_void, _pl: CK_ULONG, _d: *mut CK_BYTE, _dl: CK_ULONG, _s: *mut CK_BYTE, _sl: CK_ULONG) { no() });
cryptoki_fn!(C_MessageVerifyFinal(_h: CK_SESSION_HANDLE) { no() });

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_3_0_slot_is_filled() {
        let words = (std::mem::size_of::<CK_FUNCTION_LIST_3_0>() - std::mem::size_of::<usize>())
            / std::mem::size_of::<usize>();
        assert_eq!(words, 68 + 24);
        let base = &FUNCTION_LIST_3_0 as *const CK_FUNCTION_LIST_3_0 as *const usize;
        for i in 1..=words {
            assert_ne!(unsafe { *base.add(i) }, 0, "function slot {i} is NULL");
        }
    }

    fn get(name: Option<&CStr>, version: Option<(u8, u8)>, flags: CK_FLAGS) -> Option<CK_VERSION> {
        let mut v = version.map(|(major, minor)| CK_VERSION { major, minor });
        let mut p: *mut CK_INTERFACE = std::ptr::null_mut();
        let rv = unsafe {
            C_GetInterface(
                name.map_or(std::ptr::null_mut(), |n| n.as_ptr() as *mut CK_UTF8CHAR),
                v.as_mut()
                    .map_or(std::ptr::null_mut(), |v| v as *mut CK_VERSION),
                &mut p,
                flags,
            )
        };
        if rv != CKR_OK {
            assert_eq!(rv, CKR_ARGUMENTS_BAD);
            return None;
        }
        let i = unsafe { &*p };
        assert_eq!(
            unsafe { CStr::from_ptr(i.pInterfaceName as *const _) },
            NAME
        );
        Some(list_version(i))
    }

    #[test]
    fn interfaces_are_chosen_by_name_version_and_flags() {
        let v = |o: Option<CK_VERSION>| o.map(|v| (v.major, v.minor));
        assert_eq!(v(get(None, None, 0)), Some((3, 0)));
        assert_eq!(v(get(Some(c"PKCS 11"), None, 0)), Some((3, 0)));
        assert_eq!(v(get(Some(c"PKCS 11"), Some((2, 40)), 0)), Some((2, 40)));
        assert_eq!(v(get(None, Some((3, 0)), 0)), Some((3, 0)));
        assert_eq!(v(get(None, Some((3, 1)), 0)), None);
        assert_eq!(v(get(Some(c"Vendor NSS"), None, 0)), None);
        // Not fork-safe, and honest about it.
        assert_eq!(v(get(None, None, CKF_INTERFACE_FORK_SAFE)), None);
        let rv = unsafe {
            C_GetInterface(
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
            )
        };
        assert_eq!(rv, CKR_ARGUMENTS_BAD);
    }

    #[test]
    fn interface_list_follows_the_two_call_convention() {
        let mut n: CK_ULONG = 0;
        assert_eq!(
            unsafe { C_GetInterfaceList(std::ptr::null_mut(), &mut n) },
            CKR_OK
        );
        assert_eq!(n, 2);
        let mut one = [INTERFACES.0[0]; 1];
        n = 1;
        assert_eq!(
            unsafe { C_GetInterfaceList(one.as_mut_ptr(), &mut n) },
            CKR_BUFFER_TOO_SMALL
        );
        assert_eq!(n, 2);
        let mut all = [INTERFACES.0[0]; 2];
        assert_eq!(
            unsafe { C_GetInterfaceList(all.as_mut_ptr(), &mut n) },
            CKR_OK
        );
        let versions: Vec<_> = all
            .iter()
            .map(|i| (list_version(i).major, list_version(i).minor))
            .collect();
        assert_eq!(versions, [(3, 0), (2, 40)]);
    }
}
