//! Reading a creation template that borrows the caller's memory (values that
//! may be secret are never copied here), and checking it against
//! `object::rules`: what it asks either takes effect or the call fails.

use crate::crypto::pubkey::RsaPublic;
use crate::error::{Error, Result};
use crate::object::rules::{self, Kind, Rule};
use crate::object::{self, AttrValue, CertInfo, Class, KeyRecord};
use crate::records;
use cryptoki_sys::*;

/// A creation template, borrowed from the caller.
pub(super) struct Tmpl<'a>(pub(super) &'a [(CK_ATTRIBUTE_TYPE, &'a [u8])]);

/// A template that passed the rules: whether it makes a token object, and
/// the kept attributes it sets to other than their defaults.
pub(super) struct Checked {
    pub(super) token: bool,
    set: Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)>,
}

impl Checked {
    /// The record of a key made from this template.
    pub(super) fn into_record(self, class: Class, id: Option<Vec<u8>>, local: bool) -> KeyRecord {
        KeyRecord {
            id,
            local,
            session: false,
            label: None,
            public: None,
            set: self.set.into_iter().map(|(t, v)| ((class, t), v)).collect(),
        }
    }
}

fn refuse(rv: CK_RV, why: String) -> Error {
    Error::refused(rv, why)
}

impl<'a> Tmpl<'a> {
    /// For the debug log: the attribute types, and the values of those that
    /// are never secret (flags, classes, labels, ids).
    pub(super) fn describe(&self) -> String {
        self.0
            .iter()
            .map(|(t, v)| match *t {
                CKA_PRIVATE_EXPONENT | CKA_PRIME_1 | CKA_PRIME_2 | CKA_EXPONENT_1
                | CKA_EXPONENT_2 | CKA_COEFFICIENT | CKA_VALUE => {
                    format!("{t:#x}=<{} bytes>", v.len())
                }
                _ if v.len() <= 8 => format!("{t:#x}={}", records::hex(v)),
                _ => format!("{t:#x}=<{} bytes>", v.len()),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    pub(super) fn get(&self, t: CK_ATTRIBUTE_TYPE) -> Option<&'a [u8]> {
        self.0.iter().find(|(ty, _)| *ty == t).map(|(_, v)| *v)
    }

    pub(super) fn ulong(&self, t: CK_ATTRIBUTE_TYPE) -> Result<Option<CK_ULONG>> {
        match self.get(t) {
            None => Ok(None),
            Some(v) => <[u8; std::mem::size_of::<CK_ULONG>()]>::try_from(v)
                .map(|b| Some(CK_ULONG::from_ne_bytes(b)))
                .map_err(|_| {
                    refuse(
                        CKR_ATTRIBUTE_VALUE_INVALID,
                        format!("attribute {t:#x} must be a CK_ULONG"),
                    )
                }),
        }
    }

    pub(super) fn bool(&self, t: CK_ATTRIBUTE_TYPE) -> Result<Option<bool>> {
        match self.get(t) {
            None => Ok(None),
            Some(v) if rules::valid(Kind::Bool, v) => Ok(Some(v == [CK_TRUE])),
            Some(_) => Err(refuse(
                CKR_ATTRIBUTE_VALUE_INVALID,
                format!("attribute {t:#x} must be a CK_BBOOL: CK_TRUE or CK_FALSE"),
            )),
        }
    }

    /// A text attribute (a label): UTF-8 without NUL, since it becomes a
    /// kernel key's description.
    pub(super) fn text(&self, t: CK_ATTRIBUTE_TYPE, v: &[u8]) -> Result<String> {
        match String::from_utf8(v.to_vec()) {
            Ok(s) if !s.contains('\0') => Ok(s),
            _ => Err(refuse(
                CKR_ATTRIBUTE_VALUE_INVALID,
                format!("attribute {t:#x} must be UTF-8 text without NUL"),
            )),
        }
    }

    /// Checks every attribute against the rules for a `class` object.
    pub(super) fn check(&self, class: Class) -> Result<Checked> {
        let what = match class {
            Class::Private => "an RSA private key",
            Class::Public => "an RSA public key",
            Class::Certificate => "an X.509 certificate",
        };
        let mut set = Vec::new();
        for (i, (t, v)) in self.0.iter().enumerate() {
            // PKCS#11: an attribute given twice with different values.
            if self.0[..i].iter().any(|(u, w)| u == t && w != v) {
                return Err(refuse(
                    CKR_TEMPLATE_INCONSISTENT,
                    format!("attribute {t:#x} is given twice with different values"),
                ));
            }
            if class == Class::Certificate {
                continue; // checked against the certificate itself
            }
            match rules::rule(class, *t) {
                None => {
                    return Err(refuse(
                        CKR_ATTRIBUTE_TYPE_INVALID,
                        format!("attribute {t:#x} is not one of {what}"),
                    ));
                }
                Some(Rule::Call) => {}
                Some(Rule::Kept(kind)) => {
                    if !rules::valid(kind, v) {
                        return Err(refuse(
                            CKR_ATTRIBUTE_VALUE_INVALID,
                            format!("attribute {t:#x}: not a valid value"),
                        ));
                    }
                    let v = v.to_vec();
                    if rules::default(class, *t).as_ref() != Some(&v)
                        && !set.iter().any(|(u, _)| u == t)
                    {
                        set.push((*t, v));
                    }
                }
                Some(Rule::Only(want)) => {
                    if self.bool(*t)? != Some(want) {
                        return Err(refuse(
                            CKR_ATTRIBUTE_VALUE_INVALID,
                            format!(
                                "attribute {t:#x} of a key the kernel holds can only be {}",
                                if want { "CK_TRUE" } else { "CK_FALSE" }
                            ),
                        ));
                    }
                }
                Some(Rule::ReadOnly) => {
                    return Err(refuse(
                        CKR_ATTRIBUTE_READ_ONLY,
                        format!("attribute {t:#x} is set by the token, not by a template"),
                    ));
                }
                Some(Rule::Unsupported) => {
                    return Err(refuse(
                        CKR_ATTRIBUTE_VALUE_INVALID,
                        format!("attribute {t:#x}: the module does not wrap or unwrap keys"),
                    ));
                }
                Some(Rule::NoPrivateObjects) => {
                    self.bool(*t)?;
                }
            }
        }
        match self.get(CKA_LABEL) {
            Some(l) if class == Class::Certificate => {
                self.text(CKA_LABEL, l)?;
            }
            Some(l) => {
                key_label(l)?;
            }
            None => {}
        }
        Ok(Checked {
            token: self.bool(CKA_TOKEN)?.unwrap_or(false),
            set,
        })
    }

    /// `CKA_PUBLIC_KEY_INFO`, if given, must be the key's (not empty).
    pub(super) fn check_public_key_info(&self, public: &RsaPublic) -> Result<()> {
        match self.get(CKA_PUBLIC_KEY_INFO) {
            // Empty is "not known" in PKCS#11 3.0, but it is known here,
            // and would read back as the key's.
            Some(v) if v != public.spki_der() => Err(refuse(
                CKR_TEMPLATE_INCONSISTENT,
                "CKA_PUBLIC_KEY_INFO is not the key's public key".into(),
            )),
            _ => Ok(()),
        }
    }

    /// Every attribute of a certificate's template must be what the
    /// certificate (with the label and `CKA_ID` given) reads as.
    pub(super) fn check_certificate(&self, c: &CertInfo) -> Result<()> {
        for (t, v) in self.0 {
            let same = match *t {
                // No private objects here (see `object::rules`).
                CKA_PRIVATE => self.bool(*t)?.is_some(),
                _ => match object::cert_attribute(c, *t) {
                    AttrValue::Value(cur) => cur == *v,
                    AttrValue::Invalid => {
                        return Err(refuse(
                            CKR_ATTRIBUTE_TYPE_INVALID,
                            format!("attribute {t:#x} is not one of an X.509 certificate"),
                        ));
                    }
                    AttrValue::Sensitive => false,
                },
            };
            if !same {
                return Err(refuse(
                    CKR_TEMPLATE_INCONSISTENT,
                    format!("attribute {t:#x} is not what the certificate is"),
                ));
            }
        }
        Ok(())
    }

    /// `CKA_LABEL`, which becomes the kernel key's description; without
    /// one, a name from the key's ID.
    pub(super) fn label(&self, public: &RsaPublic) -> Result<String> {
        match self.get(CKA_LABEL) {
            Some(l) => key_label(l).map(str::to_string),
            None => Ok(format!("rsa-{}", &records::hex(&public.key_id())[..16])),
        }
    }
}

/// A key's label as `rules::key_label` allows it.
fn key_label(v: &[u8]) -> Result<&str> {
    rules::key_label(v).ok_or_else(|| {
        refuse(
            CKR_ATTRIBUTE_VALUE_INVALID,
            "CKA_LABEL of a key must be non-empty UTF-8 text without NUL (it is the kernel key's description)".into(),
        )
    })
}
