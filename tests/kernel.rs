//! The module on a real kernel, driven as a client would drive it. Needs a
//! kernel that can hold PKCS#8 private keys: `lab/test` runs these inside QEMU
//! on Debian's 6.1 and 6.12 kernels (`cargo test -- --ignored` there).

mod common;

use common::*;
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, ObjectClass};
use cryptoki_sys::*;
use keyring_pkcs11::Hash;
use keyring_pkcs11::kernel::keyctl;
use keyring_pkcs11::kernel::store::{KernelStore, KeyStore};
use rsa::Pkcs1v15Sign;
use rsa::traits::PublicKeyParts;
use sha2::Digest;
use std::ptr::null_mut;

const KERNEL: &str = "needs a kernel that holds PKCS#8 private keys: run lab/test";

fn rv_of<T: std::fmt::Debug>(r: cryptoki::error::Result<T>) -> RvError {
    match r {
        Err(Error::Pkcs11(rv, _)) => rv,
        other => panic!("expected a PKCS#11 error, got {other:?}"),
    }
}

/// SHA-256 DigestInfo prefix (RFC 8017 §9.2 note 1), for CKM_RSA_PKCS input.
const SHA256_PREFIX: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

fn verify(public: &rsa::RsaPublicKey, mech: &Mechanism, msg: &[u8], sig: &[u8]) {
    let r = match mech {
        Mechanism::RsaPkcs => public.verify(Pkcs1v15Sign::new_unprefixed(), msg, sig),
        Mechanism::Sha1RsaPkcs => public.verify(
            Pkcs1v15Sign::new::<sha1::Sha1>(),
            &sha1::Sha1::digest(msg),
            sig,
        ),
        Mechanism::Sha224RsaPkcs => public.verify(
            Pkcs1v15Sign::new::<sha2::Sha224>(),
            &sha2::Sha224::digest(msg),
            sig,
        ),
        Mechanism::Sha256RsaPkcs => public.verify(
            Pkcs1v15Sign::new::<sha2::Sha256>(),
            &sha2::Sha256::digest(msg),
            sig,
        ),
        Mechanism::Sha384RsaPkcs => public.verify(
            Pkcs1v15Sign::new::<sha2::Sha384>(),
            &sha2::Sha384::digest(msg),
            sig,
        ),
        Mechanism::Sha512RsaPkcs => public.verify(
            Pkcs1v15Sign::new::<sha2::Sha512>(),
            &sha2::Sha512::digest(msg),
            sig,
        ),
        other => panic!("no verifier for {other:?}"),
    };
    r.unwrap_or_else(|e| panic!("{mech:?}: signature does not verify: {e}"));
}

