//! Sign, verify, encrypt, decrypt: the operation state machine and the two-call convention.

use super::*;

#[test]
fn two_call_convention_never_signs_to_answer_a_size() {
    let f = fixture(&[]);
    let h =
        f.m.open_session(USER, CKF_SERIAL_SESSION | CKF_RW_SESSION)
            .unwrap();
    let key = private_handle(&f, h);
    f.m.op_init(h, OpKind::Sign, CKM_SHA256_RSA_PKCS, &MechParams::None, key)
        .unwrap();
    assert_eq!(f.m.sign(h, Some(b"msg"), None).unwrap(), 128);
    let mut small = [0u8; 127];
    let e = f.m.sign(h, Some(b"msg"), Some(&mut small)).err().unwrap();
    assert_eq!((e.rv, e.needed), (CKR_BUFFER_TOO_SMALL, 128));
    assert_eq!(*f.store.signs.lock(), 0, "size queries must not sign");
    let mut sig = [0u8; 300];
    assert_eq!(f.m.sign(h, Some(b"msg"), Some(&mut sig)).unwrap(), 128);
    assert_eq!(*f.store.signs.lock(), 1);
    let digest = sha2::Sha256::digest(b"msg");
    f.key
        .to_public_key()
        .verify(Pkcs1v15Sign::new::<sha2::Sha256>(), &digest, &sig[..128])
        .unwrap();
    // The operation ended with the signature.
    assert_eq!(
        f.m.sign(h, Some(b"msg"), None).err().unwrap().rv,
        CKR_OPERATION_NOT_INITIALIZED
    );
}

#[test]
fn multipart_equals_single_part() {
    let f = fixture(&[]);
    let h = f.m.open_session(USER, CKF_SERIAL_SESSION).unwrap();
    let key = private_handle(&f, h);
    for mech in [
        CKM_SHA1_RSA_PKCS,
        CKM_SHA224_RSA_PKCS,
        CKM_SHA256_RSA_PKCS,
        CKM_SHA384_RSA_PKCS,
        CKM_SHA512_RSA_PKCS,
    ] {
        let mut one = [0u8; 128];
        f.m.op_init(h, OpKind::Sign, mech, &MechParams::None, key)
            .unwrap();
        f.m.sign(h, Some(b"hello world"), Some(&mut one)).unwrap();
        let mut two = [0u8; 128];
        f.m.op_init(h, OpKind::Sign, mech, &MechParams::None, key)
            .unwrap();
        f.m.op_update(h, OpKind::Sign, b"hello ").unwrap();
        f.m.op_update(h, OpKind::Sign, b"world").unwrap();
        assert_eq!(f.m.sign(h, None, None).unwrap(), 128);
        f.m.sign(h, None, Some(&mut two)).unwrap();
        assert_eq!(one, two, "mechanism {mech:#x}");
    }
}

#[test]
fn raw_pkcs_checks_input_length_and_params() {
    let f = fixture(&[]);
    let h = f.m.open_session(USER, CKF_SERIAL_SESSION).unwrap();
    let key = private_handle(&f, h);
    let mut sig = [0u8; 128];
    f.m.op_init(h, OpKind::Sign, CKM_RSA_PKCS, &MechParams::None, key)
        .unwrap();
    assert_eq!(
        f.m.sign(h, Some(&[7u8; 118]), Some(&mut sig))
            .err()
            .unwrap()
            .rv,
        CKR_DATA_LEN_RANGE
    );
    // The failure ended the operation.
    assert_eq!(
        f.m.sign(h, Some(&[7u8; 10]), Some(&mut sig))
            .err()
            .unwrap()
            .rv,
        CKR_OPERATION_NOT_INITIALIZED
    );
    f.m.op_init(h, OpKind::Sign, CKM_RSA_PKCS, &MechParams::None, key)
        .unwrap();
    f.m.sign(h, Some(&[7u8; 117]), Some(&mut sig)).unwrap();
    f.key
        .to_public_key()
        .verify(Pkcs1v15Sign::new_unprefixed(), &[7u8; 117], &sig)
        .unwrap();
    assert_eq!(
        f.m.op_init(h, OpKind::Sign, CKM_RSA_PKCS, &MechParams::Unknown, key)
            .err()
            .unwrap()
            .rv,
        CKR_MECHANISM_PARAM_INVALID
    );
    assert_eq!(
        f.m.op_init(h, OpKind::Sign, CKM_RSA_PKCS_PSS, &MechParams::None, key)
            .err()
            .unwrap()
            .rv,
        CKR_MECHANISM_PARAM_INVALID
    );
    let public = find(&f.m, h, &[class(CKO_PUBLIC_KEY)])[0];
    assert_eq!(
        f.m.op_init(h, OpKind::Sign, CKM_RSA_PKCS, &MechParams::None, public)
            .err()
            .unwrap()
            .rv,
        CKR_KEY_FUNCTION_NOT_PERMITTED
    );
    assert_eq!(
        f.m.op_init(h, OpKind::Sign, CKM_RSA_PKCS, &MechParams::None, 999_999)
            .err()
            .unwrap()
            .rv,
        CKR_KEY_HANDLE_INVALID
    );
    f.m.op_init(h, OpKind::Sign, CKM_RSA_PKCS, &MechParams::None, key)
        .unwrap();
    assert_eq!(
        f.m.op_init(h, OpKind::Sign, CKM_RSA_PKCS, &MechParams::None, key)
            .err()
            .unwrap()
            .rv,
        CKR_OPERATION_ACTIVE
    );
}

