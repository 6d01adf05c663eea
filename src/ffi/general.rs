//! PKCS#11 §5.4, general-purpose functions: `C_Initialize`, `C_Finalize`,
//! `C_GetInfo` (`C_GetFunctionList` is in `list`, the 3.0 interfaces in `v3`).

use super::global::{Global, read, write};
use super::{cryptoki_fn, module, out, pad};
use crate::config::Config;
use crate::error::Error;
use crate::module::Module;
use cryptoki_sys::*;
use std::ffi::c_void;
use std::sync::Arc;

/// PKCS#11 2.40, which is what `C_GetFunctionList` returns.
pub(super) const CRYPTOKI_VERSION: CK_VERSION = CK_VERSION {
    major: 2,
    minor: 40,
};

pub(super) fn library_version() -> CK_VERSION {
    let major = env!("CARGO_PKG_VERSION_MAJOR").parse().unwrap_or(0);
    let minor = env!("CARGO_PKG_VERSION_MINOR").parse().unwrap_or(0);
    CK_VERSION { major, minor }
}

pub(super) const MANUFACTURER: &str = "keyring-pkcs11";

cryptoki_fn!(C_Initialize(p_init_args: *mut c_void) {
    let mut may_start_threads = true;
    if let Some(args) = (p_init_args as *const CK_C_INITIALIZE_ARGS).as_ref() {
        let given = [args.CreateMutex.is_some(), args.DestroyMutex.is_some(), args.LockMutex.is_some(), args.UnlockMutex.is_some()];
        let n = given.iter().filter(|g| **g).count();
        if n != 0 && n != 4 {
            return Err(Error::new(CKR_ARGUMENTS_BAD));
        }
        // Our locks are the OS's (std, futex-based), which is right for every
        // combination the spec allows: no args, CKF_OS_LOCKING_OK, the four
        // callbacks, or both (p11-kit).
        // An application that says the library may not create threads gets
        // none: the work on many keys stays in its calling thread.
        may_start_threads = args.flags & CKF_LIBRARY_CANT_CREATE_OS_THREADS == 0;
        // pReserved should be NULL, but libp11 passes its own pointer there;
        // refusing it would break the OpenSSL engine, so it is ignored.
    }
    let pid = std::process::id();
    if matches!(&*read(), Some(g) if g.pid == pid) {
        return Err(Error::new(CKR_CRYPTOKI_ALREADY_INITIALIZED));
    }
    // Resolving tokens calls the kernel: do it before taking the lock.
    let mut config = Config::load();
    if !may_start_threads {
        config.threads = Some(1);
    }
    let module = Arc::new(Module::new(crate::kernel::store::default_store(), &config));
    let mut g = write();
    if matches!(&*g, Some(g) if g.pid == pid) {
        return Err(Error::new(CKR_CRYPTOKI_ALREADY_INITIALIZED));
    }
    // A state inherited from a parent process is forgotten, not dropped: the
    // parent's other threads may have been changing its tables at the
    // instant of the fork, and they do not exist here to finish.
    if let Some(inherited) = g.replace(Global { pid, module }) {
        std::mem::forget(inherited);
    }
    Ok(())
});

cryptoki_fn!(C_Finalize(p_reserved: *mut c_void) {
    if !p_reserved.is_null() {
        return Err(Error::new(CKR_ARGUMENTS_BAD));
    }
    let pid = std::process::id();
    let mut g = write();
    match &*g {
        Some(m) if m.pid == pid => {
            // Drops every session and handle; calls still running on other
            // threads keep their own reference until they return.
            *g = None;
            Ok(())
        }
        _ => Err(Error::new(CKR_CRYPTOKI_NOT_INITIALIZED)),
    }
});

// `C_GetInfo` of the 2.40 list (and of the exported symbol): a client that
// got the 2.40 list is told 2.40; the 3.0 list has its own (see `v3`).
cryptoki_fn!(C_GetInfo(p_info: *mut CK_INFO) {
    get_info(p_info, CRYPTOKI_VERSION)
});

pub(super) unsafe fn get_info(
    p_info: *mut CK_INFO,
    version: CK_VERSION,
) -> crate::error::Result<()> {
    module()?;
    let info = unsafe { out(p_info)? };
    *info = CK_INFO {
        cryptokiVersion: version,
        manufacturerID: pad(MANUFACTURER),
        flags: 0,
        libraryDescription: pad("Linux kernel keyring RSA keys"),
        libraryVersion: library_version(),
    };
    Ok(())
}
