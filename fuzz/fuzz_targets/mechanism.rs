//! Mechanisms and their parameters: PSS and OAEP with bad hashes, MGFs,
//! salt and label lengths, short and unaligned parameter structures.

use crate::args::{Bytes, Mostly, Rare, Rarely};
use crate::buffers::bytes_of;
use arbitrary::Arbitrary;
use cryptoki_sys::*;
use std::ffi::c_void;
use std::ptr::null_mut;

pub const MECHS: &[CK_MECHANISM_TYPE] = &[
    CKM_RSA_PKCS,
    CKM_RSA_X_509,
    CKM_RSA_PKCS_PSS,
    CKM_RSA_PKCS_OAEP,
    CKM_SHA1_RSA_PKCS,
    CKM_SHA224_RSA_PKCS,
    CKM_SHA256_RSA_PKCS,
    CKM_SHA384_RSA_PKCS,
    CKM_SHA512_RSA_PKCS,
    CKM_SHA1_RSA_PKCS_PSS,
    CKM_SHA224_RSA_PKCS_PSS,
    CKM_SHA256_RSA_PKCS_PSS,
    CKM_SHA384_RSA_PKCS_PSS,
    CKM_SHA512_RSA_PKCS_PSS,
    CKM_SHA_1,
    CKM_SHA224,
    CKM_SHA256,
    CKM_SHA384,
    CKM_SHA512,
    CKM_MD5,
    CKM_RSA_PKCS_KEY_PAIR_GEN,
    CKM_RSA_9796,
    CKM_AES_CBC,
];

/// The mechanisms that take no parameter: an empty one (NULL or not, with a
/// length of 0) must never be `CKR_MECHANISM_PARAM_INVALID`.
pub fn takes_no_parameter(m: CK_MECHANISM_TYPE) -> bool {
    matches!(
        m,
        CKM_RSA_PKCS
            | CKM_RSA_X_509
            | CKM_SHA1_RSA_PKCS
            | CKM_SHA224_RSA_PKCS
            | CKM_SHA256_RSA_PKCS
            | CKM_SHA384_RSA_PKCS
            | CKM_SHA512_RSA_PKCS
            | CKM_SHA_1
            | CKM_SHA224
            | CKM_SHA256
            | CKM_SHA384
            | CKM_SHA512
            | CKM_RSA_PKCS_KEY_PAIR_GEN
    )
}

/// Checks that an empty parameter of a mechanism that takes none was not
/// refused as a parameter.
pub fn check_empty_parameter(name: &str, m: &CK_MECHANISM, null: Rare, rv: CK_RV) {
    if !null.0 && m.ulParameterLen == 0 && takes_no_parameter(m.mechanism) {
        assert_ne!(
            rv, CKR_MECHANISM_PARAM_INVALID,
            "{name}: mechanism {:#x} refused an empty parameter (pointer {:?})",
            m.mechanism, m.pParameter
        );
    }
}

/// The signature mechanisms: the first 14 of [`MECHS`] but OAEP.
pub fn is_signature(m: CK_MECHANISM_TYPE) -> bool {
    MECHS[..14].contains(&m) && m != CKM_RSA_PKCS_OAEP
}

const HASHES: &[CK_MECHANISM_TYPE] = &[
    CKM_SHA_1,
    CKM_SHA224,
    CKM_SHA256,
    CKM_SHA384,
    CKM_SHA512,
    CKM_MD5,
    CKM_SHA3_256,
];

const MGFS: &[CK_RSA_PKCS_MGF_TYPE] = &[
    CKG_MGF1_SHA1,
    CKG_MGF1_SHA224,
    CKG_MGF1_SHA256,
    CKG_MGF1_SHA384,
    CKG_MGF1_SHA512,
    0,
];

/// (digest mechanism, MGF1 generator, digest length)
pub const HASH_ALGS: [(CK_MECHANISM_TYPE, CK_RSA_PKCS_MGF_TYPE, usize); 5] = [
    (CKM_SHA_1, CKG_MGF1_SHA1, 20),
    (CKM_SHA224, CKG_MGF1_SHA224, 28),
    (CKM_SHA256, CKG_MGF1_SHA256, 32),
    (CKM_SHA384, CKG_MGF1_SHA384, 48),
    (CKM_SHA512, CKG_MGF1_SHA512, 64),
];

