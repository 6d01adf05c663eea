//! Every RSA mechanism on kernel-held keys, checked against an independent
//! implementation (RustCrypto `rsa`), with the exact error codes for bad
//! lengths, parameters and ciphertexts. Needs a kernel that holds PKCS#8
//! keys: `lab/test` runs these inside the lab on 6.1 and 6.12.

mod common;

use common::*;
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::ObjectClass;
use cryptoki_sys::*;
use rsa::traits::PublicKeyParts;
use rsa::{Oaep, Pkcs1v15Encrypt, Pss, RsaPublicKey};
use sha2::Digest;

fn rv_of<T: std::fmt::Debug>(r: cryptoki::error::Result<T>) -> RvError {
    match r {
        Err(Error::Pkcs11(rv, _)) => rv,
        other => panic!("expected a PKCS#11 error, got {other:?}"),
    }
}

#[derive(Clone, Copy, Debug)]
enum H {
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

const HASHES: [H; 5] = [H::Sha1, H::Sha224, H::Sha256, H::Sha384, H::Sha512];

impl H {
    fn mech(self) -> MechanismType {
        match self {
            H::Sha1 => MechanismType::SHA1,
            H::Sha224 => MechanismType::SHA224,
            H::Sha256 => MechanismType::SHA256,
            H::Sha384 => MechanismType::SHA384,
            H::Sha512 => MechanismType::SHA512,
        }
    }
    fn mgf(self) -> PkcsMgfType {
        match self {
            H::Sha1 => PkcsMgfType::MGF1_SHA1,
            H::Sha224 => PkcsMgfType::MGF1_SHA224,
            H::Sha256 => PkcsMgfType::MGF1_SHA256,
            H::Sha384 => PkcsMgfType::MGF1_SHA384,
            H::Sha512 => PkcsMgfType::MGF1_SHA512,
        }
    }
    fn digest(self, m: &[u8]) -> Vec<u8> {
        match self {
            H::Sha1 => sha1::Sha1::digest(m).to_vec(),
            H::Sha224 => sha2::Sha224::digest(m).to_vec(),
            H::Sha256 => sha2::Sha256::digest(m).to_vec(),
            H::Sha384 => sha2::Sha384::digest(m).to_vec(),
            H::Sha512 => sha2::Sha512::digest(m).to_vec(),
        }
    }
    fn len(self) -> usize {
        self.digest(b"").len()
    }
    fn pss_params(self, salt: usize) -> PkcsPssParams {
        PkcsPssParams {
            hash_alg: self.mech(),
            mgf: self.mgf(),
            s_len: (salt as u64).into(),
        }
    }
    /// The hashing PSS mechanism; `cryptoki` has no CKM_SHA224_RSA_PKCS_PSS,
    /// which `sha224_pss_every_size_through_the_raw_abi` covers instead.
    fn pss_mech(self, p: PkcsPssParams) -> Option<Mechanism<'static>> {
        match self {
            H::Sha1 => Some(Mechanism::Sha1RsaPkcsPss(p)),
            H::Sha224 => None,
            H::Sha256 => Some(Mechanism::Sha256RsaPkcsPss(p)),
            H::Sha384 => Some(Mechanism::Sha384RsaPkcsPss(p)),
            H::Sha512 => Some(Mechanism::Sha512RsaPkcsPss(p)),
        }
    }
    fn digest_mech(self) -> Mechanism<'static> {
        match self {
            H::Sha1 => Mechanism::Sha1,
            H::Sha224 => Mechanism::Sha224,
            H::Sha256 => Mechanism::Sha256,
            H::Sha384 => Mechanism::Sha384,
            H::Sha512 => Mechanism::Sha512,
        }
    }
    /// RustCrypto's PSS verifier for this hash with an explicit salt length.
    fn rc_verify_pss(
        self,
        key: &RsaPublicKey,
        m_hash: &[u8],
        sig: &[u8],
        salt: usize,
    ) -> rsa::Result<()> {
        match self {
            H::Sha1 => key.verify(Pss::new_with_salt::<sha1::Sha1>(salt), m_hash, sig),
            H::Sha224 => key.verify(Pss::new_with_salt::<sha2::Sha224>(salt), m_hash, sig),
            H::Sha256 => key.verify(Pss::new_with_salt::<sha2::Sha256>(salt), m_hash, sig),
            H::Sha384 => key.verify(Pss::new_with_salt::<sha2::Sha384>(salt), m_hash, sig),
            H::Sha512 => key.verify(Pss::new_with_salt::<sha2::Sha512>(salt), m_hash, sig),
        }
    }
    fn rc_oaep(self, label: &str) -> Oaep {
        let l = label.to_string();
        match self {
            H::Sha1 => Oaep::new_with_label::<sha1::Sha1, _>(l),
            H::Sha224 => Oaep::new_with_label::<sha2::Sha224, _>(l),
            H::Sha256 => Oaep::new_with_label::<sha2::Sha256, _>(l),
            H::Sha384 => Oaep::new_with_label::<sha2::Sha384, _>(l),
            H::Sha512 => Oaep::new_with_label::<sha2::Sha512, _>(l),
        }
    }
}