#[test]
fn vanished_keys_are_invalid_handles() {
    for errno in [libc::EKEYREVOKED, libc::EKEYEXPIRED, libc::ENOKEY] {
        let f = fixture(&[]);
        let h = f.m.open_session(USER, CKF_SERIAL_SESSION).unwrap();
        let key = private_handle(&f, h);
        // Gone before SignInit.
        f.store.set_gone(f.serial, errno);
        assert_eq!(
            f.m.op_init(h, OpKind::Sign, CKM_SHA256_RSA_PKCS, &MechParams::None, key)
                .err()
                .unwrap()
                .rv,
            CKR_KEY_HANDLE_INVALID
        );
        // Gone between SignInit and Sign.
        let f = fixture(&[]);
        let h = f.m.open_session(USER, CKF_SERIAL_SESSION).unwrap();
        let key = private_handle(&f, h);
        f.m.op_init(h, OpKind::Sign, CKM_SHA256_RSA_PKCS, &MechParams::None, key)
            .unwrap();
        f.store.set_gone(f.serial, errno);
        let mut sig = [0u8; 128];
        assert_eq!(
            f.m.sign(h, Some(b"x"), Some(&mut sig)).err().unwrap().rv,
            CKR_KEY_HANDLE_INVALID
        );
        // And it no longer shows up.
        assert!(find(&f.m, h, &[]).is_empty());
    }
}

#[test]
fn keys_unlinked_from_the_token_are_invalid_handles() {
    let f = fixture(&[]);
    let h = f.m.open_session(USER, CKF_SERIAL_SESSION).unwrap();
    let key = private_handle(&f, h);
    f.store.unlink(f.serial);
    assert_eq!(
        f.m.op_init(h, OpKind::Sign, CKM_SHA256_RSA_PKCS, &MechParams::None, key)
            .err()
            .unwrap()
            .rv,
        CKR_KEY_HANDLE_INVALID
    );
    assert!(find(&f.m, h, &[]).is_empty());
}

