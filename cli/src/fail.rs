//! How the tool reports a failure: what went wrong, then what to do about it,
//! and the exit status that says whose fault it was.

use keyring_pkcs11::error::Error;
use keyring_pkcs11::rv;

/// Exit statuses.
pub const EXIT_INPUT: u8 = 1;
pub const EXIT_KERNEL: u8 = 2;

/// A failure to report: what went wrong, then what to do about it.
#[derive(Debug)]
pub struct Fail {
    pub code: u8,
    pub msg: String,
    pub hints: Vec<String>,
}

pub type Res<T> = Result<T, Fail>;

impl Fail {
    pub fn input(msg: impl Into<String>) -> Fail {
        Fail {
            code: EXIT_INPUT,
            msg: msg.into(),
            hints: Vec::new(),
        }
    }

    pub fn kernel(msg: impl Into<String>) -> Fail {
        Fail {
            code: EXIT_KERNEL,
            msg: msg.into(),
            hints: Vec::new(),
        }
    }

    pub fn hint(mut self, h: impl Into<String>) -> Fail {
        self.hints.push(h.into());
        self
    }

    /// A refusal of the kernel, reported by the library with its errno:
    /// `WHAT (token "T"): the kernel refused: Disk quota exceeded (EDQUOT)`
    /// and the hints for that errno (the ones the module's log gives).
    /// `None` if the kernel was not the cause.
    pub fn from_kernel(what: &str, token: &str, e: &Error) -> Option<Fail> {
        let errno = e.errno()?;
        let mut f = Fail::kernel(format!(
            "{what} (token \"{token}\"): the kernel refused: {errno}"
        ));
        f.hints = e.hints();
        Some(f)
    }

    /// Any error of the library while doing `what` in `token`.
    pub fn from_error(what: &str, token: &str, e: &Error) -> Fail {
        if let Some(f) = Fail::from_kernel(what, token, e) {
            return f;
        }
        let why = match e.doing() {
            Some(reason) => format!("{reason} ({})", rv::describe(e.rv)),
            None => rv::describe(e.rv),
        };
        Fail::kernel(format!("{what} (token \"{token}\") failed: {why}"))
            .hint("run again with -v to see the module's diagnostics")
    }
}
