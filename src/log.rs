//! Minimal leveled logging to stderr. The host process (ssh, a TLS server)
//! owns stdout and usually its own logging, so we stay quiet by default and
//! never print key material: only key serials, labels and kernel errors.
//!
//! `KEYRING_PKCS11_LOG=error|warn|info|debug` (default `warn`; `off` silences),
//! except in a program running with privileges its caller lacks (setuid,
//! `AT_SECURE`), whose caller must not turn on more of what it can read on
//! stderr: there the default holds.

use std::sync::atomic::{AtomicU8, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Off = 0,
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
}

const UNSET: u8 = u8::MAX;
static LEVEL: AtomicU8 = AtomicU8::new(UNSET);

fn level() -> Level {
    let l = match LEVEL.load(Ordering::Relaxed) {
        UNSET => from_env(
            std::env::var("KEYRING_PKCS11_LOG").ok().as_deref(),
            crate::kernel::keyctl::secure_execution(),
        ),
        0 => Level::Off,
        1 => Level::Error,
        2 => Level::Warn,
        3 => Level::Info,
        _ => Level::Debug,
    };
    LEVEL.store(l as u8, Ordering::Relaxed);
    l
}

/// Overrides the environment, for programs that embed the library (the CLI
/// reports errors itself and shows the library's log only with -v).
pub fn set_level(l: Level) {
    LEVEL.store(l as u8, Ordering::Relaxed);
}

/// The level `KEYRING_PKCS11_LOG` asks for, unless the process is `secure`.
fn from_env(v: Option<&str>, secure: bool) -> Level {
    parse(if secure { None } else { v })
}

/// Parses a level name as `KEYRING_PKCS11_LOG` takes it (default `warn`).
pub fn parse(v: Option<&str>) -> Level {
    match v.map(str::to_ascii_lowercase).as_deref() {
        Some("off" | "none" | "0") => Level::Off,
        Some("error") => Level::Error,
        Some("info") => Level::Info,
        Some("debug" | "trace") => Level::Debug,
        _ => Level::Warn,
    }
}

pub fn enabled(l: Level) -> bool {
    l <= level()
}

fn emit(l: Level, args: std::fmt::Arguments<'_>) {
    if enabled(l) {
        let tag = match l {
            Level::Error => "error",
            Level::Warn => "warning",
            Level::Info => "info",
            _ => "debug",
        };
        write_line(format!("keyring-pkcs11: {tag}: {args}\n").as_bytes());
    }
}

/// Writes one line to fd 2 in a single write(2), through a duplicate of the
/// descriptor rather than `std::io::stderr()`: that handle has a lock, and a
/// forked child whose parent had another thread printing at the instant of
/// the fork would wait on it forever. One write also keeps lines whole when
/// the host's own threads log at the same time.
fn write_line(line: &[u8]) {
    use std::io::Write;
    use std::os::fd::AsFd;
    if let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() {
        let _ = std::fs::File::from(fd).write_all(line);
    }
}

/// A name that came from outside (a key's description, a label) as it may
/// appear in a log line: newlines, terminal escapes and other control
/// characters escaped, so a key's description can neither forge log lines
/// nor drive the terminal of whoever reads the log.
pub fn esc(s: &str) -> std::str::EscapeDebug<'_> {
    s.escape_debug()
}

/// Logs at a level chosen at run time (an error's origin chooses it).
pub fn at(l: Level, args: std::fmt::Arguments<'_>) {
    emit(l, args)
}

pub fn error(args: std::fmt::Arguments<'_>) {
    emit(Level::Error, args)
}
pub fn warn(args: std::fmt::Arguments<'_>) {
    emit(Level::Warn, args)
}
pub fn info(args: std::fmt::Arguments<'_>) {
    emit(Level::Info, args)
}
pub fn debug(args: std::fmt::Arguments<'_>) {
    emit(Level::Debug, args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse() {
        assert_eq!(parse(None), Level::Warn);
        assert_eq!(parse(Some("DEBUG")), Level::Debug);
        assert_eq!(parse(Some("off")), Level::Off);
        assert_eq!(parse(Some("bogus")), Level::Warn);
    }

    #[test]
    fn a_secure_process_keeps_the_default_level() {
        assert_eq!(from_env(Some("debug"), false), Level::Debug);
        assert_eq!(from_env(Some("debug"), true), Level::Warn);
        assert_eq!(from_env(Some("off"), true), Level::Warn);
    }
}