fn max_salt(bits: usize, h: H) -> usize {
    (bits - 1).div_ceil(8) - h.len() - 2
}

#[test]
#[ignore = "needs a kernel that holds PKCS#8 private keys: run lab/test"]
fn pss_every_hash_every_size_verifies_with_rustcrypto() {
    let msg = b"PSS over a kernel-held key".repeat(20);
    let mut rng = rsa::rand_core::OsRng;
    let _ = &mut rng;
    for bits in [2048, 3072, 4096] {
        let key = KernelKey::load(bits, "pss");
        let s = user_session();
        let private = key.find(&s, ObjectClass::PRIVATE_KEY);
        let public = key.find(&s, ObjectClass::PUBLIC_KEY);
        for h in HASHES {
            for salt in [0, h.len(), max_salt(bits, h)] {
                let p = h.pss_params(salt);
                if let Some(mech) = h.pss_mech(p) {
                    // Hashing mechanism, single- and multi-part.
                    let sig = s.sign(&mech, private, &msg).unwrap();
                    assert_eq!(sig.len(), bits / 8);
                    h.rc_verify_pss(&key.public, &h.digest(&msg), &sig, salt)
                        .unwrap_or_else(|e| panic!("{bits} {h:?} salt {salt}: {e}"));
                    s.verify(&mech, public, &msg, &sig).unwrap();
                    s.sign_init(&mech, private).unwrap();
                    s.sign_update(&msg[..100]).unwrap();
                    s.sign_update(&msg[100..]).unwrap();
                    let sig2 = s.sign_final().unwrap();
                    if salt == 0 {
                        // Without salt PSS is deterministic.
                        assert_eq!(sig, sig2);
                    } else {
                        assert_ne!(sig, sig2, "salted signatures differ");
                    }
                    h.rc_verify_pss(&key.public, &h.digest(&msg), &sig2, salt)
                        .unwrap();
                    s.verify_init(&mech, public).unwrap();
                    s.verify_update(&msg[..7]).unwrap();
                    s.verify_update(&msg[7..]).unwrap();
                    s.verify_final(&sig2).unwrap();
                }
                // CKM_RSA_PKCS_PSS: input is the hash.
                let m_hash = h.digest(&msg);
                let sig3 = s.sign(&Mechanism::RsaPkcsPss(p), private, &m_hash).unwrap();
                h.rc_verify_pss(&key.public, &m_hash, &sig3, salt).unwrap();
                s.verify(&Mechanism::RsaPkcsPss(p), public, &m_hash, &sig3)
                    .unwrap();
            }
        }
        // Wrong lengths and parameters, exact codes.
        let p = H::Sha256.pss_params(32);
        assert_eq!(
            rv_of(s.sign(&Mechanism::RsaPkcsPss(p), private, &[0u8; 31])),
            RvError::DataLenRange
        );
        let too_much_salt = H::Sha256.pss_params(max_salt(bits, H::Sha256) + 1);
        assert_eq!(
            rv_of(s.sign(&Mechanism::Sha256RsaPkcsPss(too_much_salt), private, b"x")),
            RvError::MechanismParamInvalid
        );
        let mismatched = H::Sha1.pss_params(20);
        assert_eq!(
            rv_of(s.sign(&Mechanism::Sha256RsaPkcsPss(mismatched), private, b"x")),
            RvError::MechanismParamInvalid
        );
        let sig = s
            .sign(&Mechanism::Sha256RsaPkcsPss(p), private, b"x")
            .unwrap();
        assert_eq!(
            rv_of(s.verify(&Mechanism::Sha256RsaPkcsPss(p), public, b"y", &sig)),
            RvError::SignatureInvalid
        );
        assert_eq!(
            rv_of(s.verify(&Mechanism::Sha256RsaPkcsPss(p), public, b"x", &sig[1..])),
            RvError::SignatureLenRange
        );
        assert_eq!(
            rv_of(s.verify(
                &Mechanism::Sha256RsaPkcsPss(H::Sha256.pss_params(31)),
                public,
                b"x",
                &sig
            )),
            RvError::SignatureInvalid
        );
        // A private key cannot verify, a public key cannot sign.
        assert_eq!(
            rv_of(s.sign(&Mechanism::Sha256RsaPkcsPss(p), public, b"x")),
            RvError::KeyFunctionNotPermitted
        );
    }
}

