//! Templates are honoured exactly (PKCS#11 §5.7): each attribute takes
//! effect and reads back, or the call fails and leaves nothing; session
//! objects; records kept per token and believed only from the key's owner.

use super::*;

fn tmpl(
    k: &RsaPrivateKey,
    label: &str,
    extra: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
) -> Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)> {
    use rsa::pkcs8::EncodePrivateKey;
    let mut t = vec![
        (CKA_CLASS, CKO_PRIVATE_KEY.to_ne_bytes().to_vec()),
        (CKA_KEY_TYPE, CKK_RSA.to_ne_bytes().to_vec()),
        (CKA_LABEL, label.as_bytes().to_vec()),
        (CKA_VALUE, k.to_pkcs8_der().unwrap().as_bytes().to_vec()),
    ];
    t.extend_from_slice(extra);
    t
}

fn borrow(t: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)]) -> Vec<(CK_ATTRIBUTE_TYPE, &[u8])> {
    t.iter().map(|(a, v)| (*a, v.as_slice())).collect()
}

const TRUE: u8 = 1;
const FALSE: u8 = 0;

fn rw(f: &Fixture) -> CK_SESSION_HANDLE {
    f.m.open_session(USER, CKF_SERIAL_SESSION | CKF_RW_SESSION)
        .unwrap()
}

fn init(
    f: &Fixture,
    h: CK_SESSION_HANDLE,
    kind: OpKind,
    mech: CK_MECHANISM_TYPE,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    match f.m.op_init(h, kind, mech, &MechParams::None, key) {
        Ok(()) => CKR_OK,
        Err(e) => e.rv,
    }
}

#[test]
fn usage_flags_and_allowed_mechanisms_are_kept_and_enforced() {
    let f = fixture(&[]);
    let h = rw(&f);
    let k = rsa_key(1024);
    let mechs: Vec<u8> = CKM_SHA256_RSA_PKCS.to_ne_bytes().to_vec();
    let t = tmpl(
        &k,
        "sign-only",
        &[
            (CKA_TOKEN, vec![TRUE]),
            (CKA_DECRYPT, vec![FALSE]),
            (CKA_ALLOWED_MECHANISMS, mechs.clone()),
            (CKA_START_DATE, b"20261130".to_vec()),
        ],
    );
    let private = f.m.create_object(h, &borrow(&t)).unwrap();
    let a =
        f.m.attributes(
            h,
            private,
            &[
                CKA_DECRYPT,
                CKA_SIGN,
                CKA_ALLOWED_MECHANISMS,
                CKA_START_DATE,
                CKA_TOKEN,
            ],
        )
        .unwrap();
    assert_eq!(a[0], AttrValue::Value(vec![FALSE]));
    assert_eq!(a[1], AttrValue::Value(vec![TRUE]));
    assert_eq!(a[2], AttrValue::Value(mechs.clone()));
    assert_eq!(a[3], AttrValue::Value(b"20261130".to_vec()));
    assert_eq!(a[4], AttrValue::Value(vec![TRUE]));
    assert_eq!(
        init(&f, h, OpKind::Decrypt, CKM_RSA_X_509, private),
        CKR_KEY_FUNCTION_NOT_PERMITTED
    );
    assert_eq!(
        init(&f, h, OpKind::Sign, CKM_RSA_PKCS, private),
        CKR_MECHANISM_INVALID
    );
    assert_eq!(
        init(&f, h, OpKind::Sign, CKM_SHA256_RSA_PKCS, private),
        CKR_OK
    );
    // Another process sees the same, from the key's record.
    let m2 = Module::new(f.store.clone(), &Config::default());
    let h2 = m2.open_session(USER, CKF_SERIAL_SESSION).unwrap();
    let found = find(
        &m2,
        h2,
        &[class(CKO_PRIVATE_KEY), (CKA_LABEL, b"sign-only".to_vec())],
    );
    assert_eq!(found.len(), 1);
    let a2 = m2
        .attributes(h2, found[0], &[CKA_DECRYPT, CKA_ALLOWED_MECHANISMS])
        .unwrap();
    assert_eq!(a2[0], AttrValue::Value(vec![FALSE]));
    assert_eq!(a2[1], AttrValue::Value(mechs));
    assert_eq!(
        m2.op_init(
            h2,
            OpKind::Decrypt,
            CKM_RSA_X_509,
            &MechParams::None,
            found[0]
        )
        .err()
        .unwrap()
        .rv,
        CKR_KEY_FUNCTION_NOT_PERMITTED
    );
}

