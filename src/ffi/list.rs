//! `C_GetFunctionList`: a complete PKCS#11 2.40 function list. Its version
//! says 2.40 because its layout is 2.40; clients (p11-kit) trust that field to
//! decide which slots exist.

use super::crypto::*;
use super::cryptoki_fn;
use super::general::*;
use super::keys::*;
use super::object::*;
use super::out;
use super::session::*;
use super::slot::*;
use super::unsupported::*;
use cryptoki_sys::*;

/// A function list literal: the 68 entries of PKCS#11 2.40 in their order,
/// shared by the 2.40 and 3.0 lists, which differ in `version`, in
/// `C_GetInfo` (each reports its own list's version), in the `*Init`
/// functions (3.0 ends an operation when given a NULL mechanism) and in
/// what 3.0 adds.
macro_rules! function_list {
    ($list:ident {
        version: $version:expr,
        C_GetInfo: $get_info:expr,
        inits: [$encrypt:expr, $decrypt:expr, $digest:expr, $sign:expr, $verify:expr, $verify_recover:expr],
        $($more:tt)*
    }) => {
        $list {
            version: $version,
            C_GetInfo: Some($get_info),
            C_Initialize: Some(C_Initialize),
            C_Finalize: Some(C_Finalize),
            C_GetFunctionList: Some(C_GetFunctionList),
            C_GetSlotList: Some(C_GetSlotList),
            C_GetSlotInfo: Some(C_GetSlotInfo),
            C_GetTokenInfo: Some(C_GetTokenInfo),
            C_GetMechanismList: Some(C_GetMechanismList),
            C_GetMechanismInfo: Some(C_GetMechanismInfo),
            C_InitToken: Some(C_InitToken),
            C_InitPIN: Some(C_InitPIN),
            C_SetPIN: Some(C_SetPIN),
            C_OpenSession: Some(C_OpenSession),
            C_CloseSession: Some(C_CloseSession),
            C_CloseAllSessions: Some(C_CloseAllSessions),
            C_GetSessionInfo: Some(C_GetSessionInfo),
            C_GetOperationState: Some(C_GetOperationState),
            C_SetOperationState: Some(C_SetOperationState),
            C_Login: Some(C_Login),
            C_Logout: Some(C_Logout),
            C_CreateObject: Some(C_CreateObject),
            C_CopyObject: Some(C_CopyObject),
            C_DestroyObject: Some(C_DestroyObject),
            C_GetObjectSize: Some(C_GetObjectSize),
            C_GetAttributeValue: Some(C_GetAttributeValue),
            C_SetAttributeValue: Some(C_SetAttributeValue),
            C_FindObjectsInit: Some(C_FindObjectsInit),
            C_FindObjects: Some(C_FindObjects),
            C_FindObjectsFinal: Some(C_FindObjectsFinal),
            C_EncryptInit: Some($encrypt),
            C_Encrypt: Some(C_Encrypt),
            C_EncryptUpdate: Some(C_EncryptUpdate),
            C_EncryptFinal: Some(C_EncryptFinal),
            C_DecryptInit: Some($decrypt),
            C_Decrypt: Some(C_Decrypt),
            C_DecryptUpdate: Some(C_DecryptUpdate),
            C_DecryptFinal: Some(C_DecryptFinal),
            C_DigestInit: Some($digest),
            C_Digest: Some(C_Digest),
            C_DigestUpdate: Some(C_DigestUpdate),
            C_DigestKey: Some(C_DigestKey),
            C_DigestFinal: Some(C_DigestFinal),
            C_SignInit: Some($sign),
            C_Sign: Some(C_Sign),
            C_SignUpdate: Some(C_SignUpdate),
            C_SignFinal: Some(C_SignFinal),
            C_SignRecoverInit: Some(C_SignRecoverInit),
            C_SignRecover: Some(C_SignRecover),
            C_VerifyInit: Some($verify),
            C_Verify: Some(C_Verify),
            C_VerifyUpdate: Some(C_VerifyUpdate),
            C_VerifyFinal: Some(C_VerifyFinal),
            C_VerifyRecoverInit: Some($verify_recover),
            C_VerifyRecover: Some(C_VerifyRecover),
            C_DigestEncryptUpdate: Some(C_DigestEncryptUpdate),
            C_DecryptDigestUpdate: Some(C_DecryptDigestUpdate),
            C_SignEncryptUpdate: Some(C_SignEncryptUpdate),
            C_DecryptVerifyUpdate: Some(C_DecryptVerifyUpdate),
            C_GenerateKey: Some(C_GenerateKey),
            C_GenerateKeyPair: Some(C_GenerateKeyPair),
            C_WrapKey: Some(C_WrapKey),
            C_UnwrapKey: Some(C_UnwrapKey),
            C_DeriveKey: Some(C_DeriveKey),
            C_SeedRandom: Some(C_SeedRandom),
            C_GenerateRandom: Some(C_GenerateRandom),
            C_GetFunctionStatus: Some(C_GetFunctionStatus),
            C_CancelFunction: Some(C_CancelFunction),
            C_WaitForSlotEvent: Some(C_WaitForSlotEvent),
            $($more)*
        }
    };
}
pub(super) use function_list;

pub(super) static FUNCTION_LIST: CK_FUNCTION_LIST = function_list!(CK_FUNCTION_LIST {
    version: CRYPTOKI_VERSION,
    C_GetInfo: C_GetInfo,
    inits: [
        C_EncryptInit,
        C_DecryptInit,
        C_DigestInit,
        C_SignInit,
        C_VerifyInit,
        C_VerifyRecoverInit
    ],
});

// Callable before C_Initialize, as the spec requires.
cryptoki_fn!(C_GetFunctionList(pp_function_list: *mut *mut CK_FUNCTION_LIST) {
    let slot = out(pp_function_list)?;
    *slot = &FUNCTION_LIST as *const CK_FUNCTION_LIST as *mut CK_FUNCTION_LIST;
    Ok(())
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slot_is_filled() {
        // The list is a repr(C) struct of a version followed by function
        // pointers only; none may be NULL.
        let words = (std::mem::size_of::<CK_FUNCTION_LIST>() - std::mem::size_of::<usize>())
            / std::mem::size_of::<usize>();
        assert_eq!(words, 68);
        let base = &FUNCTION_LIST as *const CK_FUNCTION_LIST as *const usize;
        for i in 1..=words {
            assert_ne!(unsafe { *base.add(i) }, 0, "function slot {i} is NULL");
        }
        assert_eq!(
            (FUNCTION_LIST.version.major, FUNCTION_LIST.version.minor),
            (2, 40)
        );
    }
}