/// A `CK_MECHANISM` and the memory its parameter points into.
pub struct Mech {
    pub m: CK_MECHANISM,
    _param: Vec<u8>,
    _label: Vec<u8>,
}

impl Mech {
    /// A mechanism with these parameter bytes (none: NULL, length 0).
    pub fn new(ty: CK_MECHANISM_TYPE, mut param: Vec<u8>, label: Vec<u8>) -> Mech {
        let (p, len) = if param.is_empty() {
            (null_mut(), 0)
        } else {
            (param.as_mut_ptr() as *mut c_void, param.len() as CK_ULONG)
        };
        Mech {
            m: CK_MECHANISM {
                mechanism: ty,
                pParameter: p,
                ulParameterLen: len,
            },
            _param: param,
            _label: label,
        }
    }

    /// The OAEP hash length the module takes from these parameters: their
    /// `hashAlg`, or SHA-1 (20 bytes) for an unset one, its documented
    /// OpenSSL default. None: no whole OAEP parameter structure, or a hash
    /// the harness does not know (the module refuses both at `*Init`).
    pub fn oaep_hash_len(&self) -> Option<usize> {
        let size = std::mem::size_of::<CK_RSA_PKCS_OAEP_PARAMS>();
        if self.m.pParameter.is_null() || self.m.ulParameterLen as usize != size {
            return None;
        }
        // The pointer is one of ours, into `_param`, and may be unaligned.
        let p = unsafe {
            std::ptr::read_unaligned(self.m.pParameter as *const CK_RSA_PKCS_OAEP_PARAMS)
        };
        if p.hashAlg == 0 {
            return Some(20);
        }
        HASH_ALGS.iter().find(|h| h.0 == p.hashAlg).map(|h| h.2)
    }

    /// The mechanism's address, or NULL.
    pub fn ptr(&mut self, null: Rare) -> *mut CK_MECHANISM {
        if null.0 { null_mut() } else { &mut self.m }
    }
}

/// A mechanism as the fuzzer chooses it.
#[derive(Arbitrary, Debug, Clone)]
pub struct MechSpec {
    /// One of [`MECHS`], or rarely any number.
    pub ty: Mostly<u8, CK_MECHANISM_TYPE>,
    pub param: ParamSpec,
    /// Claim less than the structure's length.
    pub short: Rarely<u8>,
    /// Place the structure one byte off alignment.
    pub unaligned: bool,
}

#[derive(Arbitrary, Debug, Clone)]
pub enum ParamSpec {
    /// No parameter: NULL with a length of 0 (or rarely more).
    None(Mostly<(), u8>),
    /// PSS or OAEP parameters that fit the mechanism, for the paths past
    /// the checks.
    Fitting(u8),
    Pss {
        hash: Mostly<u8, CK_ULONG>,
        mgf: Mostly<u8, CK_ULONG>,
        salt: Salt,
    },
    Oaep {
        hash: Mostly<u8, CK_ULONG>,
        mgf: Mostly<u8, CK_ULONG>,
        source: Mostly<(), CK_ULONG>,
        label: Label,
    },
    Raw(Bytes),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Salt {
    Any(CK_ULONG),
    Zero,
    Listed(u8),
}

#[derive(Arbitrary, Debug, Clone)]
pub enum Label {
    /// NULL, with a length of 0 or more.
    Null(u8),
    Bytes(Bytes),
}

impl MechSpec {
    pub fn ty(&self) -> CK_MECHANISM_TYPE {
        match self.ty {
            Mostly::Usual(i) => MECHS[usize::from(i) % MECHS.len()],
            Mostly::Odd(t) => t,
        }
    }