#[test]
#[ignore = "needs a kernel that holds PKCS#8 private keys: run lab/test"]
fn pkcs1_and_raw_signatures_verify_and_recover() {
    for bits in [2048, 3072, 4096] {
        let key = KernelKey::load(bits, "pkcs1v");
        let s = user_session();
        let private = key.find(&s, ObjectClass::PRIVATE_KEY);
        let public = key.find(&s, ObjectClass::PUBLIC_KEY);
        let k = bits / 8;
        for (mech, h) in [
            (Mechanism::Sha1RsaPkcs, H::Sha1),
            (Mechanism::Sha224RsaPkcs, H::Sha224),
            (Mechanism::Sha256RsaPkcs, H::Sha256),
            (Mechanism::Sha384RsaPkcs, H::Sha384),
            (Mechanism::Sha512RsaPkcs, H::Sha512),
        ] {
            let sig = s.sign(&mech, private, b"verify me").unwrap();
            s.verify(&mech, public, b"verify me", &sig).unwrap();
            assert_eq!(
                rv_of(s.verify(&mech, public, b"verify you", &sig)),
                RvError::SignatureInvalid,
                "{h:?}"
            );
        }
        // CKM_RSA_PKCS: verify and recover the signed bytes.
        let sig = s.sign(&Mechanism::RsaPkcs, private, b"recover me").unwrap();
        s.verify(&Mechanism::RsaPkcs, public, b"recover me", &sig)
            .unwrap();
        assert_eq!(
            verify_recover(&s, CKM_RSA_PKCS, public, &sig),
            b"recover me"
        );
        // CKM_RSA_X_509: the raw operation both ways.
        let mut block = vec![0u8; k];
        block[1..].fill(0x42);
        let raw = s.sign(&Mechanism::RsaX509, private, &block).unwrap();
        let check = rsa::BigUint::from_bytes_be(&raw).modpow(key.public.e(), key.public.n());
        assert_eq!(
            check,
            rsa::BigUint::from_bytes_be(&block),
            "{bits}: raw signature is m^d"
        );
        s.verify(&Mechanism::RsaX509, public, &block, &raw).unwrap();
        assert_eq!(verify_recover(&s, CKM_RSA_X_509, public, &raw), block);
        // Shorter input is left-padded with zeros, as a number.
        let short = s.sign(&Mechanism::RsaX509, private, b"short").unwrap();
        let check = rsa::BigUint::from_bytes_be(&short).modpow(key.public.e(), key.public.n());
        assert_eq!(check, rsa::BigUint::from_bytes_be(b"short"));
        // Input that is not below n, or longer than k.
        assert_eq!(
            rv_of(s.sign(&Mechanism::RsaX509, private, &vec![0xff; k])),
            RvError::DataInvalid
        );
        assert_eq!(
            rv_of(s.sign(&Mechanism::RsaX509, private, &vec![1; k + 1])),
            RvError::DataLenRange
        );
    }
}

