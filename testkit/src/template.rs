//! Attribute templates and mechanisms, with the memory they point into.

use cryptoki_sys::*;
use std::any::Any;
use std::ffi::c_void;
use std::marker::PhantomData;
use std::ptr::null_mut;

/// A `CK_ATTRIBUTE` array and the buffers it points into: values borrowed
/// for `'a` (the template makes no copy, so a test can hand the module a
/// secret it will wipe afterwards) or owned by the template (numbers and
/// output buffers).
pub struct Template<'a> {
    attrs: Vec<CK_ATTRIBUTE>,
    /// Each buffer's size: what `reset` restores and `value` reads at most.
    sizes: Vec<usize>,
    /// Owned buffers; moving a `Box` into the `Vec` keeps its heap memory
    /// where the attribute points.
    owned: Vec<Box<[u8]>>,
    _borrowed: PhantomData<&'a [u8]>,
}

// SAFETY: every pointer is into a buffer the template owns or into a `&'a
// [u8]`, which may be read from any thread.
unsafe impl Send for Template<'_> {}

impl Default for Template<'_> {
    fn default() -> Self {
        Template::new()
    }
}

impl<'a> Template<'a> {
    pub fn new() -> Self {
        Template {
            attrs: Vec::new(),
            sizes: Vec::new(),
            owned: Vec::new(),
            _borrowed: PhantomData,
        }
    }

    fn push(mut self, type_: CK_ATTRIBUTE_TYPE, p: *mut u8, len: usize) -> Self {
        self.attrs.push(CK_ATTRIBUTE {
            type_,
            pValue: p as *mut c_void,
            ulValueLen: len as CK_ULONG,
        });
        self.sizes.push(len);
        self
    }

    fn own(mut self, type_: CK_ATTRIBUTE_TYPE, mut b: Box<[u8]>) -> Self {
        let (p, len) = (b.as_mut_ptr(), b.len());
        self.owned.push(b);
        self.push(type_, p, len)
    }

    /// An input value, borrowed: the module reads it where it is.
    pub fn bytes(self, type_: CK_ATTRIBUTE_TYPE, v: &'a [u8]) -> Self {
        // The module only reads an input template; the C type is not const.
        self.push(type_, v.as_ptr() as *mut u8, v.len())
    }

    /// A `CK_ULONG` value (a class, key type, bit count…).
    pub fn ulong(self, type_: CK_ATTRIBUTE_TYPE, v: CK_ULONG) -> Self {
        self.own(type_, Box::new(v.to_ne_bytes()))
    }

    /// An output buffer of `len` bytes for `C_GetAttributeValue`.
    pub fn out(self, type_: CK_ATTRIBUTE_TYPE, len: usize) -> Self {
        self.own(type_, vec![0u8; len].into_boxed_slice())
    }

    /// The value of attribute `i` as the module left it: at most its
    /// buffer, and empty when the module answered
    /// `CK_UNAVAILABLE_INFORMATION`.
    pub fn value(&self, i: usize) -> &[u8] {
        let a = &self.attrs[i];
        if a.pValue.is_null() || a.ulValueLen == CK_UNAVAILABLE_INFORMATION {
            return &[];
        }
        let n = (a.ulValueLen as usize).min(self.sizes[i]);
        // SAFETY: pValue points to a buffer of sizes[i] bytes that lives as
        // long as the template (owned) or 'a (borrowed).
        unsafe { std::slice::from_raw_parts(a.pValue as *const u8, n) }
    }

    /// Restores every length to its buffer's size, before reusing the
    /// template for another `C_GetAttributeValue`.
    pub fn reset(&mut self) {
        for (a, n) in self.attrs.iter_mut().zip(&self.sizes) {
            a.ulValueLen = *n as CK_ULONG;
        }
    }

    /// The array for a raw call: NULL when the template is empty, as a C
    /// client passes it.
    pub fn as_mut_ptr(&mut self) -> *mut CK_ATTRIBUTE {
        if self.attrs.is_empty() {
            null_mut()
        } else {
            self.attrs.as_mut_ptr()
        }
    }

    /// The number of attributes.
    pub fn count(&self) -> CK_ULONG {
        self.attrs.len() as CK_ULONG
    }
}

/// A `CK_MECHANISM` and the parameter block it points to.
pub struct Mechanism {
    m: CK_MECHANISM,
    _param: Option<Box<dyn Any + Send + Sync>>,
}

// SAFETY: pParameter is NULL or points into the boxed parameter, which the
// mechanism owns and nobody writes.
unsafe impl Send for Mechanism {}
unsafe impl Sync for Mechanism {}

impl Mechanism {
    /// A mechanism without parameter.
    pub const fn new(mechanism: CK_MECHANISM_TYPE) -> Self {
        Mechanism {
            m: CK_MECHANISM {
                mechanism,
                pParameter: null_mut(),
                ulParameterLen: 0,
            },
            _param: None,
        }
    }

    /// A mechanism with a parameter block (`CK_RSA_PKCS_PSS_PARAMS`, …),
    /// passed with its own size.
    pub fn with_param<P: Any + Send + Sync>(mechanism: CK_MECHANISM_TYPE, param: P) -> Self {
        let b = Box::new(param);
        let p = &*b as *const P as *mut c_void;
        Mechanism {
            m: CK_MECHANISM {
                mechanism,
                pParameter: p,
                ulParameterLen: std::mem::size_of::<P>() as CK_ULONG,
            },
            _param: Some(b),
        }
    }

    /// RSA-PSS with MGF1 over the same hash and a salt of `salt` bytes.
    pub fn rsa_pss(
        mechanism: CK_MECHANISM_TYPE,
        hash: CK_MECHANISM_TYPE,
        mgf: CK_RSA_PKCS_MGF_TYPE,
        salt: CK_ULONG,
    ) -> Self {
        Mechanism::with_param(
            mechanism,
            CK_RSA_PKCS_PSS_PARAMS {
                hashAlg: hash,
                mgf,
                sLen: salt,
            },
        )
    }

    /// A copy for one call: the module gets a `CK_MECHANISM_PTR` it may
    /// treat as writable, the parameter stays where it is.
    pub(crate) fn raw(&self) -> CK_MECHANISM {
        self.m
    }
}
