//! A thin PKCS#11 client over the raw function list (cryptoki-sys): every
//! benchmarked call is exactly one call into the module, the same for
//! SoftHSMv2 and for keyring-pkcs11, with no wrapper doing extra calls
//! (no size queries, no attribute reads) behind the benchmark's back.

use cryptoki_sys::*;
use std::ffi::c_void;
use std::ptr;

pub type R<T> = Result<T, String>;

fn rv_name(rv: CK_RV) -> String {
    let known: &[(CK_RV, &str)] = &[
        (CKR_ARGUMENTS_BAD, "CKR_ARGUMENTS_BAD"),
        (CKR_ATTRIBUTE_TYPE_INVALID, "CKR_ATTRIBUTE_TYPE_INVALID"),
        (CKR_ATTRIBUTE_SENSITIVE, "CKR_ATTRIBUTE_SENSITIVE"),
        (CKR_BUFFER_TOO_SMALL, "CKR_BUFFER_TOO_SMALL"),
        (
            CKR_CRYPTOKI_ALREADY_INITIALIZED,
            "CKR_CRYPTOKI_ALREADY_INITIALIZED",
        ),
        (CKR_DEVICE_ERROR, "CKR_DEVICE_ERROR"),
        (CKR_FUNCTION_FAILED, "CKR_FUNCTION_FAILED"),
        (CKR_FUNCTION_NOT_SUPPORTED, "CKR_FUNCTION_NOT_SUPPORTED"),
        (CKR_GENERAL_ERROR, "CKR_GENERAL_ERROR"),
        (CKR_KEY_HANDLE_INVALID, "CKR_KEY_HANDLE_INVALID"),
        (CKR_MECHANISM_INVALID, "CKR_MECHANISM_INVALID"),
        (CKR_MECHANISM_PARAM_INVALID, "CKR_MECHANISM_PARAM_INVALID"),
        (CKR_OBJECT_HANDLE_INVALID, "CKR_OBJECT_HANDLE_INVALID"),
        (CKR_OPERATION_ACTIVE, "CKR_OPERATION_ACTIVE"),
        (CKR_PIN_INCORRECT, "CKR_PIN_INCORRECT"),
        (CKR_SESSION_HANDLE_INVALID, "CKR_SESSION_HANDLE_INVALID"),
        (CKR_SIGNATURE_INVALID, "CKR_SIGNATURE_INVALID"),
        (CKR_TEMPLATE_INCONSISTENT, "CKR_TEMPLATE_INCONSISTENT"),
        (CKR_TOKEN_NOT_PRESENT, "CKR_TOKEN_NOT_PRESENT"),
        (CKR_USER_ALREADY_LOGGED_IN, "CKR_USER_ALREADY_LOGGED_IN"),
        (CKR_USER_NOT_LOGGED_IN, "CKR_USER_NOT_LOGGED_IN"),
    ];
    known
        .iter()
        .find(|(v, _)| *v == rv)
        .map(|(_, n)| n.to_string())
        .unwrap_or_else(|| format!("CKR 0x{rv:x}"))
}

fn check(what: &str, rv: CK_RV) -> R<()> {
    if rv == CKR_OK {
        Ok(())
    } else {
        Err(format!("{what}: {}", rv_name(rv)))
    }
}

/// Calls one entry point of the function list.
macro_rules! call {
    ($p:expr, $name:ident ( $($arg:expr),* $(,)? )) => {{
        let f = (*$p.f).$name.ok_or(concat!(stringify!($name), " missing"))?;
        // SAFETY: the function list comes from the module's C_GetFunctionList;
        // every pointer argument points into a live buffer of the stated size.
        unsafe { f($($arg),*) }
    }};
}

/// A loaded PKCS#11 module.
pub struct P11 {
    f: &'static CK_FUNCTION_LIST,
    _lib: libloading::Library,
}

// The module is used from several threads, each with its own session; both
// modules are initialised with CKF_OS_LOCKING_OK.
unsafe impl Send for P11 {}
unsafe impl Sync for P11 {}