/// A server signs with one key again and again: after the first
/// `C_SignInit` (which asks the key what it supports), each one costs a
/// search by label and the keyring's size, whatever the token's size; and a
/// key lost in any way after that is still an invalid handle at the next
/// `C_SignInit`.
#[test]
fn a_key_signed_with_before_costs_no_link_read_and_its_loss_is_still_seen() {
    type Lose = fn(&Fixture);
    let losses: [(&str, Lose); 5] = [
        ("revoked", |f| f.store.set_gone(f.serial, libc::EKEYREVOKED)),
        ("expired", |f| f.store.set_gone(f.serial, libc::EKEYEXPIRED)),
        ("invalidated", |f| f.store.set_gone(f.serial, libc::ENOKEY)),
        ("unlinked", |f| f.store.unlink(f.serial)),
        ("replaced by another key of the same label", |f| {
            let label = f.store.keys.lock()[&f.serial].desc.description.clone();
            f.store.unlink(f.serial);
            f.store
                .add_key(&TokenKind::User, "asymmetric", &label, Some(rsa_key(512)));
        }),
    ];
    for (what, lose) in losses {
        let f = fixture(&[]);
        let h = f.m.open_session(USER, CKF_SERIAL_SESSION).unwrap();
        let key = private_handle(&f, h);
        let public = find(&f.m, h, &[class(CKO_PUBLIC_KEY)])[0];
        let reads = || *f.store.link_reads.lock();
        let mut sig = [0u8; 128];
        for (kind, mech, o) in [
            (OpKind::Sign, CKM_SHA256_RSA_PKCS, key),
            (OpKind::Verify, CKM_SHA256_RSA_PKCS, public),
            (OpKind::Sign, CKM_SHA256_RSA_PKCS_PSS, key),
        ] {
            let params = if mech == CKM_SHA256_RSA_PKCS_PSS {
                MechParams::Pss {
                    hash_alg: CKM_SHA256,
                    mgf: CKG_MGF1_SHA256,
                    salt_len: 32,
                }
            } else {
                MechParams::None
            };
            for round in 0..3 {
                let (r0, q0) = (reads(), *f.store.queries.lock());
                f.m.op_init(h, kind, mech, &params, o).unwrap();
                assert_eq!(reads(), r0, "{mech:#x}: no link read");
                if round > 0 {
                    assert_eq!(*f.store.queries.lock(), q0, "{mech:#x}, again: no query");
                }
                if kind == OpKind::Sign {
                    f.m.sign(h, Some(b"x"), Some(&mut sig)).unwrap();
                } else {
                    f.m.verify(h, Some(b"x"), &sig).unwrap();
                }
            }
        }
        lose(&f);
        for (kind, o) in [(OpKind::Sign, key), (OpKind::Verify, public)] {
            assert_eq!(
                f.m.op_init(h, kind, CKM_SHA256_RSA_PKCS, &MechParams::None, o)
                    .err()
                    .map(|e| e.rv),
                Some(CKR_KEY_HANDLE_INVALID),
                "{what}: {kind:?}"
            );
        }
    }
}

/// A session keyring links `@u` (as after a PAM login), and the kernel's
/// search looks into keyrings linked in the one searched: a key unlinked
/// from the session keyring but still in `@u` is still found by a search of
/// the session keyring, yet it has left the session token.
#[test]
fn a_key_still_in_a_keyring_linked_in_the_tokens_has_left_the_token() {
    let f = fixture(&[]);
    let session_ring = f.store.ring_serial(&TokenKind::Session);
    let user_ring = f.store.ring_serial(&TokenKind::User);
    f.store.link(&TokenKind::Session, user_ring);
    f.store.link(&TokenKind::Session, f.serial);
    assert_eq!(
        f.store.search(session_ring, "asymmetric", "mykey"),
        Ok(f.serial)
    );
    const SESSION: CK_SLOT_ID = 0;
    let h = f.m.open_session(SESSION, CKF_SERIAL_SESSION).unwrap();
    let key = private_handle(&f, h);
    let mut sig = [0u8; 128];
    for _ in 0..2 {
        f.m.op_init(h, OpKind::Sign, CKM_SHA256_RSA_PKCS, &MechParams::None, key)
            .unwrap();
        f.m.sign(h, Some(b"x"), Some(&mut sig)).unwrap();
    }
    f.store.unlink_from(&TokenKind::Session, f.serial);
    assert_eq!(
        f.store.search(session_ring, "asymmetric", "mykey"),
        Ok(f.serial),
        "the search still finds it, through @u"
    );
    assert_eq!(
        f.m.op_init(h, OpKind::Sign, CKM_SHA256_RSA_PKCS, &MechParams::None, key)
            .err()
            .map(|e| e.rv),
        Some(CKR_KEY_HANDLE_INVALID)
    );
    // Still the user token's.
    let hu = f.m.open_session(USER, CKF_SERIAL_SESSION).unwrap();
    let key = private_handle(&f, hu);
    f.m.op_init(
        hu,
        OpKind::Sign,
        CKM_SHA256_RSA_PKCS,
        &MechParams::None,
        key,
    )
    .unwrap();
}

