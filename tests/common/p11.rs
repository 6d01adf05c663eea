//! A thin client over the raw function list, for tests that fork or race
//! `C_Finalize`: every call returns the module's `CK_RV` untouched, so a
//! test can check exactly which error it got.

use super::functions;
use cryptoki_sys::*;
use std::ptr::null_mut;

#[derive(Clone, Copy)]
pub struct P11(&'static CK_FUNCTION_LIST);

/// A failed call: which function and what it returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fail {
    pub func: &'static str,
    pub rv: CK_RV,
}

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} -> {}", self.func, super::rv_name(self.rv))
    }
}

fn check(func: &'static str, rv: CK_RV) -> Result<(), Fail> {
    if rv == CKR_OK {
        Ok(())
    } else {
        Err(Fail { func, rv })
    }
}

/// `CK_C_INITIALIZE_ARGS` with `CKF_OS_LOCKING_OK`.
pub fn os_locking_args() -> CK_C_INITIALIZE_ARGS {
    CK_C_INITIALIZE_ARGS {
        CreateMutex: None,
        DestroyMutex: None,
        LockMutex: None,
        UnlockMutex: None,
        flags: CKF_OS_LOCKING_OK,
        pReserved: null_mut(),
    }
}

impl P11 {
    pub fn get() -> P11 {
        P11(functions())
    }

    /// `C_Initialize(args)`; `None` passes NULL.
    pub fn initialize(self, args: Option<&CK_C_INITIALIZE_ARGS>) -> CK_RV {
        let p = args.map_or(null_mut(), |a| a as *const _ as *mut std::ffi::c_void);
        unsafe { self.0.C_Initialize.unwrap()(p) }
    }

    pub fn finalize(self) -> CK_RV {
        unsafe { self.0.C_Finalize.unwrap()(null_mut()) }
    }

    pub fn get_info(self) -> CK_RV {
        let mut info = unsafe { std::mem::zeroed::<CK_INFO>() };
        unsafe { self.0.C_GetInfo.unwrap()(&mut info) }
    }

    pub fn slots(self) -> Result<Vec<CK_SLOT_ID>, Fail> {
        let f = self.0.C_GetSlotList.unwrap();
        let mut n = 0;
        check("C_GetSlotList", unsafe { f(CK_TRUE, null_mut(), &mut n) })?;
        let mut v = vec![0; n as usize];
        check("C_GetSlotList", unsafe {
            f(CK_TRUE, v.as_mut_ptr(), &mut n)
        })?;
        v.truncate(n as usize);
        Ok(v)
    }

    pub fn token_label(self, slot: CK_SLOT_ID) -> Result<String, Fail> {
        let mut info = unsafe { std::mem::zeroed::<CK_TOKEN_INFO>() };
        check("C_GetTokenInfo", unsafe {
            self.0.C_GetTokenInfo.unwrap()(slot, &mut info)
        })?;
        Ok(String::from_utf8_lossy(&info.label).trim_end().to_string())
    }

    pub fn slot_labelled(self, label: &str) -> Result<CK_SLOT_ID, Fail> {
        for s in self.slots()? {
            if self.token_label(s)? == label {
                return Ok(s);
            }
        }
        panic!("no token labelled {label:?}")
    }

    pub fn open(self, slot: CK_SLOT_ID) -> Result<CK_SESSION_HANDLE, Fail> {
        let mut h = 0;
        let flags = CKF_SERIAL_SESSION | CKF_RW_SESSION;
        check("C_OpenSession", unsafe {
            self.0.C_OpenSession.unwrap()(slot, flags, null_mut(), None, &mut h)
        })?;
        Ok(h)
    }

    pub fn close(self, h: CK_SESSION_HANDLE) -> CK_RV {
        unsafe { self.0.C_CloseSession.unwrap()(h) }
    }

    pub fn close_all(self, slot: CK_SLOT_ID) -> CK_RV {
        unsafe { self.0.C_CloseAllSessions.unwrap()(slot) }
    }

    pub fn session_info(self, h: CK_SESSION_HANDLE) -> CK_RV {
        let mut info = unsafe { std::mem::zeroed::<CK_SESSION_INFO>() };
        unsafe { self.0.C_GetSessionInfo.unwrap()(h, &mut info) }
    }

    /// The objects of this class with this label. A failed C_FindObjects
    /// still gets its C_FindObjectsFinal, as a client would do.
    pub fn find(
        self,
        h: CK_SESSION_HANDLE,
        class: CK_OBJECT_CLASS,
        label: &str,
    ) -> Result<Vec<CK_OBJECT_HANDLE>, Fail> {
        let class_bytes = class.to_ne_bytes();
        let mut tpl = [
            super::attr(CKA_CLASS, &class_bytes),
            super::attr(CKA_LABEL, label.as_bytes()),
        ];
        check("C_FindObjectsInit", unsafe {
            self.0.C_FindObjectsInit.unwrap()(h, tpl.as_mut_ptr(), tpl.len() as CK_ULONG)
        })?;
        let mut found = vec![0; 16];
        let mut n = 0;
        let rv = unsafe {
            self.0.C_FindObjects.unwrap()(h, found.as_mut_ptr(), found.len() as CK_ULONG, &mut n)
        };
        let rv_final = unsafe { self.0.C_FindObjectsFinal.unwrap()(h) };
        check("C_FindObjects", rv)?;
        check("C_FindObjectsFinal", rv_final)?;
        found.truncate(n as usize);
        Ok(found)
    }

    /// One `CKM_SHA256_RSA_PKCS` signature (C_SignInit + C_Sign).
    pub fn sign(
        self,
        h: CK_SESSION_HANDLE,
        key: CK_OBJECT_HANDLE,
        data: &[u8],
    ) -> Result<Vec<u8>, Fail> {
        let mut mech = CK_MECHANISM {
            mechanism: CKM_SHA256_RSA_PKCS,
            pParameter: null_mut(),
            ulParameterLen: 0,
        };
        check("C_SignInit", unsafe {
            self.0.C_SignInit.unwrap()(h, &mut mech, key)
        })?;
        let mut sig = vec![0u8; 512];
        let mut len = sig.len() as CK_ULONG;
        check("C_Sign", unsafe {
            self.0.C_Sign.unwrap()(
                h,
                data.as_ptr() as *mut u8,
                data.len() as CK_ULONG,
                sig.as_mut_ptr(),
                &mut len,
            )
        })?;
        sig.truncate(len as usize);
        Ok(sig)
    }
}

/// Whether `sig` is a valid `CKM_SHA256_RSA_PKCS` signature of `data`.
pub fn verifies(public: &rsa::RsaPublicKey, data: &[u8], sig: &[u8]) -> bool {
    use sha2::Digest;
    public
        .verify(
            rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
            &sha2::Sha256::digest(data),
            sig,
        )
        .is_ok()
}