#[test]
fn what_cannot_be_honoured_fails_and_leaves_nothing() {
    let f = fixture(&[]);
    let h = rw(&f);
    let before = f.store.all_links();
    let k = rsa_key(1024);
    for (extra, rv) in [
        ((CKA_EXTRACTABLE, vec![TRUE]), CKR_ATTRIBUTE_VALUE_INVALID),
        ((CKA_SENSITIVE, vec![FALSE]), CKR_ATTRIBUTE_VALUE_INVALID),
        ((CKA_LOCAL, vec![TRUE]), CKR_ATTRIBUTE_READ_ONLY),
        ((CKA_NEVER_EXTRACTABLE, vec![TRUE]), CKR_ATTRIBUTE_READ_ONLY),
        ((CKA_VERIFY, vec![TRUE]), CKR_ATTRIBUTE_TYPE_INVALID),
        ((0x7fff_0001, vec![TRUE]), CKR_ATTRIBUTE_TYPE_INVALID),
        ((CKA_SIGN, vec![TRUE, TRUE]), CKR_ATTRIBUTE_VALUE_INVALID),
        (
            (CKA_START_DATE, b"2026".to_vec()),
            CKR_ATTRIBUTE_VALUE_INVALID,
        ),
        (
            (CKA_ALLOWED_MECHANISMS, CKM_ECDSA.to_ne_bytes().to_vec()),
            CKR_ATTRIBUTE_VALUE_INVALID,
        ),
        ((CKA_UNWRAP_TEMPLATE, vec![]), CKR_ATTRIBUTE_VALUE_INVALID),
        ((CKA_LABEL, b"a\0b".to_vec()), CKR_ATTRIBUTE_VALUE_INVALID),
    ] {
        let t = tmpl(&k, "refused", &[(CKA_TOKEN, vec![TRUE]), extra.clone()]);
        let t = if extra.0 == CKA_LABEL {
            t.into_iter()
                .filter(|(a, v)| *a != CKA_LABEL || v.contains(&0))
                .collect()
        } else {
            t
        };
        assert_eq!(
            f.m.create_object(h, &borrow(&t)).err().map(|e| e.rv),
            Some(rv),
            "{:#x}",
            extra.0
        );
        assert_eq!(
            f.store.all_links(),
            before,
            "{:#x} left something behind",
            extra.0
        );
    }
    // The same attribute twice with two values.
    let t = tmpl(
        &k,
        "twice",
        &[(CKA_SIGN, vec![TRUE]), (CKA_SIGN, vec![FALSE])],
    );
    assert_eq!(
        f.m.create_object(h, &borrow(&t)).err().map(|e| e.rv),
        Some(CKR_TEMPLATE_INCONSISTENT)
    );
    assert_eq!(f.store.all_links(), before);
}

