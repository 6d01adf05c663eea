//! Loading a PKCS#11 library.

use crate::client::{Client, Fail};
use cryptoki_sys::*;
use std::ffi::OsStr;
use std::ptr::{NonNull, null_mut};

/// A dlopened PKCS#11 library and its 2.40 function list. Dropping it
/// dlcloses the library: keep it (or [`Module::leak`] it) as long as any
/// [`Client`] of it is used.
pub struct Module {
    list: NonNull<CK_FUNCTION_LIST>,
    lib: libloading::Library,
}

// SAFETY: the function list is immutable data in the library, which lives
// as long as the Module; whether calls through it may come from several
// threads is the library's promise (CKF_OS_LOCKING_OK or mutex callbacks),
// which the caller asks for in C_Initialize.
unsafe impl Send for Module {}
unsafe impl Sync for Module {}

type GetFunctionList = unsafe extern "C" fn(*mut *mut CK_FUNCTION_LIST) -> CK_RV;
type GetInterface = unsafe extern "C" fn(
    *mut CK_UTF8CHAR,
    *mut CK_VERSION,
    *mut *mut CK_INTERFACE,
    CK_FLAGS,
) -> CK_RV;

impl Module {
    /// dlopen + `C_GetFunctionList`, nothing more: the library's
    /// initialisers run, `C_Initialize` is left to the caller.
    pub fn load(path: impl AsRef<OsStr>) -> Result<Module, String> {
        let path = path.as_ref();
        let shown = path.to_string_lossy();
        // SAFETY: loading a PKCS#11 library runs its initialisers; that is
        // the point.
        let lib = unsafe { libloading::Library::new(path) }
            .map_err(|e| format!("dlopen {shown}: {e}"))?;
        // SAFETY: C_GetFunctionList has this signature in every PKCS#11
        // version.
        let get = unsafe { lib.get::<GetFunctionList>(b"C_GetFunctionList\0") }
            .map_err(|e| format!("{shown}: {e}"))?;
        let mut list = null_mut();
        // SAFETY: `list` is a valid place for the pointer.
        let rv = unsafe { get(&mut list) };
        if rv != CKR_OK {
            return Err(format!(
                "{shown}: {}",
                Fail {
                    func: "C_GetFunctionList",
                    rv
                }
            ));
        }
        let list = NonNull::new(list).ok_or(format!("{shown}: C_GetFunctionList gave NULL"))?;
        Ok(Module { list, lib })
    }

    /// The 2.40 function list (`C_GetFunctionList`).
    pub fn functions(&self) -> &CK_FUNCTION_LIST {
        // SAFETY: the list lives in the library, which lives as long as self.
        unsafe { self.list.as_ref() }
    }

    /// The 3.0 function list, from `C_GetInterface("PKCS 11", 3.0)`; `None`
    /// from a library without `C_GetInterface` or without that interface.
    pub fn functions_3_0(&self) -> Option<&CK_FUNCTION_LIST_3_0> {
        // SAFETY: the signature of C_GetInterface in PKCS#11 3.0.
        let get = unsafe { self.lib.get::<GetInterface>(b"C_GetInterface\0") }.ok()?;
        let mut name = *b"PKCS 11\0";
        let mut version = CK_VERSION { major: 3, minor: 0 };
        let mut iface = null_mut();
        // SAFETY: a NUL-terminated name, a version and a place for the
        // interface pointer, all live for the call.
        let rv = unsafe { get(name.as_mut_ptr(), &mut version, &mut iface, 0) };
        if rv != CKR_OK || iface.is_null() {
            return None;
        }
        // SAFETY: a 3.0 interface's function list is a CK_FUNCTION_LIST_3_0
        // that, like the interface, lives in the library.
        unsafe { ((*iface).pFunctionList as *const CK_FUNCTION_LIST_3_0).as_ref() }
    }

    /// A client of the 2.40 list.
    pub fn client(&self) -> Client<'_> {
        Client::new(self.functions())
    }
}
