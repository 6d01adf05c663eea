//! The one module instance of the process and the pid that made it, for the
//! C ABI. A forked child sees a different pid and is treated as not
//! initialised until it calls `C_Initialize` itself.

use crate::error::{Error, Result};
use crate::module::Module;
use cryptoki_sys::*;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

/// The initialised module and the process that initialised it. A forked
/// child sees a different pid and is treated as not initialised until it
/// calls `C_Initialize` itself (PKCS#11 §6.7.7; OpenSC does the same).
pub(super) struct Global {
    pub(super) pid: u32,
    pub(super) module: Arc<Module>,
}

type State = RwLock<Option<Global>>;

/// The lock around the global state, allocated on first use and replaced by
/// a fresh one in every forked child (`fork_child`): fork() copies a lock's
/// state but not the threads, so had another thread of the parent held it,
/// even to read, at that instant, the child would wait for it forever. The
/// child gets an unlocked, uninitialised state; the parent's is left as it
/// was, never dropped, since the threads that were changing it do not exist
/// in the child to finish. No lock is involved in getting the current one,
/// so nothing can be caught mid-way by a fork.
static GLOBAL: AtomicPtr<State> = AtomicPtr::new(std::ptr::null_mut());

fn global() -> &'static State {
    let p = GLOBAL.load(Ordering::Acquire);
    if !p.is_null() {
        // SAFETY: set once from Box::into_raw and never freed.
        return unsafe { &*p };
    }
    let fresh = Box::into_raw(Box::new(State::new(None)));
    match GLOBAL.compare_exchange(
        std::ptr::null_mut(),
        fresh,
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        Ok(_) => {
            // Registered from this library (libc_nonshared's pthread_atfork
            // records our DSO), so dlclose removes the handler with us.
            unsafe { libc::pthread_atfork(None, None, Some(fork_child)) };
            // SAFETY: as above.
            unsafe { &*fresh }
        }
        Err(current) => {
            // SAFETY: `fresh` was never shared; `current` is as above.
            drop(unsafe { Box::from_raw(fresh) });
            unsafe { &*current }
        }
    }
}

/// Runs in the child of every fork(), before fork() returns there (glibc
/// has made malloc usable again by then).
unsafe extern "C" fn fork_child() {
    let fresh = Box::into_raw(Box::new(State::new(None)));
    GLOBAL.store(fresh, Ordering::Release);
}

/// The global state for reading.
pub(super) fn read() -> std::sync::RwLockReadGuard<'static, Option<Global>> {
    global().read().unwrap_or_else(PoisonError::into_inner)
}

/// The global state for writing.
pub(super) fn write() -> std::sync::RwLockWriteGuard<'static, Option<Global>> {
    global().write().unwrap_or_else(PoisonError::into_inner)
}

/// The module, for one call. Holding an `Arc` means a concurrent
/// `C_Finalize` cannot free what this call is using; it merely makes the
/// next call fail with `CKR_CRYPTOKI_NOT_INITIALIZED`.
pub(super) fn module() -> Result<Arc<Module>> {
    // getpid before the lock: no lock is ever held across a system call.
    let pid = std::process::id();
    match &*read() {
        Some(g) if g.pid == pid => Ok(g.module.clone()),
        _ => Err(Error::new(CKR_CRYPTOKI_NOT_INITIALIZED)),
    }
}