#[test]
fn destroyable_modifiable_and_always_authenticate_are_enforced() {
    let f = fixture(&[]);
    let h = rw(&f);
    let k = rsa_key(1024);
    let t = tmpl(
        &k,
        "pinned",
        &[
            (CKA_TOKEN, vec![TRUE]),
            (CKA_DESTROYABLE, vec![FALSE]),
            (CKA_MODIFIABLE, vec![FALSE]),
            (CKA_ALWAYS_AUTHENTICATE, vec![TRUE]),
        ],
    );
    let key = f.m.create_object(h, &borrow(&t)).unwrap();
    assert_eq!(
        f.m.destroy_object(h, key).err().unwrap().rv,
        CKR_ACTION_PROHIBITED
    );
    assert_eq!(
        f.m.set_attributes(h, key, &[(CKA_ID, &[9u8][..])])
            .err()
            .unwrap()
            .rv,
        CKR_ACTION_PROHIBITED
    );
    // Setting what it already is stays fine.
    f.m.set_attributes(h, key, &[(CKA_LABEL, &b"pinned"[..])])
        .unwrap();
    f.m.op_init(h, OpKind::Sign, CKM_SHA256_RSA_PKCS, &MechParams::None, key)
        .unwrap();
    let mut sig = [0u8; 128];
    // A size query needs no login; the signature does.
    assert_eq!(f.m.sign(h, Some(b"m"), None).unwrap(), 128);
    assert_eq!(
        f.m.sign(h, Some(b"m"), Some(&mut sig)).err().unwrap().rv,
        CKR_USER_NOT_LOGGED_IN
    );
    f.m.login(h, CKU_CONTEXT_SPECIFIC).unwrap();
    assert_eq!(f.m.sign(h, Some(b"m"), Some(&mut sig)).unwrap(), 128);
    // And again for the next operation.
    f.m.op_init(h, OpKind::Sign, CKM_SHA256_RSA_PKCS, &MechParams::None, key)
        .unwrap();
    assert_eq!(
        f.m.sign(h, Some(b"m"), Some(&mut sig)).err().unwrap().rv,
        CKR_USER_NOT_LOGGED_IN
    );
}

#[test]
fn without_cka_token_a_key_is_a_session_object() {
    let f = fixture(&[]);
    let ro = f.m.open_session(USER, CKF_SERIAL_SESSION).unwrap();
    let other = f.m.open_session(USER, CKF_SERIAL_SESSION).unwrap();
    let user_ring_before: Vec<Serial> = f
        .store
        .links(f.store.resolve(&TokenKind::User).unwrap())
        .unwrap();
    let k = rsa_key(1024);
    // Read-only sessions may make session objects (PKCS#11 §4.3).
    let key =
        f.m.create_object(ro, &borrow(&tmpl(&k, "ephemeral", &[])))
            .unwrap();
    assert_eq!(
        f.m.attributes(ro, key, &[CKA_TOKEN]).unwrap()[0],
        AttrValue::Value(vec![FALSE])
    );
    // Not in the token's keyring: another process never sees it...
    assert_eq!(
        f.store
            .links(f.store.resolve(&TokenKind::User).unwrap())
            .unwrap(),
        user_ring_before
    );
    let m2 = Module::new(f.store.clone(), &Config::default());
    let h2 = m2.open_session(USER, CKF_SERIAL_SESSION).unwrap();
    assert!(find(&m2, h2, &[(CKA_LABEL, b"ephemeral".to_vec())]).is_empty());
    // ...while the application's other sessions do, and it works.
    let seen = find(
        &f.m,
        other,
        &[class(CKO_PRIVATE_KEY), (CKA_LABEL, b"ephemeral".to_vec())],
    );
    assert_eq!(seen, vec![key]);
    f.m.op_init(
        other,
        OpKind::Sign,
        CKM_SHA256_RSA_PKCS,
        &MechParams::None,
        key,
    )
    .unwrap();
    let mut sig = [0u8; 128];
    f.m.sign(other, Some(b"m"), Some(&mut sig)).unwrap();
    // It goes with the session that made it.
    f.m.close_session(ro).unwrap();
    assert!(find(&f.m, other, &[(CKA_LABEL, b"ephemeral".to_vec())]).is_empty());
    assert_eq!(
        f.m.attributes(other, key, &[CKA_TOKEN]).err().unwrap().rv,
        CKR_OBJECT_HANDLE_INVALID
    );
    // A token object still needs a read-write session.
    let t = tmpl(&k, "kept", &[(CKA_TOKEN, vec![TRUE])]);
    assert_eq!(
        f.m.create_object(other, &borrow(&t)).err().unwrap().rv,
        CKR_SESSION_READ_ONLY
    );
}

