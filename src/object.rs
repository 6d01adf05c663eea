//! PKCS#11 objects derived from kernel keys: each usable RSA private key in a
//! token's keyring appears as a `CKO_PRIVATE_KEY` and a `CKO_PUBLIC_KEY` with
//! the same `CKA_ID`. Attributes are computed from the cached public key, so
//! reading them never touches the kernel.

use crate::keyctl::Serial;
use crate::mechanism;
use crate::pubkey::RsaPublic;
use cryptoki_sys::*;

/// What we know about one kernel key; immutable once built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub serial: Serial,
    /// The key's description, which is its `CKA_LABEL`.
    pub label: String,
    pub public: RsaPublic,
    pub bits: u32,
    pub id: Vec<u8>,
    pub spki: Vec<u8>,
    /// Signature length: the kernel's `max_sig_size`.
    pub sig_len: usize,
    /// The modulus as a number, to reject inputs not below it before they
    /// reach the kernel.
    pub n: num_bigint::BigUint,
}

impl KeyInfo {
    pub fn new(serial: Serial, label: String, public: RsaPublic, sig_len: usize) -> KeyInfo {
        KeyInfo {
            serial,
            label,
            bits: public.bits(),
            id: public.key_id(),
            spki: public.spki_der(),
            n: num_bigint::BigUint::from_bytes_be(&public.modulus),
            public,
            sig_len,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    Private,
    Public,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrValue {
    Value(Vec<u8>),
    /// Exists but may never leave the token (`CKR_ATTRIBUTE_SENSITIVE`).
    Sensitive,
    /// Not an attribute of this object (`CKR_ATTRIBUTE_TYPE_INVALID`).
    Invalid,
}

fn b(v: bool) -> AttrValue {
    AttrValue::Value(vec![v as CK_BBOOL])
}

fn ul(v: CK_ULONG) -> AttrValue {
    AttrValue::Value(v.to_ne_bytes().to_vec())
}

fn bytes(v: &[u8]) -> AttrValue {
    AttrValue::Value(v.to_vec())
}

/// The value of one attribute. The truth, not what clients might like: keys
/// loaded with `keyctl padd` were plaintext somewhere once, so they are not
/// `CKA_ALWAYS_SENSITIVE`/`CKA_NEVER_EXTRACTABLE`, and nothing is modifiable or
/// destroyable through this interface yet. `CKA_PRIVATE` is false: the kernel's
/// permissions, not a PIN, decide who may use a key, and a client that hides
/// private objects until login (GnuTLS) must still see them.
pub fn attribute(key: &KeyInfo, class: Class, t: CK_ATTRIBUTE_TYPE) -> AttrValue {
    let common = match t {
        CKA_CLASS => Some(ul(match class {
            Class::Private => CKO_PRIVATE_KEY,
            Class::Public => CKO_PUBLIC_KEY,
        })),
        CKA_TOKEN => Some(b(true)),
        CKA_PRIVATE => Some(b(false)),
        CKA_MODIFIABLE | CKA_COPYABLE | CKA_DESTROYABLE => Some(b(false)),
        CKA_LABEL => Some(bytes(key.label.as_bytes())),
        CKA_KEY_TYPE => Some(ul(CKK_RSA)),
        CKA_ID => Some(bytes(&key.id)),
        CKA_START_DATE | CKA_END_DATE => Some(bytes(&[])),
        CKA_DERIVE | CKA_LOCAL => Some(b(false)),
        CKA_KEY_GEN_MECHANISM => Some(ul(CK_UNAVAILABLE_INFORMATION)),
        CKA_SUBJECT => Some(bytes(&[])),
        CKA_MODULUS => Some(bytes(&key.public.modulus)),
        CKA_PUBLIC_EXPONENT => Some(bytes(&key.public.exponent)),
        CKA_PUBLIC_KEY_INFO => Some(bytes(&key.spki)),
        _ => None,
    };
    if let Some(v) = common {
        return v;
    }
    match class {
        Class::Private => match t {
            CKA_SENSITIVE => b(true),
            CKA_EXTRACTABLE => b(false),
            CKA_ALWAYS_SENSITIVE | CKA_NEVER_EXTRACTABLE => b(false),
            CKA_SIGN | CKA_DECRYPT => b(true),
            CKA_SIGN_RECOVER | CKA_UNWRAP => b(false),
            CKA_WRAP_WITH_TRUSTED | CKA_ALWAYS_AUTHENTICATE => b(false),
            CKA_ALLOWED_MECHANISMS => AttrValue::Value(
                mechanism::mechanisms_for(CKF_SIGN | CKF_DECRYPT)
                    .flat_map(|m| m.to_ne_bytes())
                    .collect(),
            ),
            CKA_PRIVATE_EXPONENT | CKA_PRIME_1 | CKA_PRIME_2 | CKA_EXPONENT_1 | CKA_EXPONENT_2
            | CKA_COEFFICIENT | CKA_VALUE => AttrValue::Sensitive,
            _ => AttrValue::Invalid,
        },
        Class::Public => match t {
            CKA_MODULUS_BITS => ul(CK_ULONG::from(key.bits)),
            CKA_ENCRYPT | CKA_VERIFY | CKA_VERIFY_RECOVER => b(true),
            CKA_WRAP | CKA_TRUSTED => b(false),
            CKA_ALLOWED_MECHANISMS => AttrValue::Value(
                mechanism::mechanisms_for(CKF_VERIFY | CKF_ENCRYPT | CKF_VERIFY_RECOVER)
                    .flat_map(|m| m.to_ne_bytes())
                    .collect(),
            ),
            _ => AttrValue::Invalid,
        },
    }
}

/// Whether an object matches a `C_FindObjectsInit` template: every attribute in
/// the template exists on the object with exactly that value.
pub fn matches(key: &KeyInfo, class: Class, template: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)]) -> bool {
    template
        .iter()
        .all(|(t, want)| match attribute(key, class, *t) {
            AttrValue::Value(v) => &v == want,
            _ => false,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> KeyInfo {
        KeyInfo::new(
            7,
            "mykey".into(),
            RsaPublic {
                modulus: vec![0xC1; 256],
                exponent: vec![1, 0, 1],
            },
            256,
        )
    }

    #[test]
    fn private_and_public_share_id_and_modulus() {
        let k = key();
        for t in [
            CKA_ID,
            CKA_MODULUS,
            CKA_PUBLIC_EXPONENT,
            CKA_LABEL,
            CKA_KEY_TYPE,
        ] {
            assert_eq!(
                attribute(&k, Class::Private, t),
                attribute(&k, Class::Public, t)
            );
        }
        assert_eq!(attribute(&k, Class::Public, CKA_MODULUS_BITS), ul(2048));
        assert_eq!(attribute(&k, Class::Private, CKA_LABEL), bytes(b"mykey"));
    }

    #[test]
    fn secrets_are_sensitive_and_unknowns_invalid() {
        let k = key();
        assert_eq!(
            attribute(&k, Class::Private, CKA_PRIVATE_EXPONENT),
            AttrValue::Sensitive
        );
        assert_eq!(
            attribute(&k, Class::Private, CKA_PRIME_1),
            AttrValue::Sensitive
        );
        assert_eq!(
            attribute(&k, Class::Public, CKA_PRIVATE_EXPONENT),
            AttrValue::Invalid
        );
        assert_eq!(
            attribute(&k, Class::Private, 0x7fff_ffff),
            AttrValue::Invalid
        );
    }

    #[test]
    fn templates_match_exact_values() {
        let k = key();
        let cls = |c: CK_ULONG| (CKA_CLASS, c.to_ne_bytes().to_vec());
        assert!(matches(&k, Class::Private, &[]));
        assert!(matches(
            &k,
            Class::Private,
            &[cls(CKO_PRIVATE_KEY), (CKA_SIGN, vec![1])]
        ));
        assert!(!matches(&k, Class::Public, &[cls(CKO_PRIVATE_KEY)]));
        assert!(!matches(&k, Class::Private, &[(CKA_ID, vec![1, 2, 3])]));
        assert!(!matches(
            &k,
            Class::Private,
            &[(CKA_PRIVATE_EXPONENT, vec![])]
        ));
        assert!(matches(
            &k,
            Class::Public,
            &[(CKA_ID, k.id.clone()), cls(CKO_PUBLIC_KEY)]
        ));
    }
}
