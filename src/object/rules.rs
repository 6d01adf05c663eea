//! What a creation template may say about a key's objects, and how each
//! attribute is kept.
//!
//! PKCS#11 (2.40 §5.7, `C_CreateObject`): a module that cannot support the
//! precise template it is given must fail. So every attribute of a template
//! either takes effect — and `C_GetAttributeValue` reads it back as given —
//! or the call fails with `CKR_ATTRIBUTE_VALUE_INVALID`,
//! `CKR_ATTRIBUTE_READ_ONLY` or `CKR_ATTRIBUTE_TYPE_INVALID`, leaving nothing
//! behind. The one exception, `CKA_PRIVATE`, is explained at [`Rule::NoPrivateObjects`].

use super::Class;
use crate::mechanism;
use cryptoki_sys::*;

/// How a template attribute is honoured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Decided by the call itself: the class and key type, `CKA_TOKEN`
    /// (which keyring), `CKA_LABEL` (the kernel key's description), `CKA_ID`,
    /// the key material, `CKA_MODULUS_BITS`, `CKA_PUBLIC_KEY_INFO` (checked).
    Call,
    /// Kept in the token's record of the key when it differs from its
    /// default, and enforced where the module does what it governs
    /// (`CKA_SIGN` at `C_SignInit`, `CKA_ALLOWED_MECHANISMS` at every
    /// `*Init`, `CKA_DESTROYABLE` at `C_DestroyObject`, …).
    Kept(Kind),
    /// Can only have this value for a key the kernel holds (a kernel key is
    /// always sensitive and never extractable; the public object is the
    /// key's own view and is destroyed with it).
    Only(bool),
    /// Set by the token, never by a template (`CKR_ATTRIBUTE_READ_ONLY`).
    ReadOnly,
    /// A template attribute the module cannot act on (wrapping templates:
    /// the module does not wrap or unwrap): `CKR_ATTRIBUTE_VALUE_INVALID`.
    Unsupported,
    /// `CKA_PRIVATE`. A private object is one only a logged-in user may
    /// use; these tokens have no login to gate anything (the kernel's
    /// permissions decide who may use a key, and any PIN logs in), so they
    /// have no private objects and the attribute reads `CK_FALSE`. `TRUE` is
    /// accepted because every client sends it for private keys (pkcs11-tool,
    /// p11tool, OpenSSL); honouring it as "visible after login" would hide
    /// the keys from clients that never log in to a token that needs no
    /// login (OpenSSH), and refusing it would refuse every key.
    NoPrivateObjects,
}

/// The value type of a kept attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `CK_BBOOL`: one byte, `CK_TRUE` or `CK_FALSE`. Any other byte would
    /// read back as one of them, not as given.
    Bool,
    /// `CK_DATE`: empty, or 8 ASCII digits YYYYMMDD.
    Date,
    Bytes,
    /// An array of `CK_MECHANISM_TYPE`, each one the module has.
    Mechanisms,
}

struct Row {
    ty: CK_ATTRIBUTE_TYPE,
    /// Its name in a key's record.
    name: &'static str,
    private: Option<Rule>,
    public: Option<Rule>,
}

const fn row(
    ty: CK_ATTRIBUTE_TYPE,
    name: &'static str,
    private: Option<Rule>,
    public: Option<Rule>,
) -> Row {
    Row {
        ty,
        name,
        private,
        public,
    }
}

const KEPT_BOOL: Option<Rule> = Some(Rule::Kept(Kind::Bool));
const CALL: Option<Rule> = Some(Rule::Call);
const RO: Option<Rule> = Some(Rule::ReadOnly);