#[test]
fn a_public_key_template_must_describe_the_public_object_as_it_is() {
    let f = fixture(&[]);
    let h = rw(&f);
    let k = rsa_key(1024);
    let private =
        f.m.create_object(
            h,
            &borrow(&tmpl(
                &k,
                "pair",
                &[(CKA_TOKEN, vec![TRUE]), (CKA_ID, vec![7])],
            )),
        )
        .unwrap();
    let public = |extra: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)]| {
        let mut t = vec![
            (CKA_CLASS, CKO_PUBLIC_KEY.to_ne_bytes().to_vec()),
            (CKA_KEY_TYPE, CKK_RSA.to_ne_bytes().to_vec()),
            (CKA_TOKEN, vec![TRUE]),
            (CKA_MODULUS, k.n().to_bytes_be()),
            (CKA_PUBLIC_EXPONENT, k.e().to_bytes_be()),
        ];
        t.extend_from_slice(extra);
        t
    };
    let p =
        f.m.create_object(h, &borrow(&public(&[(CKA_ID, vec![7])])))
            .unwrap();
    assert_eq!(
        f.m.attributes(h, p, &[CKA_ID]).unwrap()[0],
        AttrValue::Value(vec![7])
    );
    // Another CKA_ID no longer rewrites the private key's.
    assert_eq!(
        f.m.create_object(h, &borrow(&public(&[(CKA_ID, vec![8])])))
            .err()
            .unwrap()
            .rv,
        CKR_TEMPLATE_INCONSISTENT
    );
    assert_eq!(
        f.m.create_object(h, &borrow(&public(&[(CKA_VERIFY, vec![FALSE])])))
            .err()
            .unwrap()
            .rv,
        CKR_TEMPLATE_INCONSISTENT
    );
    assert_eq!(
        f.m.attributes(h, private, &[CKA_ID]).unwrap()[0],
        AttrValue::Value(vec![7])
    );
}

#[test]
fn generated_pairs_keep_each_objects_flags() {
    let f = fixture(&[]);
    let h = rw(&f);
    let bits = (2048 as CK_ULONG).to_ne_bytes();
    let pubt: Vec<(CK_ATTRIBUTE_TYPE, &[u8])> = vec![
        (CKA_TOKEN, &[TRUE]),
        (CKA_MODULUS_BITS, &bits),
        (CKA_ENCRYPT, &[FALSE]),
        (CKA_LABEL, b"gen"),
    ];
    let privt: Vec<(CK_ATTRIBUTE_TYPE, &[u8])> = vec![
        (CKA_TOKEN, &[TRUE]),
        (CKA_PRIVATE, &[TRUE]),
        (CKA_SENSITIVE, &[TRUE]),
        (CKA_SIGN, &[TRUE]),
        (CKA_DECRYPT, &[FALSE]),
        (CKA_LABEL, b"gen"),
    ];
    let (pu, pr) =
        f.m.generate_key_pair(
            h,
            CKM_RSA_PKCS_KEY_PAIR_GEN,
            &MechParams::None,
            &pubt,
            &privt,
        )
        .unwrap();
    assert_eq!(
        f.m.attributes(h, pu, &[CKA_ENCRYPT, CKA_VERIFY]).unwrap(),
        vec![AttrValue::Value(vec![FALSE]), AttrValue::Value(vec![TRUE])]
    );
    assert_eq!(
        f.m.attributes(h, pr, &[CKA_DECRYPT, CKA_SIGN, CKA_LOCAL])
            .unwrap(),
        vec![
            AttrValue::Value(vec![FALSE]),
            AttrValue::Value(vec![TRUE]),
            AttrValue::Value(vec![TRUE])
        ]
    );
    assert_eq!(
        init(&f, h, OpKind::Encrypt, CKM_RSA_PKCS, pu),
        CKR_KEY_FUNCTION_NOT_PERMITTED
    );
    assert_eq!(init(&f, h, OpKind::Verify, CKM_SHA256_RSA_PKCS, pu), CKR_OK);
    // The two templates name one kernel key: they may not disagree.
    let other: Vec<(CK_ATTRIBUTE_TYPE, &[u8])> =
        vec![(CKA_MODULUS_BITS, &bits), (CKA_LABEL, b"one")];
    let mine: Vec<(CK_ATTRIBUTE_TYPE, &[u8])> = vec![(CKA_LABEL, b"two")];
    assert_eq!(
        f.m.generate_key_pair(
            h,
            CKM_RSA_PKCS_KEY_PAIR_GEN,
            &MechParams::None,
            &other,
            &mine
        )
        .err()
        .unwrap()
        .rv,
        CKR_TEMPLATE_INCONSISTENT
    );
}

