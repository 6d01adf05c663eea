//! Templates: the attribute arrays of `C_CreateObject`, `C_GenerateKeyPair`,
//! `C_FindObjectsInit`, `C_SetAttributeValue` (values in, exactly sized) and
//! `C_GetAttributeValue` (guarded buffers out). Random ones here; the
//! well-formed ones that creation needs are in `wellformed`.

use crate::args::{Bytes, Mostly, OutLen, Rare, Rarely, Ulong};
use crate::buffers::OutBuf;
use crate::keys::keys;
use arbitrary::Arbitrary;
use cryptoki_sys::*;
use rsa::traits::{PrivateKeyParts, PublicKeyParts};
use std::ffi::c_void;
use std::ptr::null_mut;

pub const ATTRS: &[CK_ATTRIBUTE_TYPE] = &[
    CKA_CLASS,
    CKA_TOKEN,
    CKA_PRIVATE,
    CKA_LABEL,
    CKA_VALUE,
    CKA_CERTIFICATE_TYPE,
    CKA_ISSUER,
    CKA_SERIAL_NUMBER,
    CKA_SUBJECT,
    CKA_ID,
    CKA_KEY_TYPE,
    CKA_SENSITIVE,
    CKA_ENCRYPT,
    CKA_DECRYPT,
    CKA_WRAP,
    CKA_UNWRAP,
    CKA_SIGN,
    CKA_SIGN_RECOVER,
    CKA_VERIFY,
    CKA_VERIFY_RECOVER,
    CKA_DERIVE,
    CKA_MODULUS,
    CKA_MODULUS_BITS,
    CKA_PUBLIC_EXPONENT,
    CKA_PRIVATE_EXPONENT,
    CKA_PRIME_1,
    CKA_PRIME_2,
    CKA_EXPONENT_1,
    CKA_EXPONENT_2,
    CKA_COEFFICIENT,
    CKA_PUBLIC_KEY_INFO,
    CKA_EXTRACTABLE,
    CKA_LOCAL,
    CKA_NEVER_EXTRACTABLE,
    CKA_ALWAYS_SENSITIVE,
    CKA_MODIFIABLE,
    CKA_COPYABLE,
    CKA_DESTROYABLE,
    CKA_ALWAYS_AUTHENTICATE,
    CKA_ALLOWED_MECHANISMS,
    CKA_KEY_GEN_MECHANISM,
    CKA_START_DATE,
    CKA_END_DATE,
    CKA_TRUSTED,
    CKA_CERTIFICATE_CATEGORY,
    CKA_WRAP_TEMPLATE,
    CKA_VENDOR_DEFINED,
];

/// One of [`ATTRS`], or rarely any number.
pub type AttrType = Mostly<u8, CK_ATTRIBUTE_TYPE>;

pub fn attr_type(t: AttrType) -> CK_ATTRIBUTE_TYPE {
    match t {
        Mostly::Usual(i) => ATTRS[usize::from(i) % ATTRS.len()],
        Mostly::Odd(t) => t,
    }
}

/// One attribute as passed in: the value (None: a NULL pointer) and the
/// length claimed beside it, which is the value's unless NULL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    pub ty: CK_ATTRIBUTE_TYPE,
    pub value: Option<Vec<u8>>,
    pub claim: CK_ULONG,
}

impl Attr {
    pub fn new(ty: CK_ATTRIBUTE_TYPE, value: Vec<u8>) -> Attr {
        Attr {
            ty,
            claim: value.len() as CK_ULONG,
            value: Some(value),
        }
    }

    pub fn bool(ty: CK_ATTRIBUTE_TYPE, v: bool) -> Attr {
        Attr::new(ty, vec![CK_BBOOL::from(v)])
    }

    pub fn ulong(ty: CK_ATTRIBUTE_TYPE, v: CK_ULONG) -> Attr {
        Attr::new(ty, v.to_ne_bytes().to_vec())
    }

    pub fn null(ty: CK_ATTRIBUTE_TYPE, claim: CK_ULONG) -> Attr {
        Attr {
            ty,
            value: None,
            claim,
        }
    }

    /// What the `Null(n)` choices of a template mean: mostly NULL with a
    /// length of 0 or 1–64; one time in sixteen a real one-byte value with
    /// a length no buffer can have (`buffers::HUGE`).
    pub fn null_or_huge(ty: CK_ATTRIBUTE_TYPE, n: u8) -> Attr {
        if n >= 240 {
            Attr {
                ty,
                value: Some(vec![CK_TRUE]),
                claim: crate::buffers::huge(n),
            }
        } else {
            Attr::null(ty, CK_ULONG::from(n % 2 * (n % 64 + 1)))
        }
    }
}

/// A template and the memory its values point into.
pub struct Template {
    attrs: Vec<CK_ATTRIBUTE>,
    bufs: Vec<OutBuf>,
    null_array: bool,
    /// The count passed: all the attributes, or fewer.
    pub count: CK_ULONG,
}

impl Template {
    /// Values in, each exactly as long as claimed (or claiming a length no
    /// buffer has), every other one off alignment: a `CK_ULONG` value need
    /// not be aligned.
    pub fn input(list: &[Attr]) -> Template {
        let mut attrs = Vec::with_capacity(list.len());
        let mut bufs = Vec::with_capacity(list.len());
        for (i, a) in list.iter().enumerate() {
            let mut buf = match &a.value {
                Some(v) => OutBuf::input_at(v.clone(), i % 2 == 1),
                None => OutBuf::new(None),
            };
            attrs.push(CK_ATTRIBUTE {
                type_: a.ty,
                pValue: buf.ptr() as *mut c_void,
                ulValueLen: a.claim,
            });
            bufs.push(buf);
        }
        Template {
            count: attrs.len() as CK_ULONG,
            attrs,
            bufs,
            null_array: false,
        }
    }

