//! The module's mutex: the standard library's, without poisoning.
//!
//! Not parking_lot's: its waiters queue in a process-wide table guarded by
//! its own small locks, which a fork can copy into the child while another
//! thread holds one; the child's next contended lock would then wait
//! forever. The standard library's locks on Linux are a futex word and
//! nothing else, so a child's fresh lock owes nothing to the parent.

use std::sync::PoisonError;

#[derive(Default)]
pub struct Mutex<T>(std::sync::Mutex<T>);

pub type MutexGuard<'a, T> = std::sync::MutexGuard<'a, T>;

impl<T> Mutex<T> {
    pub fn new(v: T) -> Self {
        Mutex(std::sync::Mutex::new(v))
    }

    /// A panic while the lock was held is caught at the C boundary and
    /// answered with `CKR_GENERAL_ERROR`; it must not disable the module for
    /// good, as poisoning would (parking_lot, used before, did not poison).
    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
