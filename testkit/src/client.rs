//! One method per PKCS#11 call (or per fixed sequence of calls, named in its
//! comment), returning what the module returned.

use crate::rv;
use crate::template::{Mechanism, Template};
use cryptoki_sys::*;
use std::ffi::c_void;
use std::ptr::null_mut;

/// A failed call: which function, and what it returned.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fail {
    pub func: &'static str,
    pub rv: CK_RV,
}

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.func, rv::describe(self.rv))
    }
}

/// With the value's name, for `unwrap()`'s message.
impl std::fmt::Debug for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fail({self})")
    }
}

impl std::error::Error for Fail {}

/// For callers whose errors are strings (softhsm-compare), so `?` works.
impl From<Fail> for String {
    fn from(f: Fail) -> String {
        f.to_string()
    }
}

/// The `CK_RV` of a call's result: `CKR_OK` for success. For tests that
/// expect one exact value whichever way the call went.
pub trait Rv {
    fn rv(&self) -> CK_RV;
}

impl<T> Rv for Result<T, Fail> {
    fn rv(&self) -> CK_RV {
        self.as_ref().err().map_or(CKR_OK, |f| f.rv)
    }
}

fn check(func: &'static str, rv: CK_RV) -> Result<(), Fail> {
    if rv == CKR_OK {
        Ok(())
    } else {
        Err(Fail { func, rv })
    }
}

/// `CK_C_INITIALIZE_ARGS` with `CKF_OS_LOCKING_OK`, as OpenSSH's and libp11's
/// callers pass them.
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

/// A token found by its label.
#[derive(Debug, Clone, Copy)]
pub struct Token {
    pub slot: CK_SLOT_ID,
    /// `CK_TOKEN_INFO.flags` (`CKF_LOGIN_REQUIRED`, …).
    pub flags: CK_FLAGS,
}

/// Calls into one loaded module. `Copy`, and shareable between threads: the
/// module's own locking is what is under test.
#[derive(Clone, Copy)]
pub struct Client<'m> {
    f: &'m CK_FUNCTION_LIST,
}

/// Calls one entry point of the list; a NULL entry is a bug of the module
/// under test, and panics with its name.
macro_rules! call {
    ($c:expr, $name:ident ( $($arg:expr),* $(,)? )) => {{
        let f = $c.f.$name.expect(concat!(stringify!($name), " is NULL in the function list"));
        // SAFETY: the list comes from the module's C_GetFunctionList; every
        // pointer argument is NULL where the call allows it, or points into
        // a live buffer of the length passed with it.
        unsafe { f($($arg),*) }
    }};
}

impl<'m> Client<'m> {
    pub fn new(f: &'m CK_FUNCTION_LIST) -> Self {
        Client { f }
    }

