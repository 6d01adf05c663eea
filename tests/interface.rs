//! PKCS#11 3.0 through `C_GetInterface`, as the `cryptoki` crate and p11-kit
//! reach the module. Needs no private key: runs on any Linux host and in the
//! lab. One test, because PKCS#11 state is per process.

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki_sys::*;
use keyring_pkcs11_testkit::Module;
use std::ptr::null_mut;

mod common;

fn version(v: CK_VERSION) -> (u8, u8) {
    (v.major, v.minor)
}

#[test]
fn the_3_0_interface_is_real_and_each_list_reports_its_own_version() {
    let path = common::module_path();
    unsafe {
        let lib = cryptoki_sys::Pkcs11::new(&path).expect("dlopen");
        let mut n: CK_ULONG = 0;
        assert_eq!(lib.C_GetInterfaceList(null_mut(), &mut n), CKR_OK);
        assert_eq!(n, 2);
        let mut ifaces = [CK_INTERFACE {
            pInterfaceName: null_mut(),
            pFunctionList: null_mut(),
            flags: 0,
        }; 2];
        assert_eq!(lib.C_GetInterfaceList(ifaces.as_mut_ptr(), &mut n), CKR_OK);
        let v3 = &*(ifaces[0].pFunctionList as *const CK_FUNCTION_LIST_3_0);
        let v2 = &*(ifaces[1].pFunctionList as *const CK_FUNCTION_LIST);
        assert_eq!(version(v3.version), (3, 0));
        assert_eq!(version(v2.version), (2, 40));
        let mut via_symbol: *mut CK_FUNCTION_LIST = null_mut();
        assert_eq!(lib.C_GetFunctionList(&mut via_symbol), CKR_OK);
        assert_eq!(via_symbol as *const CK_FUNCTION_LIST, v2 as *const _);
        // C_GetInterface by name and version finds the same 3.0 list.
        let module = Module::load(&path).expect("dlopen");
        assert_eq!(
            module
                .functions_3_0()
                .map(|l| l as *const CK_FUNCTION_LIST_3_0),
            Some(v3 as *const _)
        );

        assert_eq!(v3.C_Initialize.unwrap()(null_mut()), CKR_OK);
        // Each list's C_GetInfo matches the list's own version.
        let mut info: CK_INFO = std::mem::zeroed();
        assert_eq!(v3.C_GetInfo.unwrap()(&mut info), CKR_OK);
        assert_eq!(version(info.cryptokiVersion), (3, 0));
        assert_eq!(v2.C_GetInfo.unwrap()(&mut info), CKR_OK);
        assert_eq!(version(info.cryptokiVersion), (2, 40));
        assert_eq!(lib.C_GetInfo(&mut info), CKR_OK);
        assert_eq!(version(info.cryptokiVersion), (2, 40));

        // Slot 0 is the session keyring, which every process has.
        let mut h: CK_SESSION_HANDLE = 0;
        assert_eq!(
            v3.C_OpenSession.unwrap()(0, CKF_SERIAL_SESSION, null_mut(), None, &mut h),
            CKR_OK
        );
        let mut pin = *b"1234";
        let mut user = *b"anyone";
        assert_eq!(
            v3.C_LoginUser.unwrap()(h, CKU_USER, pin.as_mut_ptr(), 4, user.as_mut_ptr(), 6),
            CKR_OK
        );
        let mut si: CK_SESSION_INFO = std::mem::zeroed();
        assert_eq!(v3.C_GetSessionInfo.unwrap()(h, &mut si), CKR_OK);
        assert_eq!(si.state, CKS_RO_USER_FUNCTIONS);
        assert_eq!(
            v3.C_LoginUser.unwrap()(h, 77, pin.as_mut_ptr(), 4, user.as_mut_ptr(), 6),
            CKR_USER_TYPE_INVALID
        );
        assert_eq!(v3.C_Logout.unwrap()(h), CKR_OK);

        // C_SessionCancel ends exactly what it names.
        let mut digest = CK_MECHANISM {
            mechanism: CKM_SHA256,
            pParameter: null_mut(),
            ulParameterLen: 0,
        };
        let mut data = *b"abc";
        assert_eq!(v3.C_DigestInit.unwrap()(h, &mut digest), CKR_OK);
        assert_eq!(v3.C_FindObjectsInit.unwrap()(h, null_mut(), 0), CKR_OK);
        assert_eq!(v3.C_SessionCancel.unwrap()(h, CKF_FIND_OBJECTS), CKR_OK);
        let mut obj: CK_OBJECT_HANDLE = 0;
        let mut count: CK_ULONG = 0;
        assert_eq!(
            v3.C_FindObjects.unwrap()(h, &mut obj, 1, &mut count),
            CKR_OPERATION_NOT_INITIALIZED
        );
        assert_eq!(v3.C_DigestUpdate.unwrap()(h, data.as_mut_ptr(), 3), CKR_OK);
        assert_eq!(v3.C_SessionCancel.unwrap()(h, CKF_DIGEST), CKR_OK);
        assert_eq!(
            v3.C_DigestUpdate.unwrap()(h, data.as_mut_ptr(), 3),
            CKR_OPERATION_NOT_INITIALIZED
        );
        assert_eq!(
            v3.C_SessionCancel.unwrap()(h + 1_000_000, CKF_SIGN),
            CKR_SESSION_HANDLE_INVALID
        );

        // 3.0's cancel form: a NULL mechanism ends the active operation of
        // that kind (here a digest, which needs no key); the 2.40 list keeps
        // 2.40's answer and the operation goes on.
        let mut sha = CK_MECHANISM {
            mechanism: CKM_SHA256,
            pParameter: null_mut(),
            ulParameterLen: 0,
        };
        assert_eq!(v3.C_DigestInit.unwrap()(h, &mut sha), CKR_OK);
        assert_eq!(v3.C_DigestInit.unwrap()(h, null_mut()), CKR_OK);
        assert_eq!(
            v3.C_DigestUpdate.unwrap()(h, data.as_mut_ptr(), 3),
            CKR_OPERATION_NOT_INITIALIZED
        );
        assert_eq!(v2.C_DigestInit.unwrap()(h, &mut sha), CKR_OK);
        assert_eq!(v2.C_DigestInit.unwrap()(h, null_mut()), CKR_ARGUMENTS_BAD);
        assert_eq!(v2.C_DigestUpdate.unwrap()(h, data.as_mut_ptr(), 3), CKR_OK);
        assert_eq!(v3.C_DigestInit.unwrap()(h, null_mut()), CKR_OK);

        // Message-based operations: present, and honestly unsupported.
        let mut mech = CK_MECHANISM {
            mechanism: CKM_SHA256_RSA_PKCS,
            pParameter: null_mut(),
            ulParameterLen: 0,
        };
        assert_eq!(
            v3.C_MessageSignInit.unwrap()(h, &mut mech, 1),
            CKR_FUNCTION_NOT_SUPPORTED
        );
        assert_eq!(
            v3.C_MessageEncryptFinal.unwrap()(h),
            CKR_FUNCTION_NOT_SUPPORTED
        );
        assert_eq!(v3.C_Finalize.unwrap()(null_mut()), CKR_OK);
    }

    // The cryptoki crate prefers C_GetInterface: it gets the 3.0 list.
    let p = Pkcs11::new(&path).expect("load module");
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .expect("C_Initialize");
    let info = p.get_library_info().expect("C_GetInfo");
    let v = info.cryptoki_version();
    assert_eq!((v.major(), v.minor()), (3, 0));
    assert!(p.is_fn_supported(cryptoki::context::Function::SessionCancel));
    assert!(!p.get_slots_with_token().unwrap().is_empty());
    p.finalize().unwrap();
}