static TABLE: &[Row] = &[
    row(CKA_CLASS, "", CALL, CALL),
    row(CKA_KEY_TYPE, "", CALL, CALL),
    row(CKA_TOKEN, "", CALL, CALL),
    row(CKA_LABEL, "", CALL, CALL),
    row(CKA_ID, "", CALL, CALL),
    row(CKA_MODULUS, "", CALL, CALL),
    row(CKA_PUBLIC_EXPONENT, "", CALL, CALL),
    row(CKA_PUBLIC_KEY_INFO, "", CALL, CALL),
    row(CKA_MODULUS_BITS, "", None, CALL),
    row(CKA_PRIVATE_EXPONENT, "", CALL, None),
    row(CKA_PRIME_1, "", CALL, None),
    row(CKA_PRIME_2, "", CALL, None),
    row(CKA_EXPONENT_1, "", CALL, None),
    row(CKA_EXPONENT_2, "", CALL, None),
    row(CKA_COEFFICIENT, "", CALL, None),
    // PKCS#8 DER of the whole key, as this module also accepts it.
    row(CKA_VALUE, "", CALL, None),
    row(
        CKA_PRIVATE,
        "",
        Some(Rule::NoPrivateObjects),
        Some(Rule::NoPrivateObjects),
    ),
    row(CKA_SENSITIVE, "", Some(Rule::Only(true)), None),
    row(CKA_EXTRACTABLE, "", Some(Rule::Only(false)), None),
    row(CKA_TRUSTED, "", None, Some(Rule::Only(false))),
    row(CKA_LOCAL, "", RO, RO),
    row(CKA_KEY_GEN_MECHANISM, "", RO, RO),
    row(CKA_ALWAYS_SENSITIVE, "", RO, None),
    row(CKA_NEVER_EXTRACTABLE, "", RO, None),
    row(CKA_UNWRAP_TEMPLATE, "", Some(Rule::Unsupported), None),
    row(CKA_WRAP_TEMPLATE, "", None, Some(Rule::Unsupported)),
    row(CKA_SIGN, "sign", KEPT_BOOL, None),
    row(CKA_DECRYPT, "decrypt", KEPT_BOOL, None),
    row(CKA_SIGN_RECOVER, "sign_recover", KEPT_BOOL, None),
    row(CKA_UNWRAP, "unwrap", KEPT_BOOL, None),
    row(
        CKA_ALWAYS_AUTHENTICATE,
        "always_authenticate",
        KEPT_BOOL,
        None,
    ),
    row(CKA_WRAP_WITH_TRUSTED, "wrap_with_trusted", KEPT_BOOL, None),
    row(CKA_VERIFY, "verify", None, KEPT_BOOL),
    row(CKA_ENCRYPT, "encrypt", None, KEPT_BOOL),
    row(CKA_VERIFY_RECOVER, "verify_recover", None, KEPT_BOOL),
    row(CKA_WRAP, "wrap", None, KEPT_BOOL),
    row(CKA_DERIVE, "derive", KEPT_BOOL, KEPT_BOOL),
    row(CKA_MODIFIABLE, "modifiable", KEPT_BOOL, KEPT_BOOL),
    row(CKA_COPYABLE, "copyable", KEPT_BOOL, KEPT_BOOL),
    row(
        CKA_DESTROYABLE,
        "destroyable",
        KEPT_BOOL,
        Some(Rule::Only(false)),
    ),
    row(
        CKA_START_DATE,
        "start_date",
        Some(Rule::Kept(Kind::Date)),
        Some(Rule::Kept(Kind::Date)),
    ),
    row(
        CKA_END_DATE,
        "end_date",
        Some(Rule::Kept(Kind::Date)),
        Some(Rule::Kept(Kind::Date)),
    ),
    row(
        CKA_SUBJECT,
        "subject",
        Some(Rule::Kept(Kind::Bytes)),
        Some(Rule::Kept(Kind::Bytes)),
    ),
    row(
        CKA_ALLOWED_MECHANISMS,
        "allowed_mechanisms",
        Some(Rule::Kept(Kind::Mechanisms)),
        Some(Rule::Kept(Kind::Mechanisms)),
    ),
];

fn find(t: CK_ATTRIBUTE_TYPE) -> Option<&'static Row> {
    TABLE.iter().find(|r| r.ty == t)
}

/// How attribute `t` of a template for a key's `class` object is honoured;
/// `None`: not an attribute of such an object (`CKR_ATTRIBUTE_TYPE_INVALID`).
pub fn rule(class: Class, t: CK_ATTRIBUTE_TYPE) -> Option<Rule> {
    let r = find(t)?;
    match class {
        Class::Private => r.private,
        Class::Public => r.public,
        Class::Certificate => None,
    }
}

/// The value a kept attribute has when no template set it.
pub fn default(class: Class, t: CK_ATTRIBUTE_TYPE) -> Option<Vec<u8>> {
    let b = |v: bool| Some(vec![v as CK_BBOOL]);
    match (class, t) {
        (Class::Private, CKA_SIGN | CKA_DECRYPT) => b(true),
        (Class::Public, CKA_VERIFY | CKA_ENCRYPT | CKA_VERIFY_RECOVER) => b(true),
        (_, CKA_MODIFIABLE) => b(true),
        (Class::Private, CKA_DESTROYABLE) => b(true),
        (Class::Public, CKA_DESTROYABLE) => b(false),
        (
            _,
            CKA_SIGN_RECOVER
            | CKA_UNWRAP
            | CKA_ALWAYS_AUTHENTICATE
            | CKA_WRAP_WITH_TRUSTED
            | CKA_WRAP
            | CKA_DERIVE
            | CKA_COPYABLE,
        ) => b(false),
        (_, CKA_START_DATE | CKA_END_DATE | CKA_SUBJECT) => Some(Vec::new()),
        (_, CKA_ALLOWED_MECHANISMS) => {
            let flags = match class {
                Class::Private => CKF_SIGN | CKF_DECRYPT,
                _ => CKF_VERIFY | CKF_ENCRYPT | CKF_VERIFY_RECOVER,
            };
            Some(
                mechanism::mechanisms_for(flags)
                    .flat_map(|m| m.to_ne_bytes())
                    .collect(),
            )
        }
        _ => None,
    }
}