    /// The mechanism as `ty` (None: the spec's own type). The claimed
    /// length is the structure's or less, never more than the memory behind
    /// the pointer.
    pub fn build(&self, ty: Option<CK_MECHANISM_TYPE>) -> Mech {
        let ty = ty.unwrap_or_else(|| self.ty());
        let pick = |v: &Mostly<u8, CK_ULONG>, list: &[CK_ULONG]| match v {
            Mostly::Usual(i) => list[usize::from(*i) % list.len()],
            Mostly::Odd(x) => *x,
        };
        let mut label = Vec::new();
        let param: Option<Vec<u8>> = match &self.param {
            ParamSpec::None(claim) => {
                let mut m = Mech::new(ty, Vec::new(), Vec::new());
                if let Mostly::Odd(n) = claim {
                    m.m.ulParameterLen = CK_ULONG::from(n % 64 + 1);
                }
                return m;
            }
            ParamSpec::Fitting(i) => {
                let hash = match ty {
                    CKM_SHA1_RSA_PKCS_PSS => 0,
                    CKM_SHA224_RSA_PKCS_PSS => 1,
                    CKM_SHA256_RSA_PKCS_PSS => 2,
                    CKM_SHA384_RSA_PKCS_PSS => 3,
                    CKM_SHA512_RSA_PKCS_PSS => 4,
                    _ => usize::from(*i) % 5,
                };
                let (hash, mgf, len) = HASH_ALGS[hash];
                if ty == CKM_RSA_PKCS_OAEP {
                    Some(bytes_of(&CK_RSA_PKCS_OAEP_PARAMS {
                        hashAlg: hash,
                        mgf,
                        source: CKZ_DATA_SPECIFIED,
                        pSourceData: null_mut(),
                        ulSourceDataLen: 0,
                    }))
                } else if is_signature(ty) && !matches!(ty, CKM_RSA_PKCS | CKM_RSA_X_509) {
                    Some(bytes_of(&CK_RSA_PKCS_PSS_PARAMS {
                        hashAlg: hash,
                        mgf,
                        sLen: len as CK_ULONG,
                    }))
                } else {
                    None
                }
            }
            ParamSpec::Pss { hash, mgf, salt } => Some(bytes_of(&CK_RSA_PKCS_PSS_PARAMS {
                hashAlg: pick(hash, HASHES),
                mgf: pick(mgf, MGFS),
                sLen: match *salt {
                    Salt::Any(n) => n,
                    Salt::Zero => 0,
                    Salt::Listed(i) => [20, 28, 32, 48, 64, 94, 222][usize::from(i) % 7],
                },
            })),
            ParamSpec::Oaep {
                hash,
                mgf,
                source,
                label: l,
            } => {
                let (data, len) = match l {
                    Label::Null(n) => (null_mut(), CK_ULONG::from(n % 2 * (n % 64 + 1))),
                    Label::Bytes(b) => {
                        label = b.0.clone();
                        (label.as_mut_ptr() as *mut c_void, label.len() as CK_ULONG)
                    }
                };
                Some(bytes_of(&CK_RSA_PKCS_OAEP_PARAMS {
                    hashAlg: pick(hash, HASHES),
                    mgf: pick(mgf, MGFS),
                    source: match source {
                        Mostly::Usual(()) => CKZ_DATA_SPECIFIED,
                        Mostly::Odd(s) => *s,
                    },
                    pSourceData: data,
                    ulSourceDataLen: len,
                }))
            }
            ParamSpec::Raw(b) => Some(b.0.clone()),
        };
        let Some(v) = param else {
            return Mech::new(ty, Vec::new(), label);
        };
        let mut claim = match self.short.0 {
            Some(n) => usize::from(n) % (v.len() + 1),
            None => v.len(),
        };
        // Random bytes claimed as long as an OAEP parameter structure would
        // be read as one, pointer included: a lie about memory the module
        // cannot detect (a C client passing a wild pointer). One byte less
        // is still no structure the module reads.
        if matches!(self.param, ParamSpec::Raw(_))
            && claim == std::mem::size_of::<CK_RSA_PKCS_OAEP_PARAMS>()
        {
            claim -= 1;
        }
        let offset = usize::from(self.unaligned);
        let mut mem = vec![0u8; offset];
        mem.extend_from_slice(&v);
        let mut m = Mech::new(ty, Vec::new(), label);
        m.m.ulParameterLen = claim as CK_ULONG;
        // An empty parameter (Raw of no bytes) points somewhere real: a
        // pointer with a length of 0 is no parameter, as NULL is.
        if v.is_empty() {
            mem.push(0);
        }
        m.m.pParameter = mem[offset..].as_mut_ptr() as *mut c_void;
        m._param = mem;
        m
    }
}
