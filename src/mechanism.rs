//! The mechanism table. Each mechanism is a kernel call plus whatever has to
//! happen in userspace around it; adding one means adding a row here and, if
//! it needs new padding, one function — not touching the session logic.

use crate::error::{Error, Result};
use crate::hash::Hash;
use cryptoki_sys::*;

/// What a mechanism does around the RSA operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// PKCS#1 v1.5: signatures by the kernel itself (`enc=pkcs1`, with
    /// `hash=` when we hashed), encryption blocks in userspace.
    Pkcs1,
    /// EMSA-PSS in userspace around the raw private operation.
    Pss,
    /// No padding (`CKM_RSA_X_509`): the raw operation.
    Raw,
    /// EME-OAEP in userspace around the raw operation.
    Oaep,
    /// Not an RSA mechanism: a message digest.
    Digest,
    /// Key pair generation (in userspace: the kernel cannot generate keys).
    KeyGen,
}

#[derive(Debug)]
pub struct MechSpec {
    pub ty: CK_MECHANISM_TYPE,
    pub padding: Padding,
    /// The message hash the mechanism computes itself (CKM_SHAx_…), if any.
    pub hash: Option<Hash>,
    pub flags: CK_FLAGS,
}

/// The kernel's RSA implementation accepts only these modulus sizes
/// (crypto/rsa.c `rsa_check_key_length`): 512, 1024 and 1536 bits are refused
/// in FIPS mode, 2048, 3072 and 4096 always work.
pub const MAX_KEY_BITS: CK_ULONG = 4096;

pub fn min_key_bits() -> CK_ULONG {
    let fips = std::fs::read_to_string("/proc/sys/crypto/fips_enabled")
        .map(|s| s.trim() == "1")
        .unwrap_or(false);
    if fips { 2048 } else { 512 }
}

// CKF_HW: the RSA operation of every RSA mechanism is performed by the
// kernel, outside this library, as a token device would; only encodings and
// hashes run here. (pkcs11-tool --test skips signature tests for mechanisms
// without it.) Digests are computed in this library and do not claim it.
const SIGN_VERIFY: CK_FLAGS = CKF_HW | CKF_SIGN | CKF_VERIFY;
const ALL_RSA: CK_FLAGS =
    CKF_HW | CKF_SIGN | CKF_VERIFY | CKF_VERIFY_RECOVER | CKF_ENCRYPT | CKF_DECRYPT;

macro_rules! mechs {
    ($($ty:ident, $padding:ident, $hash:expr, $flags:expr;)*) => {
        pub static MECHANISMS: &[MechSpec] = &[
            $(MechSpec { ty: $ty, padding: Padding::$padding, hash: $hash, flags: $flags },)*
        ];
    };
}

mechs! {
    CKM_RSA_PKCS, Pkcs1, None, ALL_RSA;
    CKM_SHA1_RSA_PKCS, Pkcs1, Some(Hash::Sha1), SIGN_VERIFY;
    CKM_SHA224_RSA_PKCS, Pkcs1, Some(Hash::Sha224), SIGN_VERIFY;
    CKM_SHA256_RSA_PKCS, Pkcs1, Some(Hash::Sha256), SIGN_VERIFY;
    CKM_SHA384_RSA_PKCS, Pkcs1, Some(Hash::Sha384), SIGN_VERIFY;
    CKM_SHA512_RSA_PKCS, Pkcs1, Some(Hash::Sha512), SIGN_VERIFY;
    CKM_RSA_PKCS_PSS, Pss, None, SIGN_VERIFY;
    CKM_SHA1_RSA_PKCS_PSS, Pss, Some(Hash::Sha1), SIGN_VERIFY;
    CKM_SHA224_RSA_PKCS_PSS, Pss, Some(Hash::Sha224), SIGN_VERIFY;
    CKM_SHA256_RSA_PKCS_PSS, Pss, Some(Hash::Sha256), SIGN_VERIFY;
    CKM_SHA384_RSA_PKCS_PSS, Pss, Some(Hash::Sha384), SIGN_VERIFY;
    CKM_SHA512_RSA_PKCS_PSS, Pss, Some(Hash::Sha512), SIGN_VERIFY;
    CKM_RSA_X_509, Raw, None, ALL_RSA;
    CKM_RSA_PKCS_OAEP, Oaep, None, CKF_HW | CKF_ENCRYPT | CKF_DECRYPT;
    CKM_RSA_PKCS_KEY_PAIR_GEN, KeyGen, None, CKF_GENERATE_KEY_PAIR;
    CKM_SHA_1, Digest, Some(Hash::Sha1), CKF_DIGEST;
    CKM_SHA224, Digest, Some(Hash::Sha224), CKF_DIGEST;
    CKM_SHA256, Digest, Some(Hash::Sha256), CKF_DIGEST;
    CKM_SHA384, Digest, Some(Hash::Sha384), CKF_DIGEST;
    CKM_SHA512, Digest, Some(Hash::Sha512), CKF_DIGEST;
}