impl P11 {
    /// dlopen + C_GetFunctionList.
    pub fn load(path: &str) -> R<P11> {
        // SAFETY: loading a PKCS#11 module runs its initialisers; that is the point.
        let lib =
            unsafe { libloading::Library::new(path) }.map_err(|e| format!("dlopen {path}: {e}"))?;
        let get: libloading::Symbol<unsafe extern "C" fn(*mut *mut CK_FUNCTION_LIST) -> CK_RV> =
            unsafe { lib.get(b"C_GetFunctionList\0") }.map_err(|e| format!("{path}: {e}"))?;
        let mut list: *mut CK_FUNCTION_LIST = ptr::null_mut();
        check("C_GetFunctionList", unsafe { get(&mut list) })?;
        if list.is_null() {
            return Err("C_GetFunctionList gave NULL".into());
        }
        // SAFETY: the list lives as long as the library, which we keep.
        let f = unsafe { &*list };
        Ok(P11 { f, _lib: lib })
    }

    /// C_Initialize with CKF_OS_LOCKING_OK, as OpenSSH's and libp11's callers do.
    pub fn initialize(&self) -> R<()> {
        let mut args = CK_C_INITIALIZE_ARGS {
            CreateMutex: None,
            DestroyMutex: None,
            LockMutex: None,
            UnlockMutex: None,
            flags: CKF_OS_LOCKING_OK,
            pReserved: ptr::null_mut(),
        };
        check(
            "C_Initialize",
            call!(self, C_Initialize(&mut args as *mut _ as *mut c_void)),
        )
    }

    /// The slot whose token has this label, and the token's flags.
    pub fn slot_by_label(&self, label: &str) -> R<(CK_SLOT_ID, CK_FLAGS)> {
        let mut n: CK_ULONG = 0;
        check(
            "C_GetSlotList",
            call!(self, C_GetSlotList(CK_TRUE, ptr::null_mut(), &mut n)),
        )?;
        let mut slots = vec![0 as CK_SLOT_ID; n as usize];
        check(
            "C_GetSlotList",
            call!(self, C_GetSlotList(CK_TRUE, slots.as_mut_ptr(), &mut n)),
        )?;
        slots.truncate(n as usize);
        for s in slots {
            // SAFETY: plain C struct, all-zero is a valid value.
            let mut ti: CK_TOKEN_INFO = unsafe { std::mem::zeroed() };
            if call!(self, C_GetTokenInfo(s, &mut ti)) != CKR_OK {
                continue;
            }
            let l = String::from_utf8_lossy(&ti.label);
            if l.trim_end() == label {
                return Ok((s, ti.flags));
            }
        }
        Err(format!("no token labelled {label:?}"))
    }

    pub fn open_session(&self, slot: CK_SLOT_ID) -> R<CK_SESSION_HANDLE> {
        let mut h: CK_SESSION_HANDLE = 0;
        check(
            "C_OpenSession",
            call!(
                self,
                C_OpenSession(
                    slot,
                    CKF_SERIAL_SESSION | CKF_RW_SESSION,
                    ptr::null_mut(),
                    None,
                    &mut h
                )
            ),
        )?;
        Ok(h)
    }

    pub fn login(&self, s: CK_SESSION_HANDLE, pin: &str) -> R<()> {
        let rv = call!(
            self,
            C_Login(s, CKU_USER, pin.as_ptr() as *mut u8, pin.len() as CK_ULONG)
        );
        if rv == CKR_USER_ALREADY_LOGGED_IN {
            return Ok(());
        }
        check("C_Login", rv)
    }

    /// C_FindObjectsInit, C_FindObjects in batches of `batch` until empty,
    /// C_FindObjectsFinal.
    pub fn find(
        &self,
        s: CK_SESSION_HANDLE,
        t: &mut Template,
        batch: usize,
    ) -> R<Vec<CK_OBJECT_HANDLE>> {
        check(
            "C_FindObjectsInit",
            call!(self, C_FindObjectsInit(s, t.ptr(), t.len())),
        )?;
        let mut out = Vec::new();
        let mut buf = vec![0 as CK_OBJECT_HANDLE; batch];
        loop {
            let mut n: CK_ULONG = 0;
            let rv = call!(
                self,
                C_FindObjects(s, buf.as_mut_ptr(), batch as CK_ULONG, &mut n)
            );
            if rv != CKR_OK {
                let _ = call!(self, C_FindObjectsFinal(s));
                return Err(format!("C_FindObjects: {}", rv_name(rv)));
            }
            out.extend_from_slice(&buf[..n as usize]);
            if (n as usize) < batch {
                break;
            }
        }
        check("C_FindObjectsFinal", call!(self, C_FindObjectsFinal(s)))?;
        Ok(out)
    }