#[test]
fn one_key_in_two_tokens_has_each_tokens_record() {
    let f = fixture(&["work"]);
    f.store.add_keyring(&TokenKind::Named("work".into()));
    f.store.link(&TokenKind::Named("work".into()), f.serial);
    let m = Module::new(
        f.store.clone(),
        &Config {
            named_keyrings: vec!["work".into()],
            ..Config::default()
        },
    );
    let hu = m
        .open_session(USER, CKF_SERIAL_SESSION | CKF_RW_SESSION)
        .unwrap();
    let hw = m
        .open_session(4, CKF_SERIAL_SESSION | CKF_RW_SESSION)
        .unwrap();
    let pu = find(&m, hu, &[class(CKO_PRIVATE_KEY)])[0];
    let pw = find(&m, hw, &[class(CKO_PRIVATE_KEY)])[0];
    m.set_attributes(hu, pu, &[(CKA_ID, &[0xaa][..])]).unwrap();
    m.set_attributes(hw, pw, &[(CKA_ID, &[0xbb][..])]).unwrap();
    for _ in 0..2 {
        // Before and after a fresh scan of both tokens.
        assert_eq!(
            m.attributes(hu, pu, &[CKA_ID]).unwrap()[0],
            AttrValue::Value(vec![0xaa])
        );
        assert_eq!(
            m.attributes(hw, pw, &[CKA_ID]).unwrap()[0],
            AttrValue::Value(vec![0xbb])
        );
        find(&m, hu, &[]);
        find(&m, hw, &[]);
    }
}

#[test]
fn records_written_by_someone_else_are_not_believed() {
    let f = fixture(&[]);
    let h = rw(&f);
    let private = private_handle(&f, h);
    f.m.set_attributes(h, private, &[(CKA_ID, &[0x42][..])])
        .unwrap();
    let record = f
        .store
        .links(f.store.resolve(&TokenKind::User).unwrap())
        .unwrap()
        .into_iter()
        .find(|s| {
            f.store
                .describe(*s)
                .unwrap()
                .description
                .starts_with("keyring-pkcs11:")
        })
        .unwrap();
    let fresh = || {
        let m = Module::new(f.store.clone(), &Config::default());
        let h = m.open_session(USER, CKF_SERIAL_SESSION).unwrap();
        let k = find(&m, h, &[class(CKO_PRIVATE_KEY)])[0];
        m.attributes(h, k, &[CKA_ID]).unwrap().remove(0)
    };
    assert_eq!(fresh(), AttrValue::Value(vec![0x42]));
    // The same record planted by another user: ignored.
    f.store.set_owner(record, 4242);
    assert_ne!(fresh(), AttrValue::Value(vec![0x42]));
    // Written by root, it is believed.
    f.store.set_owner(record, 0);
    assert_eq!(fresh(), AttrValue::Value(vec![0x42]));
}

/// `C_GenerateKeyPair` with these templates; its `CK_RV`.
fn generate(
    f: &Fixture,
    h: CK_SESSION_HANDLE,
    public: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
    private: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
) -> std::result::Result<(CK_OBJECT_HANDLE, CK_OBJECT_HANDLE), CK_RV> {
    f.m.generate_key_pair(
        h,
        CKM_RSA_PKCS_KEY_PAIR_GEN,
        &MechParams::None,
        &borrow(public),
        &borrow(private),
    )
    .map_err(|e| e.rv)
}