pub fn lookup(ty: CK_MECHANISM_TYPE) -> Option<&'static MechSpec> {
    MECHANISMS.iter().find(|m| m.ty == ty)
}

/// Mechanisms usable with a key for any of the given functions
/// (`CKA_ALLOWED_MECHANISMS`).
pub fn mechanisms_for(flags: CK_FLAGS) -> impl Iterator<Item = CK_MECHANISM_TYPE> {
    MECHANISMS
        .iter()
        .filter(move |m| m.flags & flags != 0)
        .map(|m| m.ty)
}

/// Mechanism parameters as the caller passed them, copied out of C memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MechParams {
    None,
    Pss {
        hash_alg: CK_MECHANISM_TYPE,
        mgf: CK_RSA_PKCS_MGF_TYPE,
        salt_len: CK_ULONG,
    },
    Oaep {
        hash_alg: CK_MECHANISM_TYPE,
        mgf: CK_RSA_PKCS_MGF_TYPE,
        source: CK_ULONG,
        label: Vec<u8>,
    },
    /// Something we cannot interpret for this mechanism.
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PssParams {
    pub hash: Hash,
    pub mgf: Hash,
    pub salt_len: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OaepParams {
    pub hash: Hash,
    pub mgf: Hash,
    pub label: Vec<u8>,
}

/// A mechanism with its parameters checked against the key.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub spec: &'static MechSpec,
    pub pss: Option<PssParams>,
    pub oaep: Option<OaepParams>,
}

/// An OAEP `hashAlg` or `mgf` left at zero (see [`resolve`]).
const OAEP_UNSET: CK_ULONG = 0;