    /// One key found by class and label.
    pub fn key(
        &self,
        s: CK_SESSION_HANDLE,
        class: CK_OBJECT_CLASS,
        label: &str,
    ) -> R<CK_OBJECT_HANDLE> {
        let mut t = Template::new()
            .ulong(CKA_CLASS, class)
            .bytes(CKA_LABEL, label.as_bytes());
        let found = self.find(s, &mut t, 2)?;
        match found.as_slice() {
            [h] => Ok(*h),
            [] => Err(format!("no object of class {class} labelled {label:?}")),
            _ => Err(format!(
                "{} objects of class {class} labelled {label:?}",
                found.len()
            )),
        }
    }

    /// C_SignInit + C_Sign into a buffer of the right size.
    pub fn sign(
        &self,
        s: CK_SESSION_HANDLE,
        m: &Mech,
        key: CK_OBJECT_HANDLE,
        data: &[u8],
        sig: &mut [u8],
    ) -> R<usize> {
        let mut mech = m.raw();
        check("C_SignInit", call!(self, C_SignInit(s, &mut mech.m, key)))?;
        let mut n = sig.len() as CK_ULONG;
        check(
            "C_Sign",
            call!(
                self,
                C_Sign(
                    s,
                    data.as_ptr() as *mut u8,
                    data.len() as CK_ULONG,
                    sig.as_mut_ptr(),
                    &mut n
                )
            ),
        )?;
        Ok(n as usize)
    }

    /// C_VerifyInit + C_Verify.
    pub fn verify(
        &self,
        s: CK_SESSION_HANDLE,
        m: &Mech,
        key: CK_OBJECT_HANDLE,
        data: &[u8],
        sig: &[u8],
    ) -> R<()> {
        let mut mech = m.raw();
        check(
            "C_VerifyInit",
            call!(self, C_VerifyInit(s, &mut mech.m, key)),
        )?;
        check(
            "C_Verify",
            call!(
                self,
                C_Verify(
                    s,
                    data.as_ptr() as *mut u8,
                    data.len() as CK_ULONG,
                    sig.as_ptr() as *mut u8,
                    sig.len() as CK_ULONG
                )
            ),
        )
    }

    /// One C_GetAttributeValue call with the template's buffers.
    pub fn get_attributes(
        &self,
        s: CK_SESSION_HANDLE,
        obj: CK_OBJECT_HANDLE,
        t: &mut Template,
    ) -> R<()> {
        check(
            "C_GetAttributeValue",
            call!(self, C_GetAttributeValue(s, obj, t.ptr(), t.len())),
        )
    }

    /// Reads one attribute's value (size query, then the value).
    pub fn attribute(
        &self,
        s: CK_SESSION_HANDLE,
        obj: CK_OBJECT_HANDLE,
        ty: CK_ATTRIBUTE_TYPE,
    ) -> R<Vec<u8>> {
        let mut a = CK_ATTRIBUTE {
            type_: ty,
            pValue: ptr::null_mut(),
            ulValueLen: 0,
        };
        check(
            "C_GetAttributeValue",
            call!(self, C_GetAttributeValue(s, obj, &mut a, 1)),
        )?;
        let mut v = vec![0u8; a.ulValueLen as usize];
        a.pValue = v.as_mut_ptr() as *mut c_void;
        check(
            "C_GetAttributeValue",
            call!(self, C_GetAttributeValue(s, obj, &mut a, 1)),
        )?;
        v.truncate(a.ulValueLen as usize);
        Ok(v)
    }

    /// C_CopyObject with a template of changed attributes.
    pub fn copy_object(
        &self,
        s: CK_SESSION_HANDLE,
        obj: CK_OBJECT_HANDLE,
        t: &mut Template,
    ) -> R<CK_OBJECT_HANDLE> {
        let mut h: CK_OBJECT_HANDLE = 0;
        check(
            "C_CopyObject",
            call!(self, C_CopyObject(s, obj, t.ptr(), t.len(), &mut h)),
        )?;
        Ok(h)
    }

