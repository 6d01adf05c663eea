//! The one error type of the library: the `CK_RV` a PKCS#11 caller gets, and
//! — kept until the edge that reports it — where it came from: what we were
//! doing and, when the kernel refused, which call and which errno.
//!
//! The C ABI (`ffi::guard`) logs it once, at the level its origin chose, with
//! the kernel hints of `kernel::hints`; the `keyring-pkcs11` tool prints the
//! same origin and hints as its error message. Nothing in between logs an
//! error it returns.

use crate::kernel::hints::{self, KernelOp};
use crate::kernel::keyctl::Errno;
use crate::log::Level;
use cryptoki_sys::*;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub rv: CK_RV,
    /// Only meaningful with `CKR_BUFFER_TOO_SMALL`: the two-call convention
    /// reports the length the caller needs even on failure.
    pub needed: usize,
    origin: Option<Box<Origin>>,
}

/// Why an error happened, for the log and the tool.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    /// What the library was doing, e.g. `adding key "web" to token "user"`.
    doing: String,
    /// The kernel's refusal, if it was one.
    kernel: Option<(KernelOp, Errno)>,
    level: Level,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A plain answer to the caller, nothing worth logging above debug.
    pub const fn new(rv: CK_RV) -> Self {
        Error {
            rv,
            needed: 0,
            origin: None,
        }
    }

    pub const fn buffer_too_small(needed: usize) -> Self {
        Error {
            rv: CKR_BUFFER_TOO_SMALL,
            needed,
            origin: None,
        }
    }

    /// The kernel refused `op` with `errno` while the library was `doing`
    /// something; the `CK_RV` is the one `kernel::hints` gives that pair.
    pub fn kernel(op: KernelOp, errno: Errno, doing: impl Into<String>) -> Self {
        Self::kernel_as(hints::rv(op, errno), op, errno, doing)
    }

    /// As [`Error::kernel`], with a `CK_RV` the caller decided.
    pub fn kernel_as(rv: CK_RV, op: KernelOp, errno: Errno, doing: impl Into<String>) -> Self {
        Error {
            rv,
            needed: 0,
            origin: Some(Box::new(Origin {
                doing: doing.into(),
                kernel: Some((op, errno)),
                level: Level::Warn,
            })),
        }
    }

    /// The library refuses, for a reason the caller should be told in the log
    /// (a template it cannot honour, a label already taken…).
    pub fn refused(rv: CK_RV, why: impl Into<String>) -> Self {
        Error {
            rv,
            needed: 0,
            origin: Some(Box::new(Origin {
                doing: why.into(),
                kernel: None,
                level: Level::Warn,
            })),
        }
    }

    /// Logged at info rather than warn: an expected event (a key that went
    /// away) that the caller's return value already says.
    pub fn quietly(mut self) -> Self {
        if let Some(o) = &mut self.origin {
            o.level = Level::Info;
        }
        self
    }

    /// The same origin behind another `CK_RV`.
    pub fn with_rv(mut self, rv: CK_RV) -> Self {
        self.rv = rv;
        self
    }

    /// The kernel call and errno behind this error, if the kernel refused.
    pub fn kernel_cause(&self) -> Option<(KernelOp, Errno)> {
        self.origin.as_ref().and_then(|o| o.kernel)
    }

    pub fn errno(&self) -> Option<Errno> {
        self.kernel_cause().map(|(_, e)| e)
    }

    /// What the library was doing, if it said.
    pub fn doing(&self) -> Option<&str> {
        self.origin.as_deref().map(|o| o.doing.as_str())
    }

    /// What to do about it (the kernel hints for its errno), for the log
    /// and the tool.
    pub fn hints(&self) -> Vec<String> {
        match self.kernel_cause() {
            Some((op, errno)) => hints::hints(op, errno),
            None => Vec::new(),
        }
    }

    /// Logs the error once, at the edge, with its cause and hints.
    pub fn log(&self, function: &str) {
        let Some(o) = &self.origin else {
            crate::log::debug(format_args!("{function} -> {}", rv_name(self.rv)));
            return;
        };
        let hints = self.hints();
        let hints = if hints.is_empty() {
            String::new()
        } else {
            format!(" ({})", hints.join("; "))
        };
        crate::log::at(
            o.level,
            format_args!("{function}: {self} -> {}{hints}", rv_name(self.rv)),
        );
    }
}

/// `adding key "web" to token "user": the kernel said: Disk quota exceeded (EDQUOT)`.
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            Some(o) => match o.kernel {
                Some((_, errno)) => write!(f, "{}: the kernel said: {errno}", o.doing),
                None => f.write_str(&o.doing),
            },
            None => f.write_str(&rv_name(self.rv)),
        }
    }
}

impl std::error::Error for Error {}

impl From<CK_RV> for Error {
    fn from(rv: CK_RV) -> Self {
        Error::new(rv)
    }
}

/// The name of a return value, e.g. `CKR_DEVICE_MEMORY`, or its number.
pub fn rv_name(rv: CK_RV) -> String {
    crate::rv::describe(rv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_origin_survives_to_the_edge() {
        let e = Error::kernel(
            KernelOp::AddKey,
            Errno(libc::EBADMSG),
            "adding key \"k\" to token \"user\"",
        );
        assert_eq!(e.rv, CKR_FUNCTION_FAILED);
        assert_eq!(e.errno(), Some(Errno(libc::EBADMSG)));
        assert_eq!(
            e.to_string(),
            "adding key \"k\" to token \"user\": the kernel said: Bad message (EBADMSG)"
        );
        assert!(
            e.hints()
                .iter()
                .any(|h| h.contains("modprobe pkcs8_key_parser"))
        );
        // The same errno from another call means something else.
        let gone = Error::kernel(KernelOp::UseKey, Errno(libc::ENOKEY), "signing");
        assert_eq!(gone.rv, CKR_KEY_HANDLE_INVALID);
        assert!(!gone.hints().iter().any(|h| h.contains("pkcs8_key_parser")));
        assert_eq!(Error::new(CKR_OK).to_string(), "CKR_OK");
        assert_eq!(rv_name(CKR_DEVICE_MEMORY), "CKR_DEVICE_MEMORY");
        assert_eq!(rv_name(0x3ff), "CK_RV 0x3ff");
    }
}