#[test]
fn decrypt_two_call_answers_k_then_the_exact_length() {
    let f = fixture(&[]);
    let h = f.m.open_session(USER, CKF_SERIAL_SESSION).unwrap();
    let key = private_handle(&f, h);
    let ct = f
        .key
        .to_public_key()
        .encrypt(&mut rsa::rand_core::OsRng, rsa::Pkcs1v15Encrypt, b"five!")
        .unwrap();
    f.m.op_init(h, OpKind::Decrypt, CKM_RSA_PKCS, &MechParams::None, key)
        .unwrap();
    // A size query answers the upper bound without decrypting.
    assert_eq!(f.m.decrypt(h, &ct, None).unwrap(), 128);
    assert_eq!(*f.store.signs.lock(), 0);
    // Too small for the plaintext: the exact length, and the operation stays.
    let mut small = [0u8; 4];
    let e = f.m.decrypt(h, &ct, Some(&mut small)).err().unwrap();
    assert_eq!((e.rv, e.needed), (CKR_BUFFER_TOO_SMALL, 5));
    let mut out = [0u8; 5];
    assert_eq!(f.m.decrypt(h, &ct, Some(&mut out)).unwrap(), 5);
    assert_eq!(&out, b"five!");
    assert_eq!(
        f.m.decrypt(h, &ct, None).err().unwrap().rv,
        CKR_OPERATION_NOT_INITIALIZED
    );
}

#[test]
fn verify_and_encrypt_use_the_public_object() {
    let f = fixture(&[]);
    let h = f.m.open_session(USER, CKF_SERIAL_SESSION).unwrap();
    let private = private_handle(&f, h);
    let public = find(&f.m, h, &[class(CKO_PUBLIC_KEY)])[0];
    let mut sig = [0u8; 128];
    f.m.op_init(
        h,
        OpKind::Sign,
        CKM_SHA384_RSA_PKCS,
        &MechParams::None,
        private,
    )
    .unwrap();
    f.m.sign(h, Some(b"m"), Some(&mut sig)).unwrap();
    f.m.op_init(
        h,
        OpKind::Verify,
        CKM_SHA384_RSA_PKCS,
        &MechParams::None,
        public,
    )
    .unwrap();
    f.m.verify(h, Some(b"m"), &sig).unwrap();
    f.m.op_init(
        h,
        OpKind::Verify,
        CKM_SHA384_RSA_PKCS,
        &MechParams::None,
        public,
    )
    .unwrap();
    assert_eq!(
        f.m.verify(h, Some(b"n"), &sig).err().unwrap().rv,
        CKR_SIGNATURE_INVALID
    );
    assert_eq!(
        f.m.op_init(
            h,
            OpKind::Verify,
            CKM_SHA384_RSA_PKCS,
            &MechParams::None,
            private
        )
        .err()
        .unwrap()
        .rv,
        CKR_KEY_FUNCTION_NOT_PERMITTED
    );
    assert_eq!(
        f.m.op_init(
            h,
            OpKind::Encrypt,
            CKM_SHA256_RSA_PKCS,
            &MechParams::None,
            public
        )
        .err()
        .unwrap()
        .rv,
        CKR_MECHANISM_INVALID
    );
    let oaep = MechParams::Oaep {
        hash_alg: CKM_SHA256,
        mgf: CKG_MGF1_SHA256,
        source: CKZ_DATA_SPECIFIED,
        label: vec![],
    };
    f.m.op_init(h, OpKind::Encrypt, CKM_RSA_PKCS_OAEP, &oaep, public)
        .unwrap();
    let mut ct = [0u8; 128];
    assert_eq!(
        f.m.encrypt(h, b"hi", Some(&mut ct[..127]))
            .err()
            .unwrap()
            .rv,
        CKR_BUFFER_TOO_SMALL
    );
    f.m.encrypt(h, b"hi", Some(&mut ct)).unwrap();
    let clear = f
        .key
        .decrypt(rsa::Oaep::new::<sha2::Sha256>(), &ct)
        .unwrap();
    assert_eq!(clear, b"hi");
}