    pub fn finalize(&self) -> R<()> {
        check("C_Finalize", call!(self, C_Finalize(ptr::null_mut())))
    }
}

/// A CK_ATTRIBUTE array with the buffers it points into.
pub struct Template {
    attrs: Vec<CK_ATTRIBUTE>,
    bufs: Vec<Vec<u8>>,
}

// The buffers are owned by the template and move with it.
unsafe impl Send for Template {}

impl Template {
    pub fn new() -> Template {
        Template {
            attrs: Vec::new(),
            bufs: Vec::new(),
        }
    }

    pub fn bytes(mut self, ty: CK_ATTRIBUTE_TYPE, v: &[u8]) -> Template {
        let mut b = v.to_vec();
        self.attrs.push(CK_ATTRIBUTE {
            type_: ty,
            pValue: b.as_mut_ptr() as *mut c_void,
            ulValueLen: b.len() as CK_ULONG,
        });
        // Moving the Vec keeps its heap buffer where it is.
        self.bufs.push(b);
        self
    }

    pub fn ulong(self, ty: CK_ATTRIBUTE_TYPE, v: CK_ULONG) -> Template {
        self.bytes(ty, &v.to_ne_bytes())
    }

    /// An output slot of `len` bytes.
    pub fn out(self, ty: CK_ATTRIBUTE_TYPE, len: usize) -> Template {
        self.bytes(ty, &vec![0u8; len])
    }

    /// The value returned for attribute `i`.
    pub fn value(&self, i: usize) -> &[u8] {
        &self.bufs[i][..(self.attrs[i].ulValueLen as usize).min(self.bufs[i].len())]
    }

    /// Resets output lengths before reusing the template.
    pub fn reset(&mut self) {
        for (a, b) in self.attrs.iter_mut().zip(&self.bufs) {
            a.ulValueLen = b.len() as CK_ULONG;
        }
    }

    fn ptr(&mut self) -> *mut CK_ATTRIBUTE {
        if self.attrs.is_empty() {
            ptr::null_mut()
        } else {
            self.attrs.as_mut_ptr()
        }
    }

    fn len(&self) -> CK_ULONG {
        self.attrs.len() as CK_ULONG
    }
}

/// The two signature mechanisms of the benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mech {
    Sha256Pkcs,
    /// CKM_SHA256_RSA_PKCS_PSS, MGF1-SHA256, 32-byte salt (what TLS 1.3 uses).
    Sha256Pss,
}

pub struct RawMech {
    m: CK_MECHANISM,
    _params: Box<CK_RSA_PKCS_PSS_PARAMS>,
}

impl std::ops::Deref for RawMech {
    type Target = CK_MECHANISM;
    fn deref(&self) -> &CK_MECHANISM {
        &self.m
    }
}
impl std::ops::DerefMut for RawMech {
    fn deref_mut(&mut self) -> &mut CK_MECHANISM {
        &mut self.m
    }
}

impl Mech {
    pub fn name(self) -> &'static str {
        match self {
            Mech::Sha256Pkcs => "CKM_SHA256_RSA_PKCS",
            Mech::Sha256Pss => "CKM_SHA256_RSA_PKCS_PSS",
        }
    }

    pub fn short(self) -> &'static str {
        match self {
            Mech::Sha256Pkcs => "PKCS#1",
            Mech::Sha256Pss => "PSS",
        }
    }

    pub fn raw(self) -> RawMech {
        let mut params = Box::new(CK_RSA_PKCS_PSS_PARAMS {
            hashAlg: CKM_SHA256,
            mgf: CKG_MGF1_SHA256,
            sLen: 32,
        });
        let m = match self {
            Mech::Sha256Pkcs => CK_MECHANISM {
                mechanism: CKM_SHA256_RSA_PKCS,
                pParameter: ptr::null_mut(),
                ulParameterLen: 0,
            },
            Mech::Sha256Pss => CK_MECHANISM {
                mechanism: CKM_SHA256_RSA_PKCS_PSS,
                pParameter: &mut *params as *mut CK_RSA_PKCS_PSS_PARAMS as *mut c_void,
                ulParameterLen: std::mem::size_of::<CK_RSA_PKCS_PSS_PARAMS>() as CK_ULONG,
            },
        };
        RawMech { m, _params: params }
    }
}