fn bits(n: CK_ULONG) -> (CK_ATTRIBUTE_TYPE, Vec<u8>) {
    (CKA_MODULUS_BITS, n.to_ne_bytes().to_vec())
}

// Found by the fuzzer's read-back check: a CK_BBOOL of 2 was taken as true
// and read back as 1 (or, for CKA_PRIVATE, as 0).
#[test]
fn a_boolean_is_ck_true_or_ck_false() {
    let f = fixture(&[]);
    let h = rw(&f);
    let before = f.store.all_links();
    let k = rsa_key(1024);
    for ty in [CKA_SIGN, CKA_TOKEN, CKA_SENSITIVE, CKA_PRIVATE, CKA_DERIVE] {
        let t = tmpl(&k, "bool", &[(ty, vec![2])]);
        assert_eq!(
            f.m.create_object(h, &borrow(&t)).err().map(|e| e.rv),
            Some(CKR_ATTRIBUTE_VALUE_INVALID),
            "{ty:#x}"
        );
        assert_eq!(f.store.all_links(), before, "{ty:#x} left something");
    }
    let pubt = [bits(2048), (CKA_VERIFY, vec![0xff])];
    assert_eq!(
        generate(&f, h, &pubt, &[]).err(),
        Some(CKR_ATTRIBUTE_VALUE_INVALID)
    );
    assert_eq!(f.store.all_links(), before);
}

// Found by the fuzzer's read-back check: an empty CKA_LABEL was taken as
// none, and the key read back as "rsa-…" (a kernel key's description is
// never empty).
#[test]
fn an_empty_label_is_refused() {
    let f = fixture(&[]);
    let h = rw(&f);
    let before = f.store.all_links();
    let k = rsa_key(1024);
    let t = tmpl(&k, "", &[]);
    assert_eq!(
        f.m.create_object(h, &borrow(&t)).err().map(|e| e.rv),
        Some(CKR_ATTRIBUTE_VALUE_INVALID)
    );
    assert_eq!(f.store.all_links(), before);
    // Without a label the key gets one.
    let t: Vec<_> = tmpl(&k, "", &[])
        .into_iter()
        .filter(|(a, _)| *a != CKA_LABEL)
        .collect();
    let o = f.m.create_object(h, &borrow(&t)).unwrap();
    assert!(value(&f.m.attributes(h, o, &[CKA_LABEL]).unwrap()[0]).starts_with(b"rsa-"));
    assert_eq!(
        generate(&f, h, &[bits(2048), (CKA_LABEL, vec![])], &[]).err(),
        Some(CKR_ATTRIBUTE_VALUE_INVALID)
    );
    assert_eq!(
        generate(&f, h, &[bits(2048)], &[(CKA_LABEL, vec![])]).err(),
        Some(CKR_ATTRIBUTE_VALUE_INVALID)
    );
}

// A template that gives the key as PKCS#8 (CKA_VALUE) and its parts as
// well: the parts were ignored, and a CKA_MODULUS of another key read back
// as this key's.
#[test]
fn a_pkcs8_key_and_the_parts_given_with_it_must_agree() {
    use rsa::traits::PrivateKeyParts;
    let f = fixture(&[]);
    let h = rw(&f);
    let before = f.store.all_links();
    let k = rsa_key(1024);
    let other = rsa_key(1024);
    for (ty, v) in [
        (CKA_MODULUS, other.n().to_bytes_be()),
        (CKA_PUBLIC_EXPONENT, vec![3]),
        (CKA_PRIVATE_EXPONENT, other.d().to_bytes_be()),
        (CKA_PRIME_1, other.primes()[0].to_bytes_be()),
    ] {
        let t = tmpl(&k, "parts", &[(ty, v)]);
        assert_eq!(
            f.m.create_object(h, &borrow(&t)).err().map(|e| e.rv),
            Some(CKR_TEMPLATE_INCONSISTENT),
            "{ty:#x}"
        );
        assert_eq!(f.store.all_links(), before, "{ty:#x} left something");
    }
    // The key's own parts are fine, with or without leading zeros.
    let mut n = vec![0];
    n.extend(k.n().to_bytes_be());
    let t = tmpl(
        &k,
        "parts",
        &[
            (CKA_MODULUS, n),
            (CKA_PUBLIC_EXPONENT, k.e().to_bytes_be()),
            (CKA_PRIME_2, k.primes()[1].to_bytes_be()),
        ],
    );
    let o = f.m.create_object(h, &borrow(&t)).unwrap();
    assert_eq!(
        value(&f.m.attributes(h, o, &[CKA_MODULUS]).unwrap()[0]),
        k.n().to_bytes_be()
    );
}

