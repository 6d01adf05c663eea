//! Attribute values of the objects: computed from the kernel key and the
//! token's record of it, never from the kernel, so reads are cheap.

use super::rules;
use super::{AttrValue, CertInfo, Class, KeyInfo, KeyRecord};
use cryptoki_sys::*;

pub fn cert_attribute(c: &CertInfo, t: CK_ATTRIBUTE_TYPE) -> AttrValue {
    match t {
        CKA_CLASS => ul(CKO_CERTIFICATE),
        CKA_CERTIFICATE_TYPE => ul(CKC_X_509),
        CKA_TOKEN => b(!c.session),
        CKA_DESTROYABLE => b(true),
        CKA_PRIVATE | CKA_MODIFIABLE | CKA_COPYABLE | CKA_TRUSTED => b(false),
        CKA_CERTIFICATE_CATEGORY | CKA_JAVA_MIDP_SECURITY_DOMAIN => ul(0),
        CKA_LABEL => bytes(c.label.as_bytes()),
        CKA_ID => bytes(&c.id),
        CKA_VALUE => bytes(&c.der),
        CKA_SUBJECT => bytes(&c.subject),
        CKA_ISSUER => bytes(&c.issuer),
        CKA_SERIAL_NUMBER => bytes(&c.serial_number),
        CKA_PUBLIC_KEY_INFO => bytes(&c.spki),
        CKA_START_DATE
        | CKA_END_DATE
        | CKA_URL
        | CKA_HASH_OF_SUBJECT_PUBLIC_KEY
        | CKA_HASH_OF_ISSUER_PUBLIC_KEY => bytes(&[]),
        _ => AttrValue::Invalid,
    }
}