#[test]
#[ignore = "needs a kernel that holds PKCS#8 private keys: run lab/test"]
fn decryption_pkcs1_oaep_raw_against_rustcrypto() {
    let mut rng = rsa::rand_core::OsRng;
    for bits in [2048, 3072, 4096] {
        let key = KernelKey::load(bits, "decrypt");
        let s = user_session();
        let private = key.find(&s, ObjectClass::PRIVATE_KEY);
        let public = key.find(&s, ObjectClass::PUBLIC_KEY);
        let k = bits / 8;
        // PKCS#1 v1.5, both directions.
        let ct = key
            .public
            .encrypt(&mut rng, Pkcs1v15Encrypt, b"pkcs1 secret")
            .unwrap();
        assert_eq!(
            s.decrypt(&Mechanism::RsaPkcs, private, &ct).unwrap(),
            b"pkcs1 secret"
        );
        let ct = s
            .encrypt(&Mechanism::RsaPkcs, public, b"from the token")
            .unwrap();
        assert_eq!(ct.len(), k);
        assert_eq!(
            rsa::RsaPrivateKey::from_pkcs8_der_for_test(&key_der(bits))
                .decrypt(Pkcs1v15Encrypt, &ct)
                .unwrap(),
            b"from the token",
            "{bits}: RustCrypto decrypts C_Encrypt's CKM_RSA_PKCS"
        );
        assert_eq!(
            s.decrypt(&Mechanism::RsaPkcs, private, &ct).unwrap(),
            b"from the token"
        );
        // OAEP with every hash, with and without a label, both directions.
        for h in HASHES {
            for label in ["", "a label"] {
                let params = PkcsOaepParams::new(
                    h.mech(),
                    h.mgf(),
                    if label.is_empty() {
                        PkcsOaepSource::empty()
                    } else {
                        PkcsOaepSource::data_specified(label.as_bytes())
                    },
                );
                let ct = key
                    .public
                    .encrypt(&mut rng, h.rc_oaep(label), b"oaep secret")
                    .unwrap();
                assert_eq!(
                    s.decrypt(&Mechanism::RsaPkcsOaep(params), private, &ct)
                        .unwrap(),
                    b"oaep secret",
                    "{bits} {h:?} {label:?}"
                );
                let mine = s
                    .encrypt(&Mechanism::RsaPkcsOaep(params), public, b"oaep from token")
                    .unwrap();
                let clear = rsa::RsaPrivateKey::from_pkcs8_der_for_test(&key_der(bits))
                    .decrypt(h.rc_oaep(label), &mine)
                    .unwrap();
                assert_eq!(clear, b"oaep from token");
                // The wrong label is just another bad ciphertext.
                let wrong = PkcsOaepParams::new(
                    h.mech(),
                    h.mgf(),
                    PkcsOaepSource::data_specified(b"other"),
                );
                assert_eq!(
                    rv_of(s.decrypt(&Mechanism::RsaPkcsOaep(wrong), private, &ct)),
                    RvError::EncryptedDataInvalid
                );
            }
        }
        // Raw: c^d, all k bytes, leading zeros kept.
        let m = rsa::BigUint::from_bytes_be(b"raw message");
        let c = m.modpow(key.public.e(), key.public.n()).to_bytes_be();
        let c = [vec![0u8; k - c.len()], c].concat();
        let out = s.decrypt(&Mechanism::RsaX509, private, &c).unwrap();
        assert_eq!(out.len(), k);
        assert_eq!(rsa::BigUint::from_bytes_be(&out), m);
        // C_Encrypt with CKM_RSA_X_509: m^e mod n, k bytes (a short input is
        // a number, left-padded); a full-length block too.
        let ct = s
            .encrypt(&Mechanism::RsaX509, public, b"raw message")
            .unwrap();
        assert_eq!(ct, c, "{bits}: C_Encrypt CKM_RSA_X_509 of a short input");
        let mut block = vec![0u8; k];
        block[1..].fill(0x6b);
        let ct = s.encrypt(&Mechanism::RsaX509, public, &block).unwrap();
        assert_eq!(ct.len(), k);
        assert_eq!(
            rsa::BigUint::from_bytes_be(&ct),
            rsa::BigUint::from_bytes_be(&block).modpow(key.public.e(), key.public.n()),
            "{bits}: C_Encrypt CKM_RSA_X_509 is m^e mod n"
        );
        assert_eq!(s.decrypt(&Mechanism::RsaX509, private, &ct).unwrap(), block);
        assert_eq!(
            rv_of(s.encrypt(&Mechanism::RsaX509, public, &vec![0xff; k])),
            RvError::DataInvalid,
            "an input not below n"
        );
        assert_eq!(
            rv_of(s.encrypt(&Mechanism::RsaX509, public, &vec![1; k + 1])),
            RvError::DataLenRange
        );
        // Bad ciphertexts. PKCS#1 v1.5 padding is rejected implicitly, with
        // a synthetic message (tests/implicit_rejection.rs); OAEP has one
        // error code, whatever is wrong; not below n is refused.
        let garbage = vec![0x11u8; k];
        let synthetic = s.decrypt(&Mechanism::RsaPkcs, private, &garbage).unwrap();
        assert!(synthetic.len() <= k - 11);
        let p = PkcsOaepParams::new(
            MechanismType::SHA256,
            PkcsMgfType::MGF1_SHA256,
            PkcsOaepSource::empty(),
        );
        assert_eq!(
            rv_of(s.decrypt(&Mechanism::RsaPkcsOaep(p), private, &garbage)),
            RvError::EncryptedDataInvalid
        );
        assert_eq!(
            rv_of(s.decrypt(&Mechanism::RsaPkcs, private, &vec![0xff; k])),
            RvError::EncryptedDataInvalid
        );
        assert_eq!(
            rv_of(s.decrypt(&Mechanism::RsaPkcs, private, &garbage[1..])),
            RvError::EncryptedDataLenRange
        );
        assert_eq!(
            rv_of(s.encrypt(&Mechanism::RsaPkcs, public, &vec![1; k - 10])),
            RvError::DataLenRange
        );
        let bad_source = PkcsOaepParams::new(
            MechanismType::SHA256,
            PkcsMgfType::MGF1_SHA1,
            PkcsOaepSource::data_specified(b""),
        );
        let ct = key
            .public
            .encrypt(&mut rng, Oaep::new::<sha2::Sha256>(), b"x")
            .unwrap();
        assert_eq!(
            rv_of(s.decrypt(&Mechanism::RsaPkcsOaep(bad_source), private, &ct)),
            RvError::EncryptedDataInvalid,
            "MGF1-SHA1 vs SHA-256 is a mismatch, not a crash"
        );
        let bad_hash = PkcsOaepParams::new(
            MechanismType::RSA_PKCS,
            PkcsMgfType::MGF1_SHA1,
            PkcsOaepSource::empty(),
        );
        assert_eq!(
            rv_of(s.decrypt(&Mechanism::RsaPkcsOaep(bad_hash), private, &ct)),
            RvError::MechanismParamInvalid
        );
    }
}