#[test]
#[ignore = "needs a kernel that holds PKCS#8 private keys: run lab/test"]
fn every_mechanism_at_every_key_size_verifies() {
    let _ = KERNEL;
    let msg = b"the quick brown fox jumps over the lazy dog".repeat(50);
    let mut digest_info = SHA256_PREFIX.to_vec();
    digest_info.extend_from_slice(&sha2::Sha256::digest(&msg));
    for bits in [2048, 3072, 4096] {
        let key = KernelKey::load(bits, "mech");
        let s = user_session();
        let private = key.find(&s, ObjectClass::PRIVATE_KEY);
        let public = key.find(&s, ObjectClass::PUBLIC_KEY);
        // The public key recovered from the kernel is the key's own.
        for o in [private, public] {
            assert_eq!(
                attr_bytes(&s, o, AttributeType::Modulus),
                key.public.n().to_bytes_be(),
                "{bits}-bit modulus"
            );
            assert_eq!(
                attr_bytes(&s, o, AttributeType::PublicExponent),
                key.public.e().to_bytes_be()
            );
        }
        assert_eq!(
            attr_bytes(&s, private, AttributeType::Id),
            attr_bytes(&s, public, AttributeType::Id)
        );
        let mechs = [
            Mechanism::Sha1RsaPkcs,
            Mechanism::Sha224RsaPkcs,
            Mechanism::Sha256RsaPkcs,
            Mechanism::Sha384RsaPkcs,
            Mechanism::Sha512RsaPkcs,
        ];
        for mech in &mechs {
            let sig = s.sign(mech, private, &msg).unwrap();
            assert_eq!(sig.len(), bits / 8);
            verify(&key.public, mech, &msg, &sig);
            // Multi-part gives the same (deterministic) signature.
            s.sign_init(mech, private).unwrap();
            for chunk in msg.chunks(333) {
                s.sign_update(chunk).unwrap();
            }
            assert_eq!(s.sign_final().unwrap(), sig, "{mech:?} multi-part");
        }
        let sig = s.sign(&Mechanism::RsaPkcs, private, &digest_info).unwrap();
        verify(&key.public, &Mechanism::RsaPkcs, &digest_info, &sig);
        // Any input up to k-11 bytes is signed as it is.
        let long = vec![0x5a; bits / 8 - 11];
        let sig = s.sign(&Mechanism::RsaPkcs, private, &long).unwrap();
        verify(&key.public, &Mechanism::RsaPkcs, &long, &sig);
        let too_long = vec![0x5a; bits / 8 - 10];
        assert_eq!(
            rv_of(s.sign(&Mechanism::RsaPkcs, private, &too_long)),
            RvError::DataLenRange
        );
    }
}