pub fn cert_matches(c: &CertInfo, template: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)]) -> bool {
    template
        .iter()
        .all(|(t, want)| matches!(cert_attribute(c, *t), AttrValue::Value(v) if &v == want))
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
/// loaded with `keyctl padd` or imported were plaintext somewhere once, so
/// only keys generated here are `CKA_LOCAL`/`CKA_ALWAYS_SENSITIVE`/
/// `CKA_NEVER_EXTRACTABLE`. `CKA_PRIVATE` is false: these tokens have no
/// private objects (see `rules::Rule::NoPrivateObjects`), and a client that
/// hides private objects until login (GnuTLS) must still see the keys.
pub fn attribute(key: &KeyInfo, rec: &KeyRecord, class: Class, t: CK_ATTRIBUTE_TYPE) -> AttrValue {
    if let Some(v) = rec.set.get(&(class, t)) {
        return bytes(v);
    }
    let common = match t {
        CKA_CLASS => Some(ul(key_class(class))),
        CKA_TOKEN => Some(b(!rec.session)),
        CKA_PRIVATE => Some(b(false)),
        CKA_LABEL => Some(bytes(key.label.as_bytes())),
        CKA_KEY_TYPE => Some(ul(CKK_RSA)),
        CKA_ID => Some(bytes(rec.id(key))),
        CKA_LOCAL => Some(b(rec.local)),
        CKA_KEY_GEN_MECHANISM => Some(ul(if rec.local {
            CKM_RSA_PKCS_KEY_PAIR_GEN
        } else {
            CK_UNAVAILABLE_INFORMATION
        })),
        CKA_MODULUS => Some(bytes(&key.public.modulus)),
        CKA_PUBLIC_EXPONENT => Some(bytes(&key.public.exponent)),
        CKA_PUBLIC_KEY_INFO => Some(bytes(&key.spki)),
        _ => None,
    };
    if let Some(v) = common {
        return v;
    }
    if let Some(v) = rules::default(class, t) {
        return AttrValue::Value(v);
    }
    match class {
        Class::Private => match t {
            CKA_SENSITIVE => b(true),
            CKA_EXTRACTABLE => b(false),
            // Only a key generated here was never outside the kernel.
            CKA_ALWAYS_SENSITIVE | CKA_NEVER_EXTRACTABLE => b(rec.local),
            CKA_PRIVATE_EXPONENT | CKA_PRIME_1 | CKA_PRIME_2 | CKA_EXPONENT_1 | CKA_EXPONENT_2
            | CKA_COEFFICIENT | CKA_VALUE => AttrValue::Sensitive,
            _ => AttrValue::Invalid,
        },
        Class::Public | Class::Certificate => match t {
            CKA_MODULUS_BITS => ul(CK_ULONG::from(key.bits)),
            CKA_TRUSTED => b(false),
            _ => AttrValue::Invalid,
        },
    }
}

/// Whether an object matches a `C_FindObjectsInit` template: every attribute in
/// the template exists on the object with exactly that value.
/// The attributes lookups use most are compared in place: a search tests
/// every key of the token, and building each value (an allocation) cost
/// more than the comparison.
pub fn matches(
    key: &KeyInfo,
    rec: &KeyRecord,
    class: Class,
    template: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
) -> bool {
    template.iter().all(|(t, want)| match *t {
        CKA_CLASS => want[..] == key_class(class).to_ne_bytes(),
        CKA_LABEL => want == key.label.as_bytes(),
        CKA_ID => want == rec.id(key),
        _ => match attribute(key, rec, class, *t) {
            AttrValue::Value(v) => &v == want,
            _ => false,
        },
    })
}

fn key_class(class: Class) -> CK_OBJECT_CLASS {
    match class {
        Class::Private => CKO_PRIVATE_KEY,
        Class::Public | Class::Certificate => CKO_PUBLIC_KEY,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::pubkey::RsaPublic;

    const REC: KeyRecord = KeyRecord {
        id: None,
        local: false,
        session: false,
        label: None,
        public: None,
        set: std::collections::BTreeMap::new(),
    };

    fn key() -> KeyInfo {
        KeyInfo::new(
            7,
            "mykey".into(),
            0,
            RsaPublic {
                modulus: vec![0xC1; 256],
                exponent: vec![1, 0, 1],
            },
            256,
        )
    }

    #[test]
    fn in_place_comparisons_agree_with_the_attribute_values() {
        let k = key();
        let slow = |class, t, want: &Vec<u8>| matches!(attribute(&k, &REC, class, t), AttrValue::Value(v) if v == *want);
        let wants = [
            CKO_PRIVATE_KEY.to_ne_bytes().to_vec(),
            CKO_PUBLIC_KEY.to_ne_bytes().to_vec(),
            CKO_PRIVATE_KEY.to_ne_bytes()[..4].to_vec(),
            b"mykey".to_vec(),
            b"mykey2".to_vec(),
            Vec::new(),
            k.derived_id.clone(),
            k.derived_id[..19].to_vec(),
        ];
        for class in [Class::Private, Class::Public] {
            for t in [CKA_CLASS, CKA_LABEL, CKA_ID] {
                for w in &wants {
                    assert_eq!(
                        matches(&k, &REC, class, &[(t, w.clone())]),
                        slow(class, t, w),
                        "{class:?} {t:#x} {w:?}"
                    );
                }
            }
        }
        assert!(matches(
            &k,
            &REC,
            Class::Public,
            &[
                (CKA_CLASS, wants[1].clone()),
                (CKA_ID, k.derived_id.clone())
            ]
        ));
        assert!(!matches(
            &k,
            &REC,
            Class::Public,
            &[
                (CKA_CLASS, wants[0].clone()),
                (CKA_ID, k.derived_id.clone())
            ]
        ));
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
                attribute(&k, &REC, Class::Private, t),
                attribute(&k, &REC, Class::Public, t)
            );
        }
        assert_eq!(
            attribute(&k, &REC, Class::Public, CKA_MODULUS_BITS),
            ul(2048)
        );
        assert_eq!(
            attribute(&k, &REC, Class::Private, CKA_LABEL),
            bytes(b"mykey")
        );
    }

    #[test]
    fn secrets_are_sensitive_and_unknowns_invalid() {
        let k = key();
        assert_eq!(
            attribute(&k, &REC, Class::Private, CKA_PRIVATE_EXPONENT),
            AttrValue::Sensitive
        );
        assert_eq!(
            attribute(&k, &REC, Class::Private, CKA_PRIME_1),
            AttrValue::Sensitive
        );
        assert_eq!(
            attribute(&k, &REC, Class::Public, CKA_PRIVATE_EXPONENT),
            AttrValue::Invalid
        );
        assert_eq!(
            attribute(&k, &REC, Class::Private, 0x7fff_ffff),
            AttrValue::Invalid
        );
    }

    #[test]
    fn templates_match_exact_values() {
        let k = key();
        let cls = |c: CK_ULONG| (CKA_CLASS, c.to_ne_bytes().to_vec());
        assert!(matches(&k, &REC, Class::Private, &[]));
        assert!(matches(
            &k,
            &REC,
            Class::Private,
            &[cls(CKO_PRIVATE_KEY), (CKA_SIGN, vec![1])]
        ));
        assert!(!matches(&k, &REC, Class::Public, &[cls(CKO_PRIVATE_KEY)]));
        assert!(!matches(
            &k,
            &REC,
            Class::Private,
            &[(CKA_ID, vec![1, 2, 3])]
        ));
        assert!(!matches(
            &k,
            &REC,
            Class::Private,
            &[(CKA_PRIVATE_EXPONENT, vec![])]
        ));
        assert!(matches(
            &k,
            &REC,
            Class::Public,
            &[(CKA_ID, k.derived_id.clone()), cls(CKO_PUBLIC_KEY)]
        ));
    }

    #[test]
    fn a_record_overrides_defaults_for_its_object_only() {
        let k = key();
        let mut rec = KeyRecord {
            id: Some(vec![1, 2]),
            ..KeyRecord::default()
        };
        rec.set.insert((Class::Private, CKA_SIGN), vec![0]);
        assert_eq!(attribute(&k, &rec, Class::Private, CKA_SIGN), b(false));
        assert_eq!(attribute(&k, &rec, Class::Private, CKA_DECRYPT), b(true));
        assert_eq!(attribute(&k, &rec, Class::Public, CKA_VERIFY), b(true));
        assert_eq!(attribute(&k, &rec, Class::Public, CKA_ID), bytes(&[1, 2]));
        assert!(!rec.flag(&k, Class::Private, CKA_SIGN));
        assert!(rec.allows(&k, Class::Private, CKM_RSA_PKCS));
        rec.set.insert(
            (Class::Private, CKA_ALLOWED_MECHANISMS),
            CKM_SHA256_RSA_PKCS.to_ne_bytes().to_vec(),
        );
        assert!(!rec.allows(&k, Class::Private, CKM_RSA_PKCS));
        assert!(rec.allows(&k, Class::Private, CKM_SHA256_RSA_PKCS));
        assert!(rec.allows(&k, Class::Public, CKM_RSA_PKCS));
    }
}