    /// Guarded buffers out, of the room given (None: NULL, with a claim),
    /// every other one off alignment.
    pub fn output(list: &[(CK_ATTRIBUTE_TYPE, OutLen)]) -> Template {
        let mut attrs = Vec::with_capacity(list.len());
        let mut bufs = Vec::with_capacity(list.len());
        for (i, (ty, len)) in list.iter().enumerate() {
            let mut buf = OutBuf::new_at(len.room(), i % 2 == 1);
            attrs.push(CK_ATTRIBUTE {
                type_: *ty,
                pValue: buf.ptr() as *mut c_void,
                ulValueLen: len.claim(),
            });
            bufs.push(buf);
        }
        Template {
            count: attrs.len() as CK_ULONG,
            attrs,
            bufs,
            null_array: false,
        }
    }

    /// The array's shape as the fuzzer chose it: NULL, or a short count.
    pub fn shaped(mut self, shape: &Shape) -> Template {
        self.null_array = shape.null_array.0;
        if let Some(n) = shape.fewer.0 {
            self.count = CK_ULONG::from(n) % (self.count + 1);
        }
        self
    }

    pub fn ptr(&mut self) -> *mut CK_ATTRIBUTE {
        if self.null_array {
            null_mut()
        } else {
            self.attrs.as_mut_ptr()
        }
    }

    /// How many attributes the module may look at.
    pub fn used(&self) -> usize {
        if self.null_array {
            0
        } else {
            self.count as usize
        }
    }

    pub fn attrs(&self) -> &[CK_ATTRIBUTE] {
        &self.attrs
    }

    pub fn room(&self, i: usize) -> Option<usize> {
        self.bufs[i].room()
    }

    pub fn check(&self, what: &str) {
        for b in &self.bufs {
            b.check(what);
        }
    }
}

/// Rarely a NULL array or a count short of the attributes.
#[derive(Arbitrary, Debug, Clone, Default)]
pub struct Shape {
    pub null_array: Rare,
    pub fewer: Rarely<u8>,
}

/// A random template of up to eight attributes.
#[derive(Arbitrary, Debug, Clone)]
pub struct TemplateSpec {
    pub attrs: Vec<AttrSpec>,
    pub shape: Shape,
}

#[derive(Arbitrary, Debug, Clone)]
pub struct AttrSpec {
    pub ty: AttrType,
    pub value: ValueSpec,
}

#[derive(Arbitrary, Debug, Clone)]
pub enum ValueSpec {
    /// The value a key to import or generate would have here.
    Fitting(u8),
    Ulong(Ulong),
    Bool(u8),
    Bytes(Bytes),
    /// NULL, with a length of 0 or more; rarely a length no buffer has
    /// (see `Attr::null_or_huge`).
    Null(u8),
}

impl ValueSpec {
    pub fn attr(&self, ty: CK_ATTRIBUTE_TYPE) -> Attr {
        let k = &keys().known[0].key;
        let v = match self {
            ValueSpec::Null(n) => return Attr::null_or_huge(ty, *n),
            ValueSpec::Ulong(v) => v.value().to_ne_bytes().to_vec(),
            ValueSpec::Bool(b) => vec![b % 3],
            ValueSpec::Bytes(b) => b.0.clone(),
            ValueSpec::Fitting(i) => match ty {
                CKA_MODULUS => k.n().to_bytes_be(),
                CKA_PUBLIC_EXPONENT => k.e().to_bytes_be(),
                CKA_PRIVATE_EXPONENT => k.d().to_bytes_be(),
                CKA_PRIME_1 => k.primes()[0].to_bytes_be(),
                CKA_PRIME_2 => k.primes()[1].to_bytes_be(),
                CKA_EXPONENT_1 => k.dp().expect("dp").to_bytes_be(),
                CKA_EXPONENT_2 => k.dq().expect("dq").to_bytes_be(),
                CKA_COEFFICIENT => k.crt_coefficient().expect("qinv").to_bytes_be(),
                CKA_LABEL => {
                    let names: &[&[u8]] = &[b"user-2048", b"imported", b"x", b"revoked", b""];
                    names[usize::from(*i) % names.len()].to_vec()
                }
                CKA_MODULUS_BITS => {
                    let bits: [CK_ULONG; 5] = [2048, 3072, 4096, 1024, 2049];
                    bits[usize::from(*i) % bits.len()].to_ne_bytes().to_vec()
                }
                CKA_CLASS => [CKO_PRIVATE_KEY, CKO_PUBLIC_KEY, CKO_CERTIFICATE]
                    [usize::from(*i) % 3]
                    .to_ne_bytes()
                    .to_vec(),
                CKA_KEY_TYPE => CKK_RSA.to_ne_bytes().to_vec(),
                _ => vec![CK_TRUE],
            },
        };
        Attr::new(ty, v)
    }
}

impl TemplateSpec {
    pub fn attrs(&self) -> Vec<Attr> {
        self.attrs
            .iter()
            .take(8)
            .map(|a| a.value.attr(attr_type(a.ty)))
            .collect()
    }

    pub fn build(&self) -> Template {
        Template::input(&self.attrs()).shaped(&self.shape)
    }
}

/// A `C_GetAttributeValue` template: types and the room for each value.
#[derive(Arbitrary, Debug, Clone)]
pub struct OutTemplateSpec {
    pub attrs: Vec<(AttrType, OutLen)>,
    pub shape: Shape,
}

impl OutTemplateSpec {
    pub fn build(&self) -> Template {
        let list: Vec<_> = self
            .attrs
            .iter()
            .take(8)
            .map(|(t, l)| (attr_type(*t), *l))
            .collect();
        Template::output(&list).shaped(&self.shape)
    }
}