#[test]
#[ignore = "needs a kernel that holds PKCS#8 private keys: run lab/test"]
fn digests_random_and_mechanism_info() {
    let _key = KernelKey::load(2048, "digest");
    let s = user_session();
    let data = b"digest me".repeat(1000);
    for h in HASHES {
        assert_eq!(
            s.digest(&h.digest_mech(), &data).unwrap(),
            h.digest(&data),
            "{h:?}"
        );
    }
    let r1 = s.generate_random_vec(64).unwrap();
    let r2 = s.generate_random_vec(64).unwrap();
    assert_ne!(r1, r2);
    let c = ctx();
    let slot = slot_labelled("user");
    let list = c.get_mechanism_list(slot).unwrap();
    for (m, sign, decrypt) in [
        (MechanismType::RSA_PKCS, true, true),
        (MechanismType::RSA_PKCS_PSS, true, false),
        (MechanismType::SHA256_RSA_PKCS_PSS, true, false),
        (MechanismType::RSA_X_509, true, true),
        (MechanismType::RSA_PKCS_OAEP, false, true),
    ] {
        assert!(list.contains(&m), "{m} not listed");
        let info = c.get_mechanism_info(slot, m).unwrap();
        assert_eq!(info.sign(), sign, "{m} sign flag");
        assert_eq!(info.verify(), sign, "{m} verify flag");
        assert_eq!(info.decrypt(), decrypt, "{m} decrypt flag");
        assert_eq!(info.encrypt(), decrypt, "{m} encrypt flag");
        assert_eq!(info.max_key_size(), 4096);
    }
    assert!(
        c.get_mechanism_info(slot, MechanismType::SHA256)
            .unwrap()
            .digest()
    );
}

/// `cryptoki` has no C_VerifyRecover; the raw function list does.
fn verify_recover(
    s: &cryptoki::session::Session,
    mech: CK_MECHANISM_TYPE,
    key: cryptoki::object::ObjectHandle,
    sig: &[u8],
) -> Vec<u8> {
    let f = raw();
    let mut m = CK_MECHANISM {
        mechanism: mech,
        pParameter: std::ptr::null_mut(),
        ulParameterLen: 0,
    };
    let mut sig = sig.to_vec();
    unsafe {
        assert_eq!(
            f.C_VerifyRecoverInit.unwrap()(s.handle(), &mut m, key.handle()),
            CKR_OK
        );
        let mut len: CK_ULONG = 0;
        assert_eq!(
            f.C_VerifyRecover.unwrap()(
                s.handle(),
                sig.as_mut_ptr(),
                sig.len() as CK_ULONG,
                std::ptr::null_mut(),
                &mut len
            ),
            CKR_OK
        );
        assert_eq!(len as usize, sig.len(), "size query answers k");
        let mut out = vec![0u8; len as usize];
        assert_eq!(
            f.C_VerifyRecover.unwrap()(
                s.handle(),
                sig.as_mut_ptr(),
                sig.len() as CK_ULONG,
                out.as_mut_ptr(),
                &mut len
            ),
            CKR_OK
        );
        out.truncate(len as usize);
        out
    }
}