/// Checks a value given for a kept attribute; `false`: it is not a valid
/// value of its type (`CKR_ATTRIBUTE_VALUE_INVALID`).
pub fn valid(kind: Kind, v: &[u8]) -> bool {
    match kind {
        Kind::Bool => v == [CK_FALSE] || v == [CK_TRUE],
        Kind::Date => v.is_empty() || (v.len() == 8 && v.iter().all(u8::is_ascii_digit)),
        Kind::Bytes => true,
        Kind::Mechanisms => {
            let w = std::mem::size_of::<CK_MECHANISM_TYPE>();
            v.len() % w == 0
                && v.chunks_exact(w).all(|c| {
                    let m = CK_MECHANISM_TYPE::from_ne_bytes(c.try_into().expect("one word"));
                    mechanism::lookup(m).is_some()
                })
        }
    }
}

/// Whether attribute `t` is what a key-pair generation makes, so that a
/// generation template cannot give it (`CKR_TEMPLATE_INCONSISTENT`): the key
/// material, and `CKA_PUBLIC_KEY_INFO`, which is the new key's. (The public
/// exponent is asked for, in either template.)
pub fn generated(t: CK_ATTRIBUTE_TYPE) -> bool {
    matches!(
        t,
        CKA_MODULUS
            | CKA_PRIVATE_EXPONENT
            | CKA_PRIME_1
            | CKA_PRIME_2
            | CKA_EXPONENT_1
            | CKA_EXPONENT_2
            | CKA_COEFFICIENT
            | CKA_VALUE
            | CKA_PUBLIC_KEY_INFO
    )
}

/// A key's `CKA_LABEL`, which becomes the kernel key's description: UTF-8
/// without NUL, and not empty — the kernel names a key given no description
/// itself, so an empty label would not read back as given.
pub fn key_label(v: &[u8]) -> Option<&str> {
    std::str::from_utf8(v)
        .ok()
        .filter(|s| !s.is_empty() && !s.contains('\0'))
}

/// The name of a kept attribute in a key's record, and back.
pub fn name(t: CK_ATTRIBUTE_TYPE) -> Option<&'static str> {
    find(t).map(|r| r.name).filter(|n| !n.is_empty())
}

pub fn by_name(class: Class, name: &str) -> Option<(CK_ATTRIBUTE_TYPE, Kind)> {
    let r = TABLE.iter().find(|r| r.name == name && !name.is_empty())?;
    match rule(class, r.ty)? {
        Rule::Kept(kind) => Some((r.ty, kind)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kept_attribute_has_a_name_and_a_default() {
        for class in [Class::Private, Class::Public] {
            for r in TABLE {
                if let Some(Rule::Kept(kind)) = rule(class, r.ty) {
                    assert!(!r.name.is_empty(), "{:#x}", r.ty);
                    assert_eq!(by_name(class, r.name), Some((r.ty, kind)));
                    let d = default(class, r.ty).expect("a default");
                    assert!(valid(kind, &d), "{:#x}", r.ty);
                }
            }
        }
        assert_eq!(rule(Class::Private, CKA_VERIFY), None);
        assert_eq!(rule(Class::Public, CKA_SIGN), None);
        assert_eq!(rule(Class::Private, 0x7fff_0000), None);
    }

    #[test]
    fn values_are_checked_by_type() {
        assert!(valid(Kind::Bool, &[1]));
        assert!(valid(Kind::Bool, &[0]));
        assert!(!valid(Kind::Bool, &[1, 0]));
        assert!(!valid(Kind::Bool, &[2]));
        assert!(!valid(Kind::Bool, &[]));
        assert_eq!(key_label(b"k"), Some("k"));
        assert_eq!(key_label(b""), None);
        assert_eq!(key_label(b"a\0"), None);
        assert_eq!(key_label(b"\xff"), None);
        assert!(valid(Kind::Date, b"20261130"));
        assert!(valid(Kind::Date, b""));
        assert!(!valid(Kind::Date, b"2026-11-30"));
        let m =
            |v: &[CK_MECHANISM_TYPE]| v.iter().flat_map(|m| m.to_ne_bytes()).collect::<Vec<u8>>();
        assert!(valid(
            Kind::Mechanisms,
            &m(&[CKM_RSA_PKCS, CKM_SHA256_RSA_PKCS_PSS])
        ));
        assert!(valid(Kind::Mechanisms, &[]));
        assert!(!valid(Kind::Mechanisms, &m(&[CKM_ECDSA])));
        assert!(!valid(Kind::Mechanisms, &[1, 2, 3]));
    }
}