// Generation templates that gave what generation makes (CKA_MODULUS, the
// private parts, a CKA_PUBLIC_KEY_INFO, another public exponent in the
// private template): ignored, and read back as the new key's.
#[test]
fn generation_templates_cannot_give_what_is_generated() {
    let f = fixture(&[]);
    let h = rw(&f);
    let before = f.store.all_links();
    let k = rsa_key(1024);
    let spki = RsaPublic {
        modulus: k.n().to_bytes_be(),
        exponent: k.e().to_bytes_be(),
    }
    .spki_der();
    for (public, private) in [
        (vec![(CKA_MODULUS, k.n().to_bytes_be())], vec![]),
        (vec![], vec![(CKA_MODULUS, k.n().to_bytes_be())]),
        (vec![], vec![(CKA_PRIVATE_EXPONENT, vec![1; 128])]),
        (vec![], vec![(CKA_VALUE, vec![0x30, 0])]),
        (vec![], vec![(CKA_PUBLIC_EXPONENT, vec![3])]),
        (vec![(CKA_PUBLIC_KEY_INFO, spki.clone())], vec![]),
        (vec![], vec![(CKA_PUBLIC_KEY_INFO, spki.clone())]),
        (vec![(CKA_PUBLIC_KEY_INFO, vec![])], vec![]),
    ] {
        let mut public = public;
        public.push(bits(2048));
        assert_eq!(
            generate(&f, h, &public, &private).err(),
            Some(CKR_TEMPLATE_INCONSISTENT),
            "{public:02x?} {private:02x?}"
        );
        assert_eq!(f.store.all_links(), before);
    }
    // The exponent in the private template too, if it is the public one's.
    let (pu, pr) = generate(
        &f,
        h,
        &[bits(2048), (CKA_PUBLIC_EXPONENT, vec![0, 1, 0, 1])],
        &[(CKA_PUBLIC_EXPONENT, vec![1, 0, 1])],
    )
    .unwrap();
    for o in [pu, pr] {
        assert_eq!(
            value(&f.m.attributes(h, o, &[CKA_PUBLIC_EXPONENT]).unwrap()[0]),
            [1, 0, 1]
        );
    }
}

// An empty CKA_PUBLIC_KEY_INFO was accepted and read back as the key's.
#[test]
fn an_empty_public_key_info_is_refused() {
    let f = fixture(&[]);
    let h = rw(&f);
    let before = f.store.all_links();
    let k = rsa_key(1024);
    let t = tmpl(&k, "spki", &[(CKA_PUBLIC_KEY_INFO, vec![])]);
    assert_eq!(
        f.m.create_object(h, &borrow(&t)).err().map(|e| e.rv),
        Some(CKR_TEMPLATE_INCONSISTENT)
    );
    assert_eq!(f.store.all_links(), before);
}

