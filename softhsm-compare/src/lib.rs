//! What the benchmark (`softhsm-compare`, src/main.rs) and its fresh-process
//! probe (`softhsm-compare-probe`, src/bin/probe.rs) share: their arguments,
//! the message they sign, the two signature mechanisms, timing, and the few
//! steps every scenario takes through the raw client of
//! `keyring-pkcs11-testkit` (the same calls for both modules, no wrapper
//! adding any). Nothing here links more than libc: the probe must not load
//! what a module under test would load itself.

pub mod measure;

use cryptoki_sys::*;
use keyring_pkcs11_testkit::{Client, Mechanism, Module, Token, os_locking_args};
use std::collections::HashMap;

pub type R<T> = Result<T, String>;

/// What every scenario signs.
pub const MESSAGE: &[u8] = b"softhsm-compare: the data a client signs, e.g. a TLS 1.3 CertificateVerify input or an SSH session id";

/// `--name value` arguments.
pub struct Args(pub HashMap<String, String>);

impl Args {
    pub fn parse(v: &[String]) -> R<Args> {
        let mut m = HashMap::new();
        let mut it = v.iter();
        while let Some(k) = it.next() {
            let k = k
                .strip_prefix("--")
                .ok_or(format!("unexpected argument {k}"))?;
            let val = it.next().ok_or(format!("--{k} needs a value"))?;
            m.insert(k.to_string(), val.clone());
        }
        Ok(Args(m))
    }

    pub fn get(&self, k: &str) -> R<&str> {
        self.0
            .get(k)
            .map(String::as_str)
            .ok_or(format!("--{k} is required"))
    }

    pub fn opt(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }

    pub fn num<T: std::str::FromStr>(&self, k: &str, default: T) -> R<T> {
        match self.0.get(k) {
            Some(v) => v.parse().map_err(|_| format!("--{k}: bad number {v}")),
            None => Ok(default),
        }
    }
}

/// The two signature mechanisms of the benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mech {
    Sha256Pkcs,
    /// CKM_SHA256_RSA_PKCS_PSS, MGF1-SHA256, 32-byte salt (what TLS 1.3 uses).
    Sha256Pss,
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

    pub fn mechanism(self) -> Mechanism {
        match self {
            Mech::Sha256Pkcs => Mechanism::new(CKM_SHA256_RSA_PKCS),
            Mech::Sha256Pss => {
                Mechanism::rsa_pss(CKM_SHA256_RSA_PKCS_PSS, CKM_SHA256, CKG_MGF1_SHA256, 32)
            }
        }
    }
}

/// dlopen + `C_GetFunctionList`, then `C_Initialize` with
/// `CKF_OS_LOCKING_OK`, as OpenSSH's and libp11's callers do.
pub fn load(path: &str) -> R<Module> {
    let m = Module::load(path)?;
    initialize(m.client())?;
    Ok(m)
}

pub fn initialize(p: Client) -> R<()> {
    Ok(p.initialize(Some(&os_locking_args()))?)
}

/// The token with this label.
pub fn token(p: Client, label: &str) -> R<Token> {
    p.token(label)?
        .ok_or(format!("no token labelled {label:?}"))
}

/// `C_Login` as the user; already logged in (login is per application and
/// token) is fine.
pub fn login(p: Client, s: CK_SESSION_HANDLE, pin: &str) -> R<()> {
    match p.login(s, pin) {
        Err(f) if f.rv == CKR_USER_ALREADY_LOGGED_IN => Ok(()),
        r => Ok(r?),
    }
}

/// The one object of this class with this label.
pub fn key(
    p: Client,
    s: CK_SESSION_HANDLE,
    class: CK_OBJECT_CLASS,
    label: &str,
) -> R<CK_OBJECT_HANDLE> {
    let found = p.find_labelled(s, class, label)?;
    match found.as_slice() {
        [h] => Ok(*h),
        [] => Err(format!("no object of class {class} labelled {label:?}")),
        _ => Err(format!(
            "{} objects of class {class} labelled {label:?}",
            found.len()
        )),
    }
}