#[test]
#[ignore = "needs a kernel that holds PKCS#8 private keys: run lab/test"]
fn tokens_mechanisms_and_attributes_tell_the_truth() {
    let key = KernelKey::load(2048, "info");
    let c = ctx();
    let info = c.get_library_info().unwrap();
    // cryptoki takes the 3.0 interface; its C_GetInfo says so.
    assert_eq!(
        (
            info.cryptoki_version().major(),
            info.cryptoki_version().minor()
        ),
        (3, 0)
    );
    let labels: Vec<String> = c
        .get_slots_with_token()
        .unwrap()
        .iter()
        .map(|s| c.get_token_info(*s).unwrap().label().to_string())
        .collect();
    for want in ["session", "user", "persistent"] {
        assert!(
            labels.iter().any(|l| l == want),
            "token {want} missing from {labels:?}"
        );
    }
    let slot = slot_labelled("user");
    let t = c.get_token_info(slot).unwrap();
    assert!(t.token_initialized());
    assert!(!t.login_required());
    assert_eq!(t.model(), "user keyring");
    assert_eq!(t.manufacturer_id(), "Linux kernel keyrings");
    assert_eq!(t.serial_number(), format!("u{}", keyctl::uid()));
    let mechs = c.get_mechanism_list(slot).unwrap();
    for m in [
        MechanismType::RSA_PKCS,
        MechanismType::SHA1_RSA_PKCS,
        MechanismType::SHA256_RSA_PKCS,
        MechanismType::SHA512_RSA_PKCS,
    ] {
        assert!(mechs.contains(&m), "{m} missing");
        let mi = c.get_mechanism_info(slot, m).unwrap();
        assert!(mi.sign());
        assert!(mi.min_key_size() <= 2048 && mi.max_key_size() == 4096);
    }
    assert!(rv_of(c.get_mechanism_info(slot, MechanismType::ECDSA)) == RvError::MechanismInvalid);

    let s = user_session();
    let private = key.find(&s, ObjectClass::PRIVATE_KEY);
    let secret = [
        AttributeType::PrivateExponent,
        AttributeType::Prime1,
        AttributeType::Prime2,
        AttributeType::Exponent1,
        AttributeType::Exponent2,
        AttributeType::Coefficient,
    ];
    let info = s.get_attribute_info(private, &secret).unwrap();
    assert!(
        info.iter().all(|i| matches!(i, AttributeInfo::Sensitive)),
        "{info:?}"
    );
    let public = key.find(&s, ObjectClass::PUBLIC_KEY);
    let info = s
        .get_attribute_info(
            public,
            &[AttributeType::PrivateExponent, AttributeType::ModulusBits],
        )
        .unwrap();
    assert!(
        matches!(
            info[..],
            [AttributeInfo::TypeInvalid, AttributeInfo::Available(8)]
        ),
        "{info:?}"
    );
    let got = s
        .get_attributes(
            private,
            &[
                AttributeType::Sign,
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::Private,
                AttributeType::Token,
            ],
        )
        .unwrap();
    assert_eq!(
        got,
        vec![
            Attribute::Sign(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Private(false),
            Attribute::Token(true)
        ]
    );
    assert_eq!(
        attr_bytes(&s, private, AttributeType::Label),
        key.label.as_bytes()
    );
}

/// Raw entry points: what a careless or hostile C caller can do.
mod raw_abi {
    use super::*;
    use keyring_pkcs11_testkit::{Mechanism as RawMechanism, Rv};

    fn find_private(h: CK_SESSION_HANDLE, label: &str) -> CK_OBJECT_HANDLE {
        let found = client().find_labelled(h, CKO_PRIVATE_KEY, label).unwrap();
        assert_eq!(found.len(), 1, "private keys labelled {label}");
        found[0]
    }

    fn sign_init(h: CK_SESSION_HANDLE, mech: CK_MECHANISM_TYPE, key: CK_OBJECT_HANDLE) -> CK_RV {
        client().sign_init(h, &RawMechanism::new(mech), key).rv()
    }

    /// `C_SignInit` (SHA256_RSA_PKCS) and `C_Sign` of "edge": the first
    /// return value that is not CKR_OK, or CKR_OK.
    fn sign_edge(h: CK_SESSION_HANDLE, o: CK_OBJECT_HANDLE) -> CK_RV {
        let rv = sign_init(h, CKM_SHA256_RSA_PKCS, o);
        if rv != CKR_OK {
            return rv;
        }
        let mut data = *b"edge";
        let mut sig = [0u8; 256];
        let mut len = sig.len() as CK_ULONG;
        unsafe { raw().C_Sign.unwrap()(h, data.as_mut_ptr(), 4, sig.as_mut_ptr(), &mut len) }
    }

    #[test]
    #[ignore = "needs a kernel that holds PKCS#8 private keys: run lab/test"]
    fn two_call_convention() {
        let key = KernelKey::load(3072, "twocall");
        let f = raw();
        let h = raw_rw_session("user");
        let o = find_private(h, &key.label);
        assert_eq!(sign_init(h, CKM_SHA256_RSA_PKCS, o), CKR_OK);
        let mut data = *b"two-call";
        let mut len: CK_ULONG = 0;
        unsafe {
            // Size query: length, no signature, operation still active.
            assert_eq!(
                f.C_Sign.unwrap()(h, data.as_mut_ptr(), 8, null_mut(), &mut len),
                CKR_OK
            );
            assert_eq!(len, 384);
            // Too small: BUFFER_TOO_SMALL, the needed length, nothing written.
            let mut small = [0xEEu8; 100];
            len = 100;
            assert_eq!(
                f.C_Sign.unwrap()(h, data.as_mut_ptr(), 8, small.as_mut_ptr(), &mut len),
                CKR_BUFFER_TOO_SMALL
            );
            assert_eq!(len, 384);
            assert!(
                small.iter().all(|b| *b == 0xEE),
                "nothing may be written to a too-small buffer"
            );
            // Large enough: exactly k bytes.
            let mut sig = [0u8; 600];
            len = 600;
            assert_eq!(
                f.C_Sign.unwrap()(h, data.as_mut_ptr(), 8, sig.as_mut_ptr(), &mut len),
                CKR_OK
            );
            assert_eq!(len, 384);
            verify(&key.public, &Mechanism::Sha256RsaPkcs, &data, &sig[..384]);
            // The signature ended the operation.
            assert_eq!(
                f.C_Sign.unwrap()(h, data.as_mut_ptr(), 8, null_mut(), &mut len),
                CKR_OPERATION_NOT_INITIALIZED
            );
            // Same for C_SignFinal.
            assert_eq!(sign_init(h, CKM_SHA512_RSA_PKCS, o), CKR_OK);
            assert_eq!(f.C_SignUpdate.unwrap()(h, data.as_mut_ptr(), 8), CKR_OK);
            assert_eq!(f.C_SignFinal.unwrap()(h, null_mut(), &mut len), CKR_OK);
            assert_eq!(len, 384);
            len = 383;
            assert_eq!(
                f.C_SignFinal.unwrap()(h, sig.as_mut_ptr(), &mut len),
                CKR_BUFFER_TOO_SMALL
            );
            assert_eq!(len, 384);
            assert_eq!(
                f.C_SignFinal.unwrap()(h, sig.as_mut_ptr(), &mut len),
                CKR_OK
            );
            verify(&key.public, &Mechanism::Sha512RsaPkcs, &data, &sig[..384]);
            // Attribute values: NULL asks the length; too small is reported
            // per attribute and never overrun.
            let mut a = [CK_ATTRIBUTE {
                type_: CKA_MODULUS,
                pValue: null_mut(),
                ulValueLen: 0,
            }];
            assert_eq!(
                f.C_GetAttributeValue.unwrap()(h, o, a.as_mut_ptr(), 1),
                CKR_OK
            );
            assert_eq!(a[0].ulValueLen, 384);
            let mut buf = [0xEEu8; 400];
            a[0].pValue = buf.as_mut_ptr() as *mut _;
            a[0].ulValueLen = 383;
            assert_eq!(
                f.C_GetAttributeValue.unwrap()(h, o, a.as_mut_ptr(), 1),
                CKR_BUFFER_TOO_SMALL
            );
            assert_eq!(a[0].ulValueLen, CK_UNAVAILABLE_INFORMATION);
            assert!(buf.iter().all(|b| *b == 0xEE));
            let mut two = [
                CK_ATTRIBUTE {
                    type_: CKA_PRIVATE_EXPONENT,
                    pValue: buf.as_mut_ptr() as *mut _,
                    ulValueLen: 400,
                },
                CK_ATTRIBUTE {
                    type_: CKA_MODULUS,
                    pValue: buf.as_mut_ptr() as *mut _,
                    ulValueLen: 400,
                },
            ];
            assert_eq!(
                f.C_GetAttributeValue.unwrap()(h, o, two.as_mut_ptr(), 2),
                CKR_ATTRIBUTE_SENSITIVE
            );
            assert_eq!(two[0].ulValueLen, CK_UNAVAILABLE_INFORMATION);
            assert_eq!(
                two[1].ulValueLen, 384,
                "the other attributes are still answered"
            );
            assert_eq!(&buf[..384], key.public.n().to_bytes_be().as_slice());
            // Lists: count, too small, full.
            let mut n: CK_ULONG = 0;
            assert_eq!(
                f.C_GetMechanismList.unwrap()(slot_labelled("user").id(), null_mut(), &mut n),
                CKR_OK
            );
            assert!(n >= 6);
            let mut list = vec![0; n as usize];
            let mut short = n - 1;
            assert_eq!(
                f.C_GetMechanismList.unwrap()(
                    slot_labelled("user").id(),
                    list.as_mut_ptr(),
                    &mut short
                ),
                CKR_BUFFER_TOO_SMALL
            );
            assert_eq!(short, n);
            assert_eq!(
                f.C_GetMechanismList.unwrap()(
                    slot_labelled("user").id(),
                    list.as_mut_ptr(),
                    &mut n
                ),
                CKR_OK
            );
            assert!(list.contains(&CKM_SHA256_RSA_PKCS));
            f.C_CloseSession.unwrap()(h);
        }
    }

    /// Each way a key can go away, at each step of a signature, with the
    /// exact return value the raw API gives (the cryptoki wrapper's
    /// `sign` hides which of C_SignInit and C_Sign failed).
    #[test]
    #[ignore = "needs a kernel that holds PKCS#8 private keys: run lab/test"]
    fn keys_lost_between_find_init_and_sign_give_exact_errors() {
        use linux_keyutils::{Key, KeyPermissions, KeySerialId};
        let f = raw();
        let h = raw_rw_session("user");
        let survivor = KernelKey::load(2048, "edge-survivor");
        let survivor_o = find_private(h, &survivor.label);
        type Kill = (&'static str, fn(Key), CK_RV);
        let kill: [Kill; 5] = [
            ("revoke", |k| k.revoke().unwrap(), CKR_KEY_HANDLE_INVALID),
            (
                "invalidate",
                |k| k.invalidate().unwrap(),
                CKR_KEY_HANDLE_INVALID,
            ),
            (
                "unlink",
                |k| keyctl::unlink(k.get_id().as_raw_id(), keyctl::KEY_SPEC_USER_KEYRING).unwrap(),
                CKR_KEY_HANDLE_INVALID,
            ),
            (
                "expire",
                |k| {
                    k.set_timeout(1).unwrap();
                    std::thread::sleep(std::time::Duration::from_millis(2100));
                },
                CKR_KEY_HANDLE_INVALID,
            ),
            // Still there, but no longer ours to use: a permission problem.
            // (A process seeing it first does not list it; this one, which
            // listed it before, still does: tests/lifecycle.rs.)
            (
                "no-search",
                |k| k.set_perms(KeyPermissions::from_u32(0x0101_0000)).unwrap(),
                CKR_KEY_FUNCTION_NOT_PERMITTED,
            ),
        ];
        let sign = |o: CK_OBJECT_HANDLE| sign_edge(h, o);
        for (what, kill, want) in kill {
            // Between C_FindObjects and C_SignInit.
            let key = KernelKey::load(2048, &format!("edge-{what}-a"));
            let o = find_private(h, &key.label);
            kill(Key::from_id(KeySerialId::new(key.serial)));
            assert_eq!(
                sign_init(h, CKM_SHA256_RSA_PKCS, o),
                want,
                "{what}: C_SignInit after C_FindObjects"
            );
            // Between C_SignInit and C_Sign (single-part).
            let key = KernelKey::load(2048, &format!("edge-{what}-b"));
            let o = find_private(h, &key.label);
            assert_eq!(sign_init(h, CKM_SHA256_RSA_PKCS, o), CKR_OK, "{what}");
            kill(Key::from_id(KeySerialId::new(key.serial)));
            let mut data = *b"edge";
            let mut sig = [0u8; 256];
            let mut len = sig.len() as CK_ULONG;
            let rv =
                unsafe { f.C_Sign.unwrap()(h, data.as_mut_ptr(), 4, sig.as_mut_ptr(), &mut len) };
            assert_eq!(rv, want, "{what}: C_Sign after C_SignInit");
            // The failed C_Sign ended the operation: the session is usable.
            assert_eq!(
                sign(survivor_o),
                CKR_OK,
                "{what}: the other key still signs in the same session"
            );
            assert_eq!(sign(o), want, "{what}: and the lost key stays lost");
            // After signatures: the key's next C_SignInit takes the short
            // way (one search by label proves it is still there), which
            // must see the loss as the long way does.
            let key = KernelKey::load(2048, &format!("edge-{what}-c"));
            let o = find_private(h, &key.label);
            for _ in 0..2 {
                assert_eq!(sign(o), CKR_OK, "{what}: signing before the loss");
            }
            kill(Key::from_id(KeySerialId::new(key.serial)));
            assert_eq!(
                sign_init(h, CKM_SHA256_RSA_PKCS, o),
                want,
                "{what}: C_SignInit after signatures"
            );
        }
        unsafe { f.C_CloseSession.unwrap()(h) };
    }

    /// The lab's session keyring links `@u`, as after a PAM login, and the
    /// kernel's search of a keyring also looks into the keyrings linked in
    /// it. A key in both, signed with through the session token and then
    /// unlinked from the session keyring only, is still found by a search
    /// of the session keyring, but it has left the session token: the
    /// short way of `C_SignInit` must not take it.
    #[test]
    #[ignore = "needs a kernel that holds PKCS#8 private keys: run lab/test"]
    fn a_key_left_only_in_user_keyring_has_left_the_session_token() {
        let f = raw();
        let key = KernelKey::load(2048, "edge-nested");
        keyctl::link(key.serial, keyctl::KEY_SPEC_SESSION_KEYRING).unwrap();
        let sign = sign_edge;
        let hs = raw_rw_session("session");
        let o = find_private(hs, &key.label);
        for _ in 0..2 {
            assert_eq!(sign(hs, o), CKR_OK, "through the session token");
        }
        keyctl::unlink(key.serial, keyctl::KEY_SPEC_SESSION_KEYRING).unwrap();
        assert_eq!(
            keyctl::search(keyctl::KEY_SPEC_SESSION_KEYRING, "asymmetric", &key.label),
            Ok(key.serial),
            "the lab's session keyring links @u: its search still finds the key"
        );
        assert_eq!(
            sign_init(hs, CKM_SHA256_RSA_PKCS, o),
            CKR_KEY_HANDLE_INVALID,
            "no longer the session token's"
        );
        let hu = raw_rw_session("user");
        let ou = find_private(hu, &key.label);
        assert_eq!(sign(hu, ou), CKR_OK, "still the user token's");
        unsafe {
            f.C_CloseSession.unwrap()(hs);
            f.C_CloseSession.unwrap()(hu);
        }
    }

    #[test]
    #[ignore = "needs a kernel that holds PKCS#8 private keys: run lab/test"]
    fn bad_handles_and_null_pointers() {
        let key = KernelKey::load(2048, "bad");
        let f = raw();
        let slot = slot_labelled("user").id();
        let h = raw_rw_session("user");
        let o = find_private(h, &key.label);
        let mut len: CK_ULONG = 0;
        let mut data = [1u8; 32];
        unsafe {
            assert_eq!(
                f.C_GetSlotList.unwrap()(CK_TRUE, null_mut(), null_mut()),
                CKR_ARGUMENTS_BAD
            );
            assert_eq!(f.C_GetInfo.unwrap()(null_mut()), CKR_ARGUMENTS_BAD);
            assert_eq!(
                f.C_GetTokenInfo.unwrap()(slot, null_mut()),
                CKR_ARGUMENTS_BAD
            );
            assert_eq!(
                f.C_GetTokenInfo.unwrap()(4242, &mut std::mem::zeroed()),
                CKR_SLOT_ID_INVALID
            );
            assert_eq!(
                f.C_OpenSession.unwrap()(slot, CKF_SERIAL_SESSION, null_mut(), None, null_mut()),
                CKR_ARGUMENTS_BAD
            );
            assert_eq!(f.C_SignInit.unwrap()(h, null_mut(), o), CKR_ARGUMENTS_BAD);
            assert_eq!(
                sign_init(0xdead_beef, CKM_SHA256_RSA_PKCS, o),
                CKR_SESSION_HANDLE_INVALID
            );
            assert_eq!(
                sign_init(h, CKM_SHA256_RSA_PKCS, 0xdead_beef),
                CKR_KEY_HANDLE_INVALID
            );
            assert_eq!(sign_init(h, CKM_ECDSA, o), CKR_MECHANISM_INVALID);
            assert_eq!(
                sign_init(h, CKM_RSA_PKCS_PSS, o),
                CKR_MECHANISM_PARAM_INVALID
            );
            assert_eq!(sign_init(h, CKM_RSA_PKCS_OAEP, o), CKR_MECHANISM_INVALID);
            let mut with_param = CK_MECHANISM {
                mechanism: CKM_SHA256_RSA_PKCS,
                pParameter: data.as_mut_ptr() as *mut _,
                ulParameterLen: 4,
            };
            assert_eq!(
                f.C_SignInit.unwrap()(h, &mut with_param, o),
                CKR_MECHANISM_PARAM_INVALID
            );
            assert_eq!(
                f.C_Sign.unwrap()(h, data.as_mut_ptr(), 32, null_mut(), &mut len),
                CKR_OPERATION_NOT_INITIALIZED
            );
            assert_eq!(sign_init(h, CKM_SHA256_RSA_PKCS, o), CKR_OK);
            assert_eq!(sign_init(h, CKM_SHA256_RSA_PKCS, o), CKR_OPERATION_ACTIVE);
            assert_eq!(
                f.C_Sign.unwrap()(h, data.as_mut_ptr(), 32, null_mut(), null_mut()),
                CKR_ARGUMENTS_BAD
            );
            assert_eq!(
                f.C_Sign.unwrap()(h, null_mut(), 32, null_mut(), &mut len),
                CKR_ARGUMENTS_BAD
            );
            let mut a = [CK_ATTRIBUTE {
                type_: CKA_MODULUS,
                pValue: null_mut(),
                ulValueLen: 0,
            }];
            assert_eq!(
                f.C_GetAttributeValue.unwrap()(h, 0xdead_beef, a.as_mut_ptr(), 1),
                CKR_OBJECT_HANDLE_INVALID
            );
            assert_eq!(
                f.C_GetAttributeValue.unwrap()(h, o, null_mut(), 1),
                CKR_ARGUMENTS_BAD
            );
            assert_eq!(
                f.C_FindObjectsInit.unwrap()(h, null_mut(), 3),
                CKR_ARGUMENTS_BAD
            );
            assert_eq!(f.C_CloseSession.unwrap()(h), CKR_OK);
            assert_eq!(f.C_CloseSession.unwrap()(h), CKR_SESSION_HANDLE_INVALID);
            // The module is still fine for everyone else.
            let s = user_session();
            let sig = s
                .sign(
                    &Mechanism::Sha256RsaPkcs,
                    key.find(&s, ObjectClass::PRIVATE_KEY),
                    b"still fine",
                )
                .unwrap();
            verify(&key.public, &Mechanism::Sha256RsaPkcs, b"still fine", &sig);
        }
    }
}

#[test]
#[ignore = "needs a kernel that holds PKCS#8 private keys: run lab/test"]
fn revoked_expired_invalidated_and_unlinked_keys_are_invalid_handles() {
    use linux_keyutils::{Key, KeySerialId};
    let s = user_session();
    let survivor = KernelKey::load(2048, "survivor");
    let survivor_o = survivor.find(&s, ObjectClass::PRIVATE_KEY);
    type Kill = (&'static str, fn(Key));
    let kill: [Kill; 4] = [
        ("revoke", |k| k.revoke().unwrap()),
        ("invalidate", |k| k.invalidate().unwrap()),
        ("unlink", |k| {
            keyctl::unlink(k.get_id().as_raw_id(), keyctl::KEY_SPEC_USER_KEYRING).unwrap()
        }),
        ("expire", |k| {
            k.set_timeout(1).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(2100));
        }),
    ];
    for (what, f) in kill {
        // Killed after C_FindObjects, before C_SignInit.
        let key = KernelKey::load(2048, what);
        let o = key.find(&s, ObjectClass::PRIVATE_KEY);
        f(Key::from_id(KeySerialId::new(key.serial)));
        assert_eq!(
            rv_of(s.sign(&Mechanism::Sha256RsaPkcs, o, b"x")),
            RvError::KeyHandleInvalid,
            "{what} before SignInit"
        );
        // Killed between C_SignInit and C_Sign.
        let key = KernelKey::load(2048, what);
        let o = key.find(&s, ObjectClass::PRIVATE_KEY);
        s.sign_init(&Mechanism::Sha256RsaPkcs, o).unwrap();
        s.sign_update(b"x").unwrap();
        f(Key::from_id(KeySerialId::new(key.serial)));
        assert_eq!(
            rv_of(s.sign_final()),
            RvError::KeyHandleInvalid,
            "{what} before C_SignFinal"
        );
        // Gone keys are no longer listed; the other key keeps working.
        let listed = s
            .find_objects(&[Attribute::Label(key.label.clone().into_bytes())])
            .unwrap();
        assert!(listed.is_empty(), "{what}: still listed");
        let sig = s
            .sign(&Mechanism::Sha256RsaPkcs, survivor_o, b"alive")
            .unwrap();
        verify(&survivor.public, &Mechanism::Sha256RsaPkcs, b"alive", &sig);
    }
}

/// Public operations run in userspace on the recovered public key, so the
/// kernel would not notice a key that has gone: C_VerifyInit and
/// C_EncryptInit ask it, and a lost key's public object is an invalid handle
/// there, as its private object is at C_SignInit.
#[test]
#[ignore = "needs a kernel that holds PKCS#8 private keys: run lab/test"]
fn public_objects_of_lost_keys_are_invalid_at_verify_and_encrypt_init() {
    use linux_keyutils::{Key, KeySerialId};
    let s = user_session();
    let survivor = KernelKey::load(2048, "pub-survivor");
    let survivor_pub = survivor.find(&s, ObjectClass::PUBLIC_KEY);
    type Kill = (&'static str, fn(Key));
    let kill: [Kill; 4] = [
        ("revoke", |k| k.revoke().unwrap()),
        ("invalidate", |k| k.invalidate().unwrap()),
        ("unlink", |k| {
            keyctl::unlink(k.get_id().as_raw_id(), keyctl::KEY_SPEC_USER_KEYRING).unwrap()
        }),
        ("expire", |k| {
            k.set_timeout(1).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(2100));
        }),
    ];
    let mech = Mechanism::Sha256RsaPkcs;
    // Verifies and encrypts with `public`; the result of each step.
    let use_public = |public, key: &KernelKey| {
        let private = key.find(&s, ObjectClass::PRIVATE_KEY);
        let sig = s.sign(&mech, private, b"still here").unwrap();
        s.verify(&mech, public, b"still here", &sig).unwrap();
        let ct = s
            .encrypt(&Mechanism::RsaPkcs, public, b"still here")
            .unwrap();
        assert_eq!(
            s.decrypt(&Mechanism::RsaPkcs, private, &ct).unwrap(),
            b"still here"
        );
    };
    for (what, f) in kill {
        let key = KernelKey::load(2048, &format!("pub-{what}"));
        let public = key.find(&s, ObjectClass::PUBLIC_KEY);
        // Before: the public object verifies and encrypts.
        use_public(public, &key);
        f(Key::from_id(KeySerialId::new(key.serial)));
        assert_eq!(
            rv_of(s.verify_init(&mech, public)),
            RvError::KeyHandleInvalid,
            "{what}: C_VerifyInit with the public object"
        );
        assert_eq!(
            rv_of(s.encrypt_init(&Mechanism::RsaPkcs, public)),
            RvError::KeyHandleInvalid,
            "{what}: C_EncryptInit with the public object"
        );
        // The other key's public object keeps working in the same session.
        use_public(survivor_pub, &survivor);
    }
}

#[test]
#[ignore = "needs a kernel that holds PKCS#8 private keys: run lab/test"]
fn kernel_store_checks_digest_lengths_itself() {
    let key = KernelKey::load(2048, "digestlen");
    let store = KernelStore;
    let mut out = [0u8; 256];
    // The kernel would happily sign a 20-byte "SHA-256 digest"; we refuse.
    for (hash, wrong) in [
        (Hash::Sha256, 20),
        (Hash::Sha256, 0),
        (Hash::Sha256, 64),
        (Hash::Sha1, 32),
    ] {
        let e = store
            .sign(key.serial, Some(hash), &vec![1u8; wrong], &mut out)
            .unwrap_err();
        assert_eq!(e.0, libc::EINVAL, "{hash:?} with {wrong} bytes");
    }
    assert_eq!(
        store
            .sign(key.serial, Some(Hash::Sha256), &[1u8; 32], &mut out)
            .unwrap(),
        256
    );
}