#[test]
fn session_cancel_ends_only_the_named_operations() {
    let f = fixture(&[]);
    let h = f.m.open_session(USER, CKF_SERIAL_SESSION).unwrap();
    let key = private_handle(&f, h);
    f.m.op_init(h, OpKind::Sign, CKM_SHA256_RSA_PKCS, &MechParams::None, key)
        .unwrap();
    f.m.digest_init(h, CKM_SHA256, &MechParams::None).unwrap();
    f.m.find_init(h, &[]).unwrap();
    // Nothing running of these kinds: not an error.
    f.m.session_cancel(h, CKF_DECRYPT | CKF_MESSAGE_SIGN)
        .unwrap();
    f.m.session_cancel(h, CKF_SIGN | CKF_FIND_OBJECTS).unwrap();
    assert_eq!(
        f.m.sign(h, Some(b"msg"), None).err().unwrap().rv,
        CKR_OPERATION_NOT_INITIALIZED
    );
    assert_eq!(
        f.m.find_next(h, 1).err().unwrap().rv,
        CKR_OPERATION_NOT_INITIALIZED
    );
    // The digest was not named and is still running; a new sign can start.
    f.m.digest_update(h, b"abc").unwrap();
    f.m.op_init(h, OpKind::Sign, CKM_SHA256_RSA_PKCS, &MechParams::None, key)
        .unwrap();
    f.m.session_cancel(h, CKF_DIGEST).unwrap();
    assert_eq!(
        f.m.digest_update(h, b"abc").err().unwrap().rv,
        CKR_OPERATION_NOT_INITIALIZED
    );
    assert_eq!(*f.store.signs.lock(), 0);
    assert_eq!(
        f.m.session_cancel(h + 1000, CKF_SIGN).err().unwrap().rv,
        CKR_SESSION_HANDLE_INVALID
    );
}

#[test]
fn public_objects_of_vanished_or_unlinked_keys_are_invalid_handles() {
    for gone in [Some(libc::EKEYREVOKED), Some(libc::EKEYEXPIRED), None] {
        let f = fixture(&[]);
        let h = f.m.open_session(USER, CKF_SERIAL_SESSION).unwrap();
        let public = find(&f.m, h, &[class(CKO_PUBLIC_KEY)]);
        assert_eq!(public.len(), 1);
        // Verification is userspace arithmetic on the public key: it works
        // while the key is there...
        let digest = sha2::Sha256::digest(b"data");
        let sig = f
            .key
            .sign(Pkcs1v15Sign::new::<sha2::Sha256>(), &digest)
            .unwrap();
        f.m.op_init(
            h,
            OpKind::Verify,
            CKM_SHA256_RSA_PKCS,
            &MechParams::None,
            public[0],
        )
        .unwrap();
        f.m.verify(h, Some(b"data"), &sig).unwrap();
        // ...and C_VerifyInit refuses once it is revoked, expired or unlinked.
        match gone {
            Some(errno) => f.store.set_gone(f.serial, errno),
            None => f.store.unlink(f.serial),
        }
        assert_eq!(
            f.m.op_init(
                h,
                OpKind::Verify,
                CKM_SHA256_RSA_PKCS,
                &MechParams::None,
                public[0]
            )
            .err()
            .unwrap()
            .rv,
            CKR_KEY_HANDLE_INVALID,
            "{gone:?}"
        );
        assert!(find(&f.m, h, &[]).is_empty());
    }
}

/// `C_Decrypt` with CKM_RSA_PKCS through the module: the whole result, or
/// the error code.
fn decrypt_pkcs1(
    m: &Module,
    key: CK_OBJECT_HANDLE,
    mech: CK_MECHANISM_TYPE,
    params: &MechParams,
    ct: &[u8],
) -> std::result::Result<Vec<u8>, CK_RV> {
    let h = m.open_session(USER, CKF_SERIAL_SESSION).unwrap();
    m.op_init(h, OpKind::Decrypt, mech, params, key).unwrap();
    let mut out = vec![0u8; ct.len()];
    let r = m.decrypt(h, ct, Some(&mut out));
    m.close_session(h).unwrap();
    r.map(|n| out[..n].to_vec()).map_err(|e| e.rv)
}