// Found by the fuzzer: the same key created twice in one keyring (another
// label). Records are named by the key's ID, so the second key's record
// replaced the first's; with the key quota full, the first key's record was
// unlinked and the new one refused, and the failed C_CreateObject left the
// first key without its record (CKA_SIGN=FALSE read back TRUE).
#[test]
fn a_key_already_in_the_keyring_is_not_created_again() {
    let f = fixture(&[]);
    let h = rw(&f);
    let k = rsa_key(1024);
    let first = tmpl(
        &k,
        "first",
        &[(CKA_TOKEN, vec![TRUE]), (CKA_SIGN, vec![FALSE])],
    );
    let o = f.m.create_object(h, &borrow(&first)).unwrap();
    let before = f.store.all_links();
    *f.store.add_quota.lock() = Some(1);
    let again = tmpl(&k, "again", &[(CKA_TOKEN, vec![TRUE])]);
    assert_eq!(
        f.m.create_object(h, &borrow(&again)).err().map(|e| e.rv),
        Some(CKR_ATTRIBUTE_VALUE_INVALID)
    );
    assert_eq!(f.store.all_links(), before);
    *f.store.add_quota.lock() = None;
    assert_eq!(
        value(&f.m.attributes(h, o, &[CKA_SIGN]).unwrap()[0]),
        [FALSE]
    );
    // The fixture's own key too (no record: loaded as with keyctl padd), and
    // in the same keyring only: as a session object it is another keyring's
    // key.
    let mine = tmpl(&f.key, "mine", &[(CKA_TOKEN, vec![TRUE])]);
    assert_eq!(
        f.m.create_object(h, &borrow(&mine)).err().map(|e| e.rv),
        Some(CKR_ATTRIBUTE_VALUE_INVALID)
    );
    let session = tmpl(&k, "session", &[]);
    f.m.create_object(h, &borrow(&session)).unwrap();
}

// A CKA_ID change is a new record in place of the old one: with the key
// quota full, the old record was unlinked and the new one refused, so the
// failed C_SetAttributeValue left the key without its record (CKA_SIGN=FALSE
// read back TRUE).
#[test]
fn a_refused_id_change_keeps_the_old_record() {
    let f = fixture(&[]);
    let h = rw(&f);
    let k = rsa_key(1024);
    let t = tmpl(
        &k,
        "kept",
        &[(CKA_TOKEN, vec![TRUE]), (CKA_SIGN, vec![FALSE])],
    );
    let o = f.m.create_object(h, &borrow(&t)).unwrap();
    let before = f.store.all_links();
    *f.store.add_quota.lock() = Some(0);
    assert_eq!(
        f.m.set_attributes(h, o, &[(CKA_ID, &[7u8][..])])
            .err()
            .map(|e| e.rv),
        Some(CKR_DEVICE_MEMORY)
    );
    assert_eq!(f.store.all_links(), before);
    *f.store.add_quota.lock() = None;
    let fresh = Module::new(f.store.clone(), &Config::default());
    let h2 = fresh.open_session(USER, CKF_SERIAL_SESSION).unwrap();
    let o2 = find(
        &fresh,
        h2,
        &[(CKA_LABEL, b"kept".to_vec()), class(CKO_PRIVATE_KEY)],
    )[0];
    assert_eq!(
        value(&fresh.attributes(h2, o2, &[CKA_SIGN]).unwrap()[0]),
        [FALSE]
    );
}

// Found by the fuzzer: C_SetAttributeValue with CKA_ID twice, two values —
// the module kept the first, the caller read the last back.
#[test]
fn one_attribute_set_twice_with_two_values_is_inconsistent() {
    let f = fixture(&[]);
    let h = rw(&f);
    let o = private_handle(&f, h);
    let before = f.m.attributes(h, o, &[CKA_ID]).unwrap();
    assert_eq!(
        f.m.set_attributes(h, o, &[(CKA_ID, &[0xa1][..]), (CKA_ID, &[0x72][..])])
            .err()
            .map(|e| e.rv),
        Some(CKR_TEMPLATE_INCONSISTENT)
    );
    assert_eq!(f.m.attributes(h, o, &[CKA_ID]).unwrap(), before);
    // The same value twice is one value.
    f.m.set_attributes(h, o, &[(CKA_ID, &[0x72][..]), (CKA_ID, &[0x72][..])])
        .unwrap();
    assert_eq!(value(&f.m.attributes(h, o, &[CKA_ID]).unwrap()[0]), [0x72]);
}
