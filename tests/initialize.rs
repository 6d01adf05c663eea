//! C_Initialize/C_Finalize as the real clients call them. Needs no private
//! key, so it runs on any Linux host as well as in the lab.

mod common;

use common::functions;
use cryptoki_sys::*;
use std::ffi::c_void;
use std::ptr::null_mut;

unsafe extern "C" fn create(m: *mut *mut c_void) -> CK_RV {
    unsafe { *m = Box::into_raw(Box::new(0u8)) as *mut c_void };
    CKR_OK
}
unsafe extern "C" fn destroy(m: *mut c_void) -> CK_RV {
    drop(unsafe { Box::from_raw(m as *mut u8) });
    CKR_OK
}
unsafe extern "C" fn lock(_: *mut c_void) -> CK_RV {
    CKR_OK
}

fn args(flags: CK_FLAGS, callbacks: bool) -> CK_C_INITIALIZE_ARGS {
    CK_C_INITIALIZE_ARGS {
        CreateMutex: callbacks.then_some(create as unsafe extern "C" fn(*mut *mut c_void) -> CK_RV),
        DestroyMutex: callbacks.then_some(destroy as unsafe extern "C" fn(*mut c_void) -> CK_RV),
        LockMutex: callbacks.then_some(lock as unsafe extern "C" fn(*mut c_void) -> CK_RV),
        UnlockMutex: callbacks.then_some(lock as unsafe extern "C" fn(*mut c_void) -> CK_RV),
        flags,
        pReserved: null_mut(),
    }
}

/// PKCS#11 state is per process: the tests take turns.
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn initialize_variants_finalize_and_reinitialize() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let f = functions();
    unsafe {
        let init = f.C_Initialize.unwrap();
        let fin = f.C_Finalize.unwrap();
        let mut n: CK_ULONG = 0;
        assert_eq!(
            f.C_GetSlotList.unwrap()(CK_FALSE, null_mut(), &mut n),
            CKR_CRYPTOKI_NOT_INITIALIZED
        );
        assert_eq!(fin(null_mut()), CKR_CRYPTOKI_NOT_INITIALIZED);

        // NULL (OpenSSH), OS locking (GnuTLS, libp11), callbacks alone, and
        // both together (p11-kit).
        let mut variants = vec![
            None,
            Some(args(CKF_OS_LOCKING_OK, false)),
            Some(args(
                CKF_OS_LOCKING_OK | CKF_LIBRARY_CANT_CREATE_OS_THREADS,
                false,
            )),
            Some(args(0, true)),
            Some(args(CKF_OS_LOCKING_OK, true)),
        ];
        // libp11 puts its own pointer in pReserved; that must not break it.
        let mut reserved = 0u8;
        let mut a = args(CKF_OS_LOCKING_OK, false);
        a.pReserved = &mut reserved as *mut u8 as *mut c_void;
        variants.push(Some(a));
        for v in variants.iter_mut() {
            let p = v.as_mut().map_or(null_mut(), |a| {
                a as *mut CK_C_INITIALIZE_ARGS as *mut c_void
            });
            assert_eq!(init(p), CKR_OK);
            assert_eq!(init(p), CKR_CRYPTOKI_ALREADY_INITIALIZED);
            assert_eq!(
                f.C_GetSlotList.unwrap()(CK_TRUE, null_mut(), &mut n),
                CKR_OK
            );
            assert!(n >= 2, "session and user tokens are always present");
            assert_eq!(fin(null_mut()), CKR_OK);
        }

        // Only some callbacks: refused.
        let mut partial = args(0, true);
        partial.LockMutex = None;
        assert_eq!(
            init(&mut partial as *mut _ as *mut c_void),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(fin(null_mut()), CKR_CRYPTOKI_NOT_INITIALIZED);

        // C_Finalize drops every session: handles from before are invalid,
        // and new handles are never reused.
        assert_eq!(init(null_mut()), CKR_OK);
        let mut h = 0;
        assert_eq!(
            f.C_OpenSession.unwrap()(
                1,
                CKF_SERIAL_SESSION | CKF_RW_SESSION,
                null_mut(),
                None,
                &mut h
            ),
            CKR_OK
        );
        assert_eq!(fin(null_mut()), CKR_OK);
        assert_eq!(f.C_CloseSession.unwrap()(h), CKR_CRYPTOKI_NOT_INITIALIZED);
        assert_eq!(init(null_mut()), CKR_OK);
        assert_eq!(f.C_CloseSession.unwrap()(h), CKR_SESSION_HANDLE_INVALID);
        let mut h2 = 0;
        assert_eq!(
            f.C_OpenSession.unwrap()(1, CKF_SERIAL_SESSION, null_mut(), None, &mut h2),
            CKR_OK
        );
        assert_ne!(h, h2);
        let mut reserved = 1u8;
        assert_eq!(
            fin(&mut reserved as *mut u8 as *mut c_void),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(fin(null_mut()), CKR_OK);
    }
}

#[test]
fn function_list_is_complete_and_2_40() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let f = functions();
    assert_eq!((f.version.major, f.version.minor), (2, 40));
    // Unimplemented functions answer honestly instead of being NULL, and,
    // like every other, not before C_Initialize.
    unsafe {
        let init_token = || f.C_InitToken.unwrap()(0, null_mut(), 0, null_mut());
        assert_eq!(init_token(), CKR_CRYPTOKI_NOT_INITIALIZED);
        assert_eq!(
            f.C_GetFunctionStatus.unwrap()(0),
            CKR_CRYPTOKI_NOT_INITIALIZED
        );
        assert_eq!(f.C_Initialize.unwrap()(null_mut()), CKR_OK);
        assert_eq!(init_token(), CKR_FUNCTION_NOT_SUPPORTED);
        assert_eq!(f.C_GetFunctionStatus.unwrap()(0), CKR_FUNCTION_NOT_PARALLEL);
        assert_eq!(f.C_Finalize.unwrap()(null_mut()), CKR_OK);
    }
}