/// C_Sign/C_Verify through the raw function list, single- or multi-part.
fn raw_sign_verify(
    s: &cryptoki::session::Session,
    m: &mut CK_MECHANISM,
    key: cryptoki::object::ObjectHandle,
    verify_with: Option<&[u8]>,
    data: &[u8],
    multipart: bool,
) -> (CK_RV, Vec<u8>) {
    let f = raw();
    let h = s.handle();
    let mut data = data.to_vec();
    let dl = data.len() as CK_ULONG;
    unsafe {
        let Some(sig) = verify_with else {
            let rv = f.C_SignInit.unwrap()(h, m, key.handle());
            if rv != CKR_OK {
                return (rv, Vec::new());
            }
            let mut out = vec![0u8; 512];
            let mut len = out.len() as CK_ULONG;
            let rv = if multipart {
                let (a, b) = data.split_at_mut(5);
                assert_eq!(f.C_SignUpdate.unwrap()(h, a.as_mut_ptr(), 5), CKR_OK);
                let bl = b.len() as CK_ULONG;
                assert_eq!(f.C_SignUpdate.unwrap()(h, b.as_mut_ptr(), bl), CKR_OK);
                f.C_SignFinal.unwrap()(h, out.as_mut_ptr(), &mut len)
            } else {
                f.C_Sign.unwrap()(h, data.as_mut_ptr(), dl, out.as_mut_ptr(), &mut len)
            };
            out.truncate(len as usize);
            return (rv, out);
        };
        let rv = f.C_VerifyInit.unwrap()(h, m, key.handle());
        if rv != CKR_OK {
            return (rv, Vec::new());
        }
        let mut sig = sig.to_vec();
        let sl = sig.len() as CK_ULONG;
        let rv = if multipart {
            assert_eq!(f.C_VerifyUpdate.unwrap()(h, data.as_mut_ptr(), dl), CKR_OK);
            f.C_VerifyFinal.unwrap()(h, sig.as_mut_ptr(), sl)
        } else {
            f.C_Verify.unwrap()(h, data.as_mut_ptr(), dl, sig.as_mut_ptr(), sl)
        };
        (rv, Vec::new())
    }
}

/// `cryptoki` has no CKM_SHA224_RSA_PKCS_PSS: the same checks as
/// `pss_every_hash_every_size_verifies_with_rustcrypto` gives the other
/// hashing PSS mechanisms, through the raw function list.
#[test]
#[ignore = "needs a kernel that holds PKCS#8 private keys: run lab/test"]
fn sha224_pss_every_size_through_the_raw_abi() {
    let data = b"sha-224 pss".repeat(20);
    for bits in [2048, 3072, 4096] {
        let key = KernelKey::load(bits, "pss224");
        let s = user_session();
        let private = key.find(&s, ObjectClass::PRIVATE_KEY);
        let public = key.find(&s, ObjectClass::PUBLIC_KEY);
        for salt in [0usize, 28, max_salt(bits, H::Sha224)] {
            let mut params = CK_RSA_PKCS_PSS_PARAMS {
                hashAlg: CKM_SHA224,
                mgf: CKG_MGF1_SHA224,
                sLen: salt as CK_ULONG,
            };
            let mut m = CK_MECHANISM {
                mechanism: CKM_SHA224_RSA_PKCS_PSS,
                pParameter: &mut params as *mut _ as *mut std::ffi::c_void,
                ulParameterLen: std::mem::size_of::<CK_RSA_PKCS_PSS_PARAMS>() as CK_ULONG,
            };
            let digest = H::Sha224.digest(&data);
            let mut sigs = Vec::new();
            for multipart in [false, true] {
                let (rv, sig) = raw_sign_verify(&s, &mut m, private, None, &data, multipart);
                assert_eq!(
                    rv, CKR_OK,
                    "{bits} salt {salt} multi-part {multipart}: sign"
                );
                assert_eq!(sig.len(), bits / 8);
                H::Sha224
                    .rc_verify_pss(&key.public, &digest, &sig, salt)
                    .unwrap_or_else(|e| panic!("{bits} salt {salt} multi-part {multipart}: {e}"));
                for verify_multipart in [false, true] {
                    let (rv, _) =
                        raw_sign_verify(&s, &mut m, public, Some(&sig), &data, verify_multipart);
                    assert_eq!(rv, CKR_OK, "{bits} salt {salt}: C_Verify");
                }
                let (rv, _) = raw_sign_verify(&s, &mut m, public, Some(&sig), b"other", false);
                assert_eq!(
                    rv, CKR_SIGNATURE_INVALID,
                    "{bits} salt {salt}: wrong message"
                );
                sigs.push(sig);
            }
            // Without salt PSS is deterministic.
            assert_eq!(sigs[0] == sigs[1], salt == 0, "{bits} salt {salt}");
            // A parameter block of the wrong size is refused, not misread.
            m.ulParameterLen -= 1;
            let (rv, _) = raw_sign_verify(&s, &mut m, private, None, &data, false);
            assert_eq!(rv, CKR_MECHANISM_PARAM_INVALID);
        }
    }
}