/// Validates parameters for `spec` with a key of `mod_bits` bits
/// (PKCS#11 2.40 §2.1.14–2.1.15 for PSS, §2.1.8 for OAEP).
pub fn resolve(spec: &'static MechSpec, params: &MechParams, mod_bits: u32) -> Result<Resolved> {
    let k = mod_bits.div_ceil(8) as usize;
    let mut r = Resolved {
        spec,
        pss: None,
        oaep: None,
    };
    match (spec.padding, params) {
        (Padding::Pkcs1 | Padding::Raw | Padding::Digest | Padding::KeyGen, MechParams::None) => {}
        (
            Padding::Pss,
            MechParams::Pss {
                hash_alg,
                mgf,
                salt_len,
            },
        ) => {
            let hash =
                Hash::from_mechanism(*hash_alg).ok_or(Error::new(CKR_MECHANISM_PARAM_INVALID))?;
            if spec.hash.is_some_and(|h| h != hash) {
                return Err(Error::new(CKR_MECHANISM_PARAM_INVALID));
            }
            let mgf = Hash::from_mgf(*mgf).ok_or(Error::new(CKR_MECHANISM_PARAM_INVALID))?;
            let max = crate::crypto::padding::pss_max_salt(mod_bits, hash)
                .ok_or(Error::new(CKR_KEY_SIZE_RANGE))?;
            let salt_len = usize::try_from(*salt_len)
                .ok()
                .filter(|s| *s <= max)
                .ok_or(Error::new(CKR_MECHANISM_PARAM_INVALID))?;
            r.pss = Some(PssParams {
                hash,
                mgf,
                salt_len,
            });
        }
        (
            Padding::Oaep,
            MechParams::Oaep {
                hash_alg,
                mgf,
                source,
                label,
            },
        ) => {
            // 0 names no hash (it is CKM_RSA_PKCS_KEY_PAIR_GEN) and no
            // generator, so it cannot shadow a real choice. pkcs11-provider
            // passes 0 for what OpenSSL left unset, meaning OpenSSL's
            // defaults: SHA-1 (RFC 8017's too), and MGF1 over the OAEP hash.
            let hash = match *hash_alg {
                OAEP_UNSET => Hash::Sha1,
                h => Hash::from_mechanism(h).ok_or(Error::new(CKR_MECHANISM_PARAM_INVALID))?,
            };
            let mgf = match *mgf {
                OAEP_UNSET => hash,
                m => Hash::from_mgf(m).ok_or(Error::new(CKR_MECHANISM_PARAM_INVALID))?,
            };
            // CKZ_DATA_SPECIFIED is the only source; some callers leave it 0
            // with an empty label, which means the same.
            if *source != CKZ_DATA_SPECIFIED && !(*source == 0 && label.is_empty()) {
                return Err(Error::new(CKR_MECHANISM_PARAM_INVALID));
            }
            if k < 2 * hash.digest_len() + 2 {
                return Err(Error::new(CKR_KEY_SIZE_RANGE));
            }
            r.oaep = Some(OaepParams {
                hash,
                mgf,
                label: label.clone(),
            });
        }
        _ => return Err(Error::new(CKR_MECHANISM_PARAM_INVALID)),
    }
    if spec.padding == Padding::Pkcs1 {
        if let Some(h) = spec.hash {
            if h.digest_info_len() + 11 > k {
                return Err(Error::new(CKR_KEY_SIZE_RANGE));
            }
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_consistent() {
        for (i, m) in MECHANISMS.iter().enumerate() {
            assert!(
                MECHANISMS[..i].iter().all(|o| o.ty != m.ty),
                "duplicate {:#x}",
                m.ty
            );
            assert!(std::ptr::eq(lookup(m.ty).unwrap(), m));
            assert_eq!(
                m.padding == Padding::Digest,
                m.flags == CKF_DIGEST,
                "{:#x}",
                m.ty
            );
        }
        assert!(lookup(CKM_ECDSA).is_none());
    }

    #[test]
    fn pss_and_oaep_parameters_are_checked() {
        let pss = lookup(CKM_SHA256_RSA_PKCS_PSS).unwrap();
        let ok = MechParams::Pss {
            hash_alg: CKM_SHA256,
            mgf: CKG_MGF1_SHA256,
            salt_len: 32,
        };
        assert_eq!(resolve(pss, &ok, 2048).unwrap().pss.unwrap().salt_len, 32);
        let wrong_hash = MechParams::Pss {
            hash_alg: CKM_SHA_1,
            mgf: CKG_MGF1_SHA256,
            salt_len: 32,
        };
        assert_eq!(
            resolve(pss, &wrong_hash, 2048).err().map(|e| e.rv),
            Some(CKR_MECHANISM_PARAM_INVALID)
        );
        let max = MechParams::Pss {
            hash_alg: CKM_SHA256,
            mgf: CKG_MGF1_SHA256,
            salt_len: 256 - 32 - 2,
        };
        assert!(resolve(pss, &max, 2048).is_ok());
        let too_long = MechParams::Pss {
            hash_alg: CKM_SHA256,
            mgf: CKG_MGF1_SHA256,
            salt_len: 256 - 32 - 1,
        };
        assert_eq!(
            resolve(pss, &too_long, 2048).err().map(|e| e.rv),
            Some(CKR_MECHANISM_PARAM_INVALID)
        );
        let bad_mgf = MechParams::Pss {
            hash_alg: CKM_SHA256,
            mgf: 0x99,
            salt_len: 0,
        };
        assert_eq!(
            resolve(pss, &bad_mgf, 2048).err().map(|e| e.rv),
            Some(CKR_MECHANISM_PARAM_INVALID)
        );
        assert_eq!(
            resolve(pss, &MechParams::None, 2048).err().map(|e| e.rv),
            Some(CKR_MECHANISM_PARAM_INVALID)
        );
        let raw_pss = lookup(CKM_RSA_PKCS_PSS).unwrap();
        let any = MechParams::Pss {
            hash_alg: CKM_SHA384,
            mgf: CKG_MGF1_SHA1,
            salt_len: 0,
        };
        assert!(resolve(raw_pss, &any, 2048).is_ok());

        let oaep = lookup(CKM_RSA_PKCS_OAEP).unwrap();
        let ok = MechParams::Oaep {
            hash_alg: CKM_SHA256,
            mgf: CKG_MGF1_SHA256,
            source: CKZ_DATA_SPECIFIED,
            label: b"l".to_vec(),
        };
        assert_eq!(resolve(oaep, &ok, 2048).unwrap().oaep.unwrap().label, b"l");
        let bad_source = MechParams::Oaep {
            hash_alg: CKM_SHA256,
            mgf: CKG_MGF1_SHA256,
            source: 7,
            label: vec![],
        };
        assert_eq!(
            resolve(oaep, &bad_source, 2048).err().map(|e| e.rv),
            Some(CKR_MECHANISM_PARAM_INVALID)
        );
        let big_hash = MechParams::Oaep {
            hash_alg: CKM_SHA512,
            mgf: CKG_MGF1_SHA512,
            source: CKZ_DATA_SPECIFIED,
            label: vec![],
        };
        assert_eq!(
            resolve(oaep, &big_hash, 1024).err().map(|e| e.rv),
            Some(CKR_KEY_SIZE_RANGE)
        );

        let pkcs = lookup(CKM_RSA_PKCS).unwrap();
        assert_eq!(
            resolve(pkcs, &MechParams::Unknown, 2048)
                .err()
                .map(|e| e.rv),
            Some(CKR_MECHANISM_PARAM_INVALID)
        );
        assert_eq!(
            resolve(lookup(CKM_SHA512_RSA_PKCS).unwrap(), &MechParams::None, 512)
                .err()
                .map(|e| e.rv),
            Some(CKR_KEY_SIZE_RANGE)
        );
    }

    #[test]
    fn oaep_zero_hash_and_mgf_mean_openssl_defaults() {
        let oaep = lookup(CKM_RSA_PKCS_OAEP).unwrap();
        let resolved = |hash_alg, mgf| {
            let p = MechParams::Oaep {
                hash_alg,
                mgf,
                source: CKZ_DATA_SPECIFIED,
                label: vec![],
            };
            resolve(oaep, &p, 2048)
                .map(|r| r.oaep.map(|o| (o.hash, o.mgf)))
                .map_err(|e| e.rv)
        };
        assert_eq!(resolved(0, 0), Ok(Some((Hash::Sha1, Hash::Sha1))));
        assert_eq!(
            resolved(CKM_SHA256, 0),
            Ok(Some((Hash::Sha256, Hash::Sha256)))
        );
        assert_eq!(
            resolved(0, CKG_MGF1_SHA256),
            Ok(Some((Hash::Sha1, Hash::Sha256)))
        );
        assert_eq!(resolved(CKM_MD5, 0), Err(CKR_MECHANISM_PARAM_INVALID));
        assert_eq!(resolved(0, 0x99), Err(CKR_MECHANISM_PARAM_INVALID));
        // PSS is not OAEP: a zero there is still no hash.
        let pss = MechParams::Pss {
            hash_alg: 0,
            mgf: 0,
            salt_len: 0,
        };
        assert_eq!(
            resolve(lookup(CKM_RSA_PKCS_PSS).unwrap(), &pss, 2048)
                .err()
                .map(|e| e.rv),
            Some(CKR_MECHANISM_PARAM_INVALID)
        );
    }
}
