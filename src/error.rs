//! The one error type of the module: a `CK_RV` plus, for
//! `CKR_BUFFER_TOO_SMALL`, the length the caller needs (the two-call convention
//! must report it even on failure).

use crate::keyctl::Errno;
use cryptoki_sys::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Error {
    pub rv: CK_RV,
    /// Only meaningful with `CKR_BUFFER_TOO_SMALL`.
    pub needed: usize,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub const fn new(rv: CK_RV) -> Self {
        Error { rv, needed: 0 }
    }

    pub const fn buffer_too_small(needed: usize) -> Self {
        Error {
            rv: CKR_BUFFER_TOO_SMALL,
            needed,
        }
    }

    /// Maps a kernel error from an operation on one key. A key that vanished
    /// (revoked, expired, invalidated, unlinked for good) is an invalid handle;
    /// a key we may no longer use is a permission problem, not a crash.
    pub fn from_key_errno(e: Errno, what: &str) -> Self {
        let rv = match e.0 {
            _ if e.is_key_gone() => CKR_KEY_HANDLE_INVALID,
            libc::EACCES | libc::EPERM => CKR_KEY_FUNCTION_NOT_PERMITTED,
            libc::ENOMEM => CKR_HOST_MEMORY,
            libc::EDQUOT => CKR_DEVICE_MEMORY,
            libc::EOVERFLOW | libc::EMSGSIZE => CKR_DATA_LEN_RANGE,
            _ => CKR_DEVICE_ERROR,
        };
        crate::log::warn(format_args!("{what}: kernel said: {e}"));
        Error::new(rv)
    }
}

impl From<CK_RV> for Error {
    fn from(rv: CK_RV) -> Self {
        Error::new(rv)
    }
}