/// pkcs11-provider sends `hashAlg = 0, mgf = 0` for an OAEP digest OpenSSL
/// left unset, and `mgf = 0` for an unset MGF1 digest: both directions take
/// OpenSSL's defaults, SHA-1 and MGF1 over the OAEP hash (src/mechanism.rs).
/// `cryptoki` cannot express a zero MGF, hence the raw ABI.
#[test]
#[ignore = "needs a kernel that holds PKCS#8 private keys: run lab/test"]
fn oaep_unset_hash_and_mgf_mean_openssl_defaults() {
    let key = KernelKey::load(2048, "oaep-unset");
    let s = user_session();
    let private = key.find(&s, ObjectClass::PRIVATE_KEY);
    let public = key.find(&s, ObjectClass::PUBLIC_KEY);
    let clear = rsa::RsaPrivateKey::from_pkcs8_der_for_test(&key_der(2048));
    let mut rng = rsa::rand_core::OsRng;
    let f = raw();
    let msg = b"oaep, digest not given";
    // (hashAlg, mgf) as the provider sends them, and the padding they mean.
    type Case = (CK_ULONG, CK_ULONG, fn() -> Oaep);
    let cases: [Case; 3] = [
        (0, 0, Oaep::new::<sha1::Sha1>),
        (CKM_SHA256, 0, Oaep::new::<sha2::Sha256>),
        (
            0,
            CKG_MGF1_SHA256,
            Oaep::new_with_mgf_hash::<sha1::Sha1, sha2::Sha256>,
        ),
    ];
    for (hash_alg, mgf, padding) in cases {
        let mut params = CK_RSA_PKCS_OAEP_PARAMS {
            hashAlg: hash_alg,
            mgf,
            source: CKZ_DATA_SPECIFIED,
            pSourceData: std::ptr::null_mut(),
            ulSourceDataLen: 0,
        };
        let mut m = CK_MECHANISM {
            mechanism: CKM_RSA_PKCS_OAEP,
            pParameter: &mut params as *mut _ as *mut std::ffi::c_void,
            ulParameterLen: std::mem::size_of::<CK_RSA_PKCS_OAEP_PARAMS>() as CK_ULONG,
        };
        let what = format!("hashAlg {hash_alg:#x}, mgf {mgf:#x}");
        let mut ct = key.public.encrypt(&mut rng, padding(), msg).unwrap();
        let mut out = vec![0u8; 256];
        let mut len: CK_ULONG = 256;
        unsafe {
            assert_eq!(
                f.C_DecryptInit.unwrap()(s.handle(), &mut m, private.handle()),
                CKR_OK,
                "{what}"
            );
            assert_eq!(
                f.C_Decrypt.unwrap()(
                    s.handle(),
                    ct.as_mut_ptr(),
                    ct.len() as CK_ULONG,
                    out.as_mut_ptr(),
                    &mut len
                ),
                CKR_OK,
                "{what}"
            );
        }
        assert_eq!(&out[..len as usize], msg, "{what}");
        let mut input = msg.to_vec();
        len = 256;
        unsafe {
            assert_eq!(
                f.C_EncryptInit.unwrap()(s.handle(), &mut m, public.handle()),
                CKR_OK,
                "{what}"
            );
            assert_eq!(
                f.C_Encrypt.unwrap()(
                    s.handle(),
                    input.as_mut_ptr(),
                    input.len() as CK_ULONG,
                    out.as_mut_ptr(),
                    &mut len
                ),
                CKR_OK,
                "{what}"
            );
        }
        assert_eq!(
            clear.decrypt(padding(), &out[..len as usize]).unwrap(),
            msg,
            "{what}"
        );
    }
    // Only zero is "unset": a hash we do not offer is still refused.
    let mut params = CK_RSA_PKCS_OAEP_PARAMS {
        hashAlg: CKM_MD5,
        mgf: 0,
        source: CKZ_DATA_SPECIFIED,
        pSourceData: std::ptr::null_mut(),
        ulSourceDataLen: 0,
    };
    let mut m = CK_MECHANISM {
        mechanism: CKM_RSA_PKCS_OAEP,
        pParameter: &mut params as *mut _ as *mut std::ffi::c_void,
        ulParameterLen: std::mem::size_of::<CK_RSA_PKCS_OAEP_PARAMS>() as CK_ULONG,
    };
    assert_eq!(
        unsafe { f.C_DecryptInit.unwrap()(s.handle(), &mut m, private.handle()) },
        CKR_MECHANISM_PARAM_INVALID
    );
}