    /// The function list itself, for calls no method makes (NULL pointers,
    /// wrong lengths, two-call size queries).
    pub fn functions(self) -> &'m CK_FUNCTION_LIST {
        self.f
    }

    /// `C_Initialize(args)`; `None` passes NULL.
    pub fn initialize(self, args: Option<&CK_C_INITIALIZE_ARGS>) -> Result<(), Fail> {
        let p = args.map_or(null_mut(), |a| a as *const _ as *mut c_void);
        check("C_Initialize", call!(self, C_Initialize(p)))
    }

    pub fn finalize(self) -> Result<(), Fail> {
        check("C_Finalize", call!(self, C_Finalize(null_mut())))
    }

    pub fn info(self) -> Result<CK_INFO, Fail> {
        // SAFETY: a C struct of integers and byte arrays; all-zero is valid.
        let mut info: CK_INFO = unsafe { std::mem::zeroed() };
        check("C_GetInfo", call!(self, C_GetInfo(&mut info)))?;
        Ok(info)
    }

    /// The slots with a token: `C_GetSlotList` twice (count, then list).
    pub fn slots(self) -> Result<Vec<CK_SLOT_ID>, Fail> {
        let mut n: CK_ULONG = 0;
        check(
            "C_GetSlotList",
            call!(self, C_GetSlotList(CK_TRUE, null_mut(), &mut n)),
        )?;
        let mut v = vec![0; n as usize];
        check(
            "C_GetSlotList",
            call!(self, C_GetSlotList(CK_TRUE, v.as_mut_ptr(), &mut n)),
        )?;
        v.truncate(n as usize);
        Ok(v)
    }

    pub fn token_info(self, slot: CK_SLOT_ID) -> Result<CK_TOKEN_INFO, Fail> {
        // SAFETY: a C struct of integers and byte arrays; all-zero is valid.
        let mut info: CK_TOKEN_INFO = unsafe { std::mem::zeroed() };
        check(
            "C_GetTokenInfo",
            call!(self, C_GetTokenInfo(slot, &mut info)),
        )?;
        Ok(info)
    }

    /// The token with this label (blank-padded in `CK_TOKEN_INFO`), if
    /// any: `C_GetSlotList`, then `C_GetTokenInfo` of each slot in turn.
    pub fn token(self, label: &str) -> Result<Option<Token>, Fail> {
        for slot in self.slots()? {
            let info = self.token_info(slot)?;
            if String::from_utf8_lossy(&info.label).trim_end() == label {
                return Ok(Some(Token {
                    slot,
                    flags: info.flags,
                }));
            }
        }
        Ok(None)
    }

    fn open_session(self, slot: CK_SLOT_ID, flags: CK_FLAGS) -> Result<CK_SESSION_HANDLE, Fail> {
        let mut h = 0;
        check(
            "C_OpenSession",
            call!(self, C_OpenSession(slot, flags, null_mut(), None, &mut h)),
        )?;
        Ok(h)
    }

    /// A read-write session.
    pub fn open(self, slot: CK_SLOT_ID) -> Result<CK_SESSION_HANDLE, Fail> {
        self.open_session(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION)
    }

    /// A read-only session.
    pub fn open_ro(self, slot: CK_SLOT_ID) -> Result<CK_SESSION_HANDLE, Fail> {
        self.open_session(slot, CKF_SERIAL_SESSION)
    }

    pub fn close(self, h: CK_SESSION_HANDLE) -> Result<(), Fail> {
        check("C_CloseSession", call!(self, C_CloseSession(h)))
    }

    pub fn close_all(self, slot: CK_SLOT_ID) -> Result<(), Fail> {
        check("C_CloseAllSessions", call!(self, C_CloseAllSessions(slot)))
    }

    pub fn session_info(self, h: CK_SESSION_HANDLE) -> Result<CK_SESSION_INFO, Fail> {
        // SAFETY: a C struct of integers; all-zero is valid.
        let mut info: CK_SESSION_INFO = unsafe { std::mem::zeroed() };
        check(
            "C_GetSessionInfo",
            call!(self, C_GetSessionInfo(h, &mut info)),
        )?;
        Ok(info)
    }

    /// `C_Login` as `CKU_USER`.
    pub fn login(self, h: CK_SESSION_HANDLE, pin: &str) -> Result<(), Fail> {
        check(
            "C_Login",
            call!(
                self,
                C_Login(h, CKU_USER, pin.as_ptr() as *mut u8, pin.len() as CK_ULONG)
            ),
        )
    }

    /// `C_FindObjectsInit`, `C_FindObjects` in batches of `batch` until one
    /// comes back short, `C_FindObjectsFinal`. A failed `C_FindObjects` still
    /// gets its `C_FindObjectsFinal`, as a client would do, and is the error
    /// returned.
    pub fn find(
        self,
        h: CK_SESSION_HANDLE,
        t: &mut Template,
        batch: usize,
    ) -> Result<Vec<CK_OBJECT_HANDLE>, Fail> {
        check(
            "C_FindObjectsInit",
            call!(self, C_FindObjectsInit(h, t.as_mut_ptr(), t.count())),
        )?;
        let mut found = Vec::new();
        let mut buf = vec![0 as CK_OBJECT_HANDLE; batch];
        loop {
            let mut n: CK_ULONG = 0;
            let rv = call!(
                self,
                C_FindObjects(h, buf.as_mut_ptr(), batch as CK_ULONG, &mut n)
            );
            if rv != CKR_OK {
                let _ = call!(self, C_FindObjectsFinal(h));
                return Err(Fail {
                    func: "C_FindObjects",
                    rv,
                });
            }
            found.extend_from_slice(&buf[..(n as usize).min(batch)]);
            if (n as usize) < batch {
                break;
            }
        }
        check("C_FindObjectsFinal", call!(self, C_FindObjectsFinal(h)))?;
        Ok(found)
    }

    /// The objects of this class with this label ([`Client::find`] in
    /// batches of 16).
    pub fn find_labelled(
        self,
        h: CK_SESSION_HANDLE,
        class: CK_OBJECT_CLASS,
        label: &str,
    ) -> Result<Vec<CK_OBJECT_HANDLE>, Fail> {
        let mut t = Template::new()
            .ulong(CKA_CLASS, class)
            .bytes(CKA_LABEL, label.as_bytes());
        self.find(h, &mut t, 16)
    }

    pub fn sign_init(
        self,
        h: CK_SESSION_HANDLE,
        m: &Mechanism,
        key: CK_OBJECT_HANDLE,
    ) -> Result<(), Fail> {
        let mut raw = m.raw();
        check("C_SignInit", call!(self, C_SignInit(h, &mut raw, key)))
    }

    /// `C_SignInit` + `C_Sign` into `sig`, which must be large enough (no
    /// size query is made); the signature's length.
    pub fn sign_into(
        self,
        h: CK_SESSION_HANDLE,
        m: &Mechanism,
        key: CK_OBJECT_HANDLE,
        data: &[u8],
        sig: &mut [u8],
    ) -> Result<usize, Fail> {
        self.sign_init(h, m, key)?;
        let mut n = sig.len() as CK_ULONG;
        check(
            "C_Sign",
            call!(
                self,
                C_Sign(
                    h,
                    data.as_ptr() as *mut u8,
                    data.len() as CK_ULONG,
                    sig.as_mut_ptr(),
                    &mut n
                )
            ),
        )?;
        Ok(n as usize)
    }

    /// [`Client::sign_into`] a 512-byte buffer: any RSA key up to 4096 bits.
    pub fn sign(
        self,
        h: CK_SESSION_HANDLE,
        m: &Mechanism,
        key: CK_OBJECT_HANDLE,
        data: &[u8],
    ) -> Result<Vec<u8>, Fail> {
        let mut sig = vec![0u8; 512];
        let n = self.sign_into(h, m, key, data, &mut sig)?;
        sig.truncate(n);
        Ok(sig)
    }

    /// `C_VerifyInit` + `C_Verify`.
    pub fn verify(
        self,
        h: CK_SESSION_HANDLE,
        m: &Mechanism,
        key: CK_OBJECT_HANDLE,
        data: &[u8],
        sig: &[u8],
    ) -> Result<(), Fail> {
        let mut raw = m.raw();
        check("C_VerifyInit", call!(self, C_VerifyInit(h, &mut raw, key)))?;
        check(
            "C_Verify",
            call!(
                self,
                C_Verify(
                    h,
                    data.as_ptr() as *mut u8,
                    data.len() as CK_ULONG,
                    sig.as_ptr() as *mut u8,
                    sig.len() as CK_ULONG
                )
            ),
        )
    }

    /// One `C_GetAttributeValue` into the template's buffers.
    pub fn get_attributes(
        self,
        h: CK_SESSION_HANDLE,
        o: CK_OBJECT_HANDLE,
        t: &mut Template,
    ) -> Result<(), Fail> {
        check(
            "C_GetAttributeValue",
            call!(self, C_GetAttributeValue(h, o, t.as_mut_ptr(), t.count())),
        )
    }

    /// One attribute's value: `C_GetAttributeValue` for its length, then
    /// for the value.
    pub fn attribute(
        self,
        h: CK_SESSION_HANDLE,
        o: CK_OBJECT_HANDLE,
        type_: CK_ATTRIBUTE_TYPE,
    ) -> Result<Vec<u8>, Fail> {
        let mut a = CK_ATTRIBUTE {
            type_,
            pValue: null_mut(),
            ulValueLen: 0,
        };
        check(
            "C_GetAttributeValue",
            call!(self, C_GetAttributeValue(h, o, &mut a, 1)),
        )?;
        let mut v = vec![0u8; a.ulValueLen as usize];
        a.pValue = v.as_mut_ptr() as *mut c_void;
        check(
            "C_GetAttributeValue",
            call!(self, C_GetAttributeValue(h, o, &mut a, 1)),
        )?;
        v.truncate(a.ulValueLen as usize);
        Ok(v)
    }

    pub fn create_object(
        self,
        h: CK_SESSION_HANDLE,
        t: &mut Template,
    ) -> Result<CK_OBJECT_HANDLE, Fail> {
        let mut o = 0;
        check(
            "C_CreateObject",
            call!(self, C_CreateObject(h, t.as_mut_ptr(), t.count(), &mut o)),
        )?;
        Ok(o)
    }

    /// `C_CopyObject` with a template of the attributes to change.
    pub fn copy_object(
        self,
        h: CK_SESSION_HANDLE,
        o: CK_OBJECT_HANDLE,
        t: &mut Template,
    ) -> Result<CK_OBJECT_HANDLE, Fail> {
        let mut copy = 0;
        check(
            "C_CopyObject",
            call!(
                self,
                C_CopyObject(h, o, t.as_mut_ptr(), t.count(), &mut copy)
            ),
        )?;
        Ok(copy)
    }

    pub fn destroy_object(self, h: CK_SESSION_HANDLE, o: CK_OBJECT_HANDLE) -> Result<(), Fail> {
        check("C_DestroyObject", call!(self, C_DestroyObject(h, o)))
    }

    /// `C_GenerateKeyPair`: (public key, private key).
    pub fn generate_key_pair(
        self,
        h: CK_SESSION_HANDLE,
        m: &Mechanism,
        public: &mut Template,
        private: &mut Template,
    ) -> Result<(CK_OBJECT_HANDLE, CK_OBJECT_HANDLE), Fail> {
        let mut raw = m.raw();
        let (mut pu, mut pr) = (0, 0);
        check(
            "C_GenerateKeyPair",
            call!(
                self,
                C_GenerateKeyPair(
                    h,
                    &mut raw,
                    public.as_mut_ptr(),
                    public.count(),
                    private.as_mut_ptr(),
                    private.count(),
                    &mut pu,
                    &mut pr
                )
            ),
        )?;
        Ok((pu, pr))
    }
}