/// What the module must answer for `ct`, computed here from the key itself:
/// the draft's algorithm keyed by SHA-256(x0^d mod n).
fn expected_pkcs1(key: &RsaPrivateKey, ct: &[u8]) -> Vec<u8> {
    use crate::crypto::rejection;
    use rsa::traits::PrivateKeyParts;
    let raw = |x: &[u8]| {
        let v = rsa::BigUint::from_bytes_be(x)
            .modpow(key.d(), key.n())
            .to_bytes_be();
        [vec![0u8; key.size() - v.len()], v].concat()
    };
    let n = num_bigint::BigUint::from_bytes_be(&key.n().to_bytes_be());
    let x0 = rejection::fixed_input(&n, key.n().bits() as u32, key.size());
    let secret = rejection::derive_key(&raw(&x0));
    rejection::decode(&raw(ct), ct, &secret).unwrap().to_vec()
}

#[test]
fn pkcs1_decryption_rejects_implicitly() {
    let f = fixture(&[]);
    let other = rsa_key(1024);
    f.store
        .add_key(&TokenKind::User, "asymmetric", "other", Some(other.clone()));
    let h = f.m.open_session(USER, CKF_SERIAL_SESSION).unwrap();
    let key = private_handle(&f, h);
    let label = |l: &str| (CKA_LABEL, l.as_bytes().to_vec());
    let other_h = find(&f.m, h, &[class(CKO_PRIVATE_KEY), label("other")])[0];
    let none = MechParams::None;
    // Below n, and its padding is no good: CKR_OK, with the synthetic message.
    let bad = [0x11u8; 128];
    let before = *f.store.signs.lock();
    let got = decrypt_pkcs1(&f.m, key, CKM_RSA_PKCS, &none, &bad).unwrap();
    // The first PKCS#1 decryption with a key derives its secret: one more
    // private operation, once.
    assert_eq!(*f.store.signs.lock() - before, 2);
    assert!(got.len() <= 128 - 11);
    assert_eq!(got, expected_pkcs1(&f.key, &bad));
    assert_eq!(
        decrypt_pkcs1(&f.m, key, CKM_RSA_PKCS, &none, &bad),
        Ok(got.clone())
    );
    assert_eq!(*f.store.signs.lock() - before, 3);
    // The same in a module started afresh (another process): the secret
    // comes from the key, not from this process.
    let again = Module::new(f.store.clone(), &Config::default());
    let h2 = again.open_session(USER, CKF_SERIAL_SESSION).unwrap();
    let key2 = find(&again, h2, &[class(CKO_PRIVATE_KEY), label("mykey")])[0];
    assert_eq!(
        decrypt_pkcs1(&again, key2, CKM_RSA_PKCS, &none, &bad),
        Ok(got.clone())
    );
    // Another key of the same size answers differently.
    let theirs = decrypt_pkcs1(&f.m, other_h, CKM_RSA_PKCS, &none, &bad).unwrap();
    assert_ne!(theirs, got);
    assert_eq!(theirs, expected_pkcs1(&other, &bad));
    // A good ciphertext still decrypts.
    let ct = f
        .key
        .to_public_key()
        .encrypt(&mut rsa::rand_core::OsRng, rsa::Pkcs1v15Encrypt, b"good")
        .unwrap();
    assert_eq!(
        decrypt_pkcs1(&f.m, key, CKM_RSA_PKCS, &none, &ct),
        Ok(b"good".to_vec())
    );
    // What anyone can tell from the public key is refused: not below n, not
    // k bytes.
    let n = f.key.n().to_bytes_be();
    assert_eq!(
        decrypt_pkcs1(&f.m, key, CKM_RSA_PKCS, &none, &n),
        Err(CKR_ENCRYPTED_DATA_INVALID)
    );
    assert_eq!(
        decrypt_pkcs1(&f.m, key, CKM_RSA_PKCS, &none, &bad[1..]),
        Err(CKR_ENCRYPTED_DATA_LEN_RANGE)
    );
    // OAEP keeps its one error code.
    let oaep = MechParams::Oaep {
        hash_alg: CKM_SHA256,
        mgf: CKG_MGF1_SHA256,
        source: CKZ_DATA_SPECIFIED,
        label: vec![],
    };
    assert_eq!(
        decrypt_pkcs1(&f.m, key, CKM_RSA_PKCS_OAEP, &oaep, &bad),
        Err(CKR_ENCRYPTED_DATA_INVALID)
    );
}