/// Loading the private half of a test key, for checking our encryptions.
trait ForTest {
    fn from_pkcs8_der_for_test(der: &[u8]) -> rsa::RsaPrivateKey;
}
impl ForTest for rsa::RsaPrivateKey {
    fn from_pkcs8_der_for_test(der: &[u8]) -> rsa::RsaPrivateKey {
        use rsa::pkcs8::DecodePrivateKey;
        rsa::RsaPrivateKey::from_pkcs8_der(der).unwrap()
    }
}

/// In place, on the real kernel: C_Encrypt, C_Decrypt (the kernel's raw
/// private operation) and C_VerifyRecover with the same buffer as input and
/// output, as C callers do. Before the fix the module held a `&[u8]` and a
/// `&mut [u8]` over those bytes: undefined behaviour that gave the right
/// bytes by luck, so results alone cannot show it. A debug build (this one)
/// asserts that no output aliases an input (`ffi::borrowed`); without the
/// copy, that check made the same calls over the in-memory store answer
/// CKR_GENERAL_ERROR (src/ffi/abi_tests.rs). Here they go through the real
/// kernel.
#[test]
#[ignore = "needs a kernel that holds PKCS#8 private keys: run lab/test"]
fn encrypt_decrypt_and_recover_in_place_through_the_raw_abi() {
    let key = KernelKey::load(2048, "inplace");
    let s = user_session();
    let private = key.find(&s, ObjectClass::PRIVATE_KEY).handle();
    let public = key.find(&s, ObjectClass::PUBLIC_KEY).handle();
    let f = raw();
    let h = s.handle();
    let mech = |t| CK_MECHANISM {
        mechanism: t,
        pParameter: std::ptr::null_mut(),
        ulParameterLen: 0,
    };
    let mut buf = vec![0u8; 256];
    buf[..9].copy_from_slice(b"in place!");
    let mut len: CK_ULONG = 256;
    let p = buf.as_mut_ptr();
    unsafe {
        assert_eq!(
            f.C_EncryptInit.unwrap()(h, &mut mech(CKM_RSA_PKCS), public),
            CKR_OK
        );
        assert_eq!(f.C_Encrypt.unwrap()(h, p, 9, p, &mut len), CKR_OK);
        assert_eq!(len, 256);
        let clear = rsa::RsaPrivateKey::from_pkcs8_der_for_test(&key_der(2048))
            .decrypt(Pkcs1v15Encrypt, &buf)
            .unwrap();
        assert_eq!(clear, b"in place!");
        assert_eq!(
            f.C_DecryptInit.unwrap()(h, &mut mech(CKM_RSA_PKCS), private),
            CKR_OK
        );
        assert_eq!(f.C_Decrypt.unwrap()(h, p, 256, p, &mut len), CKR_OK);
        assert_eq!(&buf[..len as usize], b"in place!");
    }
    let mut sig = rsa::RsaPrivateKey::from_pkcs8_der_for_test(&key_der(2048))
        .sign(rsa::Pkcs1v15Sign::new_unprefixed(), b"recovered in place")
        .unwrap();
    let mut len: CK_ULONG = 256;
    let p = sig.as_mut_ptr();
    unsafe {
        assert_eq!(
            f.C_VerifyRecoverInit.unwrap()(h, &mut mech(CKM_RSA_PKCS), public),
            CKR_OK
        );
        assert_eq!(f.C_VerifyRecover.unwrap()(h, p, 256, p, &mut len), CKR_OK);
    }
    assert_eq!(&sig[..len as usize], b"recovered in place");
}
