//! Logic tests against the in-memory store. The same behaviour is tested
//! against real kernels in `tests/` (run inside the lab).

use super::*;
use crate::store::mock::MockStore;
use rsa::traits::PublicKeyParts;
use rsa::{Pkcs1v15Sign, RsaPrivateKey};
use sha2::Digest;

fn rsa_key(bits: usize) -> RsaPrivateKey {
    RsaPrivateKey::new(&mut rsa::rand_core::OsRng, bits).unwrap()
}

struct Fixture {
    store: Arc<MockStore>,
    m: Module,
    key: RsaPrivateKey,
    serial: Serial,
}

fn fixture(named: &[&str]) -> Fixture {
    let store = Arc::new(MockStore::default());
    store.add_keyring(&TokenKind::Session);
    store.add_keyring(&TokenKind::User);
    store.add_keyring(&TokenKind::Process);
    let key = rsa_key(1024);
    let serial = store.add_key(&TokenKind::User, "asymmetric", "mykey", Some(key.clone()));
    store.add_key(&TokenKind::User, "user", "a password", None);
    let cfg = Config {
        named_keyrings: named.iter().map(|s| s.to_string()).collect(),
    };
    let m = Module::new(store.clone(), &cfg);
    Fixture {
        store,
        m,
        key,
        serial,
    }
}

const USER: CK_SLOT_ID = 1;

fn class(c: CK_OBJECT_CLASS) -> (CK_ATTRIBUTE_TYPE, Vec<u8>) {
    (CKA_CLASS, c.to_ne_bytes().to_vec())
}

fn find(
    m: &Module,
    h: CK_SESSION_HANDLE,
    t: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
) -> Vec<CK_OBJECT_HANDLE> {
    m.find_init(h, t).unwrap();
    let mut all = Vec::new();
    loop {
        let got = m.find_next(h, 1).unwrap();
        if got.is_empty() {
            break;
        }
        all.extend(got);
    }
    m.find_final(h).unwrap();
    all
}

fn value(v: &AttrValue) -> &[u8] {
    match v {
        AttrValue::Value(v) => v,
        other => panic!("expected a value, got {other:?}"),
    }
}

#[test]
fn tokens_map_to_keyrings() {
    let f = fixture(&["work"]);
    let labels: Vec<_> = f.m.tokens().iter().map(|t| t.label.as_str()).collect();
    assert_eq!(labels, ["session", "user", "persistent", "process", "work"]);
    // No persistent keyring and no "work" keyring in this store yet.
    assert_eq!(f.m.slot_list(true), vec![0, 1, 3]);
    assert_eq!(f.m.slot_list(false), vec![0, 1, 2, 3, 4]);
    assert_eq!(f.m.token_info(2).err().unwrap().rv, CKR_TOKEN_NOT_PRESENT);
    assert_eq!(f.m.token_info(9).err().unwrap().rv, CKR_SLOT_ID_INVALID);
    // A named keyring created later appears without re-initialising.
    f.store.add_keyring(&TokenKind::Named("work".into()));
    assert_eq!(f.m.slot_list(true), vec![0, 1, 3, 4]);
    let serials: Vec<_> = f.m.tokens().iter().map(|t| t.serial.clone()).collect();
    assert!(serials.iter().all(|s| s.len() <= 16));
    assert_eq!(
        serials.len(),
        serials
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len()
    );
}

#[test]
fn each_rsa_key_is_a_private_and_public_object() {
    let f = fixture(&[]);
    let h = f.m.open_session(USER, CKF_SERIAL_SESSION).unwrap();
    let all = find(&f.m, h, &[]);
    assert_eq!(all.len(), 2, "the user key of type 'user' must not appear");
    let privs = find(&f.m, h, &[class(CKO_PRIVATE_KEY)]);
    let pubs = find(&f.m, h, &[class(CKO_PUBLIC_KEY)]);
    assert_eq!((privs.len(), pubs.len()), (1, 1));
    let types = [CKA_ID, CKA_MODULUS, CKA_PUBLIC_EXPONENT, CKA_LABEL];
    let a = f.m.attributes(h, privs[0], &types).unwrap();
    let b = f.m.attributes(h, pubs[0], &types).unwrap();
    assert_eq!(a, b);
    assert_eq!(value(&a[1]), f.key.n().to_bytes_be());
    assert_eq!(value(&a[2]), f.key.e().to_bytes_be());
    assert_eq!(value(&a[3]), b"mykey");
    // Find by the CKA_ID the way OpenSSH pairs public and private keys.
    let by_id = find(
        &f.m,
        h,
        &[class(CKO_PRIVATE_KEY), (CKA_ID, value(&a[0]).to_vec())],
    );
    assert_eq!(by_id, privs);
    // Handles are stable across searches.
    assert_eq!(find(&f.m, h, &[class(CKO_PRIVATE_KEY)]), privs);
    // Objects of another token are not visible from this session.
    let hs = f.m.open_session(0, CKF_SERIAL_SESSION).unwrap();
    assert_eq!(
        f.m.attributes(hs, privs[0], &[CKA_ID]).err().unwrap().rv,
        CKR_OBJECT_HANDLE_INVALID
    );
}

#[test]
fn find_state_is_enforced() {
    let f = fixture(&[]);
    let h = f.m.open_session(USER, CKF_SERIAL_SESSION).unwrap();
    assert_eq!(
        f.m.find_next(h, 1).err().unwrap().rv,
        CKR_OPERATION_NOT_INITIALIZED
    );
    f.m.find_init(h, &[]).unwrap();
    assert_eq!(
        f.m.find_init(h, &[]).err().unwrap().rv,
        CKR_OPERATION_ACTIVE
    );
    assert_eq!(f.m.find_next(h, 10).unwrap().len(), 2);
    assert!(f.m.find_next(h, 10).unwrap().is_empty());
    f.m.find_final(h).unwrap();
    assert_eq!(
        f.m.find_final(h).err().unwrap().rv,
        CKR_OPERATION_NOT_INITIALIZED
    );
}

fn private_handle(f: &Fixture, h: CK_SESSION_HANDLE) -> CK_OBJECT_HANDLE {
    find(&f.m, h, &[class(CKO_PRIVATE_KEY)])[0]
}

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

#[test]
fn login_without_pin_changes_only_the_session_state() {
    let f = fixture(&[]);
    let rw =
        f.m.open_session(USER, CKF_SERIAL_SESSION | CKF_RW_SESSION)
            .unwrap();
    let ro = f.m.open_session(USER, CKF_SERIAL_SESSION).unwrap();
    assert_eq!(f.m.session_info(rw).unwrap().state, CKS_RW_PUBLIC_SESSION);
    assert_eq!(f.m.session_info(ro).unwrap().state, CKS_RO_PUBLIC_SESSION);
    assert_eq!(f.m.logout(rw).err().unwrap().rv, CKR_USER_NOT_LOGGED_IN);
    f.m.login(rw, CKU_USER).unwrap();
    assert_eq!(f.m.session_info(rw).unwrap().state, CKS_RW_USER_FUNCTIONS);
    assert_eq!(f.m.session_info(ro).unwrap().state, CKS_RO_USER_FUNCTIONS);
    assert_eq!(
        f.m.login(ro, CKU_USER).err().unwrap().rv,
        CKR_USER_ALREADY_LOGGED_IN
    );
    assert_eq!(
        f.m.login(ro, CKU_SO).err().unwrap().rv,
        CKR_USER_ANOTHER_ALREADY_LOGGED_IN
    );
    assert_eq!(f.m.login(ro, 77).err().unwrap().rv, CKR_USER_TYPE_INVALID);
    f.m.logout(ro).unwrap();
    assert_eq!(
        f.m.login(rw, CKU_SO).err().unwrap().rv,
        CKR_SESSION_READ_ONLY_EXISTS
    );
    // Objects are usable without login.
    assert_eq!(find(&f.m, ro, &[]).len(), 2);
    // Login ends with the last session.
    f.m.login(rw, CKU_USER).unwrap();
    f.m.close_session(rw).unwrap();
    f.m.close_session(ro).unwrap();
    let again = f.m.open_session(USER, CKF_SERIAL_SESSION).unwrap();
    assert_eq!(
        f.m.session_info(again).unwrap().state,
        CKS_RO_PUBLIC_SESSION
    );
}

#[test]
fn sessions_are_checked_and_handles_never_reused() {
    let f = fixture(&[]);
    assert_eq!(
        f.m.open_session(USER, 0).err().unwrap().rv,
        CKR_SESSION_PARALLEL_NOT_SUPPORTED
    );
    assert_eq!(
        f.m.open_session(2, CKF_SERIAL_SESSION).err().unwrap().rv,
        CKR_TOKEN_NOT_PRESENT
    );
    let a = f.m.open_session(USER, CKF_SERIAL_SESSION).unwrap();
    f.m.close_session(a).unwrap();
    let b = f.m.open_session(USER, CKF_SERIAL_SESSION).unwrap();
    assert_ne!(a, b);
    assert_eq!(
        f.m.close_session(a).err().unwrap().rv,
        CKR_SESSION_HANDLE_INVALID
    );
    assert_eq!(
        f.m.sign(a, None, None).err().unwrap().rv,
        CKR_SESSION_HANDLE_INVALID
    );
    let info = f.m.token_info(USER).unwrap();
    assert_eq!((info.sessions, info.rw_sessions), (1, 0));
    f.m.close_all_sessions(USER).unwrap();
    assert_eq!(
        f.m.session_info(b).err().unwrap().rv,
        CKR_SESSION_HANDLE_INVALID
    );
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
fn digests_follow_the_two_call_convention() {
    let f = fixture(&[]);
    let h = f.m.open_session(USER, CKF_SERIAL_SESSION).unwrap();
    f.m.digest_init(h, CKM_SHA256, &MechParams::None).unwrap();
    assert_eq!(f.m.digest(h, Some(b"abc"), None).unwrap(), 32);
    let mut out = [0u8; 32];
    f.m.digest(h, Some(b"abc"), Some(&mut out)).unwrap();
    assert_eq!(out.to_vec(), sha2::Sha256::digest(b"abc").to_vec());
    assert_eq!(
        f.m.digest_init(h, CKM_RSA_PKCS, &MechParams::None)
            .err()
            .unwrap()
            .rv,
        CKR_MECHANISM_INVALID
    );
}

fn full_template(k: &RsaPrivateKey) -> Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)> {
    use rsa::traits::PrivateKeyParts;
    let b = |x: &rsa::BigUint| x.to_bytes_be();
    vec![
        (CKA_CLASS, CKO_PRIVATE_KEY.to_ne_bytes().to_vec()),
        (CKA_KEY_TYPE, CKK_RSA.to_ne_bytes().to_vec()),
        (CKA_TOKEN, vec![1]),
        (CKA_LABEL, b"imported".to_vec()),
        (CKA_ID, vec![0x01]),
        (CKA_MODULUS, b(k.n())),
        (CKA_PUBLIC_EXPONENT, b(k.e())),
        (CKA_PRIVATE_EXPONENT, b(k.d())),
        (CKA_PRIME_1, b(&k.primes()[0])),
        (CKA_PRIME_2, b(&k.primes()[1])),
        (CKA_EXPONENT_1, b(k.dp().unwrap())),
        (CKA_EXPONENT_2, b(k.dq().unwrap())),
        (
            CKA_COEFFICIENT,
            k.qinv().unwrap().to_biguint().unwrap().to_bytes_be(),
        ),
    ]
}

fn borrow(t: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)]) -> Vec<(CK_ATTRIBUTE_TYPE, &[u8])> {
    t.iter().map(|(a, v)| (*a, v.as_slice())).collect()
}

#[test]
fn created_keys_sign_carry_their_id_and_can_be_destroyed() {
    let f = fixture(&[]);
    let ro = f.m.open_session(USER, CKF_SERIAL_SESSION).unwrap();
    let h =
        f.m.open_session(USER, CKF_SERIAL_SESSION | CKF_RW_SESSION)
            .unwrap();
    let key = rsa_key(1024);
    let t = full_template(&key);
    assert_eq!(
        f.m.create_object(ro, &borrow(&t)).err().unwrap().rv,
        CKR_SESSION_READ_ONLY
    );
    let private = f.m.create_object(h, &borrow(&t)).unwrap();
    // The same label again would make the kernel replace the key: refused.
    assert_eq!(
        f.m.create_object(h, &borrow(&t)).err().unwrap().rv,
        CKR_ATTRIBUTE_VALUE_INVALID
    );
    let a =
        f.m.attributes(h, private, &[CKA_ID, CKA_LABEL, CKA_LOCAL, CKA_MODULUS])
            .unwrap();
    assert_eq!(a[0], AttrValue::Value(vec![1]));
    assert_eq!(a[1], AttrValue::Value(b"imported".to_vec()));
    assert_eq!(a[2], AttrValue::Value(vec![0]));
    assert_eq!(value(&a[3]), key.n().to_bytes_be());
    // The chosen CKA_ID is stored beside the key for other processes.
    let meta = f.store.user_payloads();
    assert_eq!(meta.len(), 1);
    assert!(meta[0].0.starts_with("keyring-pkcs11:"));
    let m2 = Module::new(f.store.clone(), &Config::default());
    let h2 = m2.open_session(USER, CKF_SERIAL_SESSION).unwrap();
    let by_id = find(&m2, h2, &[class(CKO_PRIVATE_KEY), (CKA_ID, vec![1])]);
    assert_eq!(
        by_id.len(),
        1,
        "another module instance finds it by its CKA_ID"
    );
    // It signs with the kernel (mock) key.
    let mut sig = [0u8; 128];
    f.m.op_init(
        h,
        OpKind::Sign,
        CKM_SHA256_RSA_PKCS,
        &MechParams::None,
        private,
    )
    .unwrap();
    f.m.sign(h, Some(b"imported"), Some(&mut sig)).unwrap();
    key.to_public_key()
        .verify(
            Pkcs1v15Sign::new::<sha2::Sha256>(),
            &sha2::Sha256::digest(b"imported"),
            &sig,
        )
        .unwrap();
    // The public key of the same modulus is that key's public object.
    let pubt: Vec<_> = t
        .iter()
        .filter(|(a, _)| [CKA_MODULUS, CKA_PUBLIC_EXPONENT, CKA_KEY_TYPE].contains(a))
        .cloned()
        .chain([(CKA_CLASS, CKO_PUBLIC_KEY.to_ne_bytes().to_vec())])
        .collect();
    let public = f.m.create_object(h, &borrow(&pubt)).unwrap();
    assert_eq!(
        f.m.attributes(h, public, &[CKA_ID]).unwrap()[0],
        AttrValue::Value(vec![1])
    );
    // CKA_ID can change; CKA_LABEL cannot.
    f.m.set_attributes(h, private, &[(CKA_ID, &[7, 7][..])])
        .unwrap();
    assert_eq!(find(&m2, h2, &[(CKA_ID, vec![7, 7])]).len(), 2);
    assert_eq!(
        f.m.set_attributes(h, private, &[(CKA_LABEL, &b"other"[..])])
            .err()
            .unwrap()
            .rv,
        CKR_ATTRIBUTE_READ_ONLY
    );
    // Destroying the public object alone is refused; the private one goes with its metadata.
    assert_eq!(
        f.m.destroy_object(h, public).err().unwrap().rv,
        CKR_ACTION_PROHIBITED
    );
    f.m.destroy_object(h, private).unwrap();
    assert!(f.store.user_payloads().is_empty());
    assert!(find(&m2, h2, &[(CKA_LABEL, b"imported".to_vec())]).is_empty());
    assert_eq!(
        f.m.attributes(h, private, &[CKA_ID]).err().unwrap().rv,
        CKR_OBJECT_HANDLE_INVALID
    );
}

#[test]
fn inconsistent_or_unstorable_templates_are_refused_and_leave_nothing() {
    let f = fixture(&[]);
    let h =
        f.m.open_session(USER, CKF_SERIAL_SESSION | CKF_RW_SESSION)
            .unwrap();
    let before = find(&f.m, h, &[]).len();
    let key = rsa_key(1024);
    let other = rsa_key(1024);
    let mut t = full_template(&key);
    // Another key's modulus: the halves disagree. (The mock refuses it at
    // load time; the real kernel loads it and our pair check refuses it —
    // tested in the lab.)
    t.iter_mut().find(|(a, _)| *a == CKA_MODULUS).unwrap().1 = other.n().to_bytes_be();
    assert!(f.m.create_object(h, &borrow(&t)).is_err());
    let mut t = full_template(&key);
    t.push((CKA_EXTRACTABLE, vec![1]));
    assert_eq!(
        f.m.create_object(h, &borrow(&t)).err().unwrap().rv,
        CKR_ATTRIBUTE_VALUE_INVALID
    );
    let t: Vec<_> = full_template(&key)
        .into_iter()
        .filter(|(a, _)| *a != CKA_PRIVATE_EXPONENT)
        .collect();
    assert_eq!(
        f.m.create_object(h, &borrow(&t)).err().unwrap().rv,
        CKR_TEMPLATE_INCOMPLETE
    );
    let pubt = vec![
        (CKA_CLASS, CKO_PUBLIC_KEY.to_ne_bytes().to_vec()),
        (CKA_MODULUS, other.n().to_bytes_be()),
        (CKA_PUBLIC_EXPONENT, vec![1, 0, 1]),
    ];
    assert_eq!(
        f.m.create_object(h, &borrow(&pubt)).err().unwrap().rv,
        CKR_TEMPLATE_INCONSISTENT
    );
    assert_eq!(find(&f.m, h, &[]).len(), before);
}

#[test]
fn a_full_key_quota_is_device_memory_and_leaves_nothing_half_made() {
    let f = fixture(&[]);
    let h =
        f.m.open_session(USER, CKF_SERIAL_SESSION | CKF_RW_SESSION)
            .unwrap();
    let before = f.store.keys.lock().len();
    let t = full_template(&rsa_key(1024));
    // No room at all: the key is refused.
    *f.store.add_quota.lock() = Some(0);
    assert_eq!(
        f.m.create_object(h, &borrow(&t)).err().unwrap().rv,
        CKR_DEVICE_MEMORY
    );
    // Room for the key but not for its metadata record (CKA_ID): the key
    // that did go in is taken out again.
    *f.store.add_quota.lock() = Some(1);
    assert_eq!(
        f.m.create_object(h, &borrow(&t)).err().unwrap().rv,
        CKR_DEVICE_MEMORY
    );
    let linked = f.store.keyrings.lock()["@u"].1.clone();
    assert_eq!(linked.len(), 2, "only the fixture's keys: {linked:?}");
    assert_eq!(
        f.store.keys.lock().len(),
        before + 1,
        "one key made and unlinked"
    );
    // The existing key still signs.
    *f.store.add_quota.lock() = None;
    let o = private_handle(&f, h);
    f.m.op_init(h, OpKind::Sign, CKM_SHA256_RSA_PKCS, &MechParams::None, o)
        .unwrap();
    let mut sig = vec![0u8; 128];
    assert_eq!(f.m.sign(h, Some(b"still"), Some(&mut sig)).unwrap(), 128);
}

#[test]
fn generated_keys_are_local_and_never_extractable() {
    let f = fixture(&[]);
    let h =
        f.m.open_session(USER, CKF_SERIAL_SESSION | CKF_RW_SESSION)
            .unwrap();
    let bits = 2048 as CK_ULONG;
    let pubt = vec![
        (CKA_MODULUS_BITS, bits.to_ne_bytes().to_vec()),
        (CKA_LABEL, b"gen".to_vec()),
    ];
    let privt = vec![(CKA_ID, vec![9])];
    let (public, private) =
        f.m.generate_key_pair(
            h,
            CKM_RSA_PKCS_KEY_PAIR_GEN,
            &MechParams::None,
            &borrow(&pubt),
            &borrow(&privt),
        )
        .unwrap();
    let a =
        f.m.attributes(
            h,
            private,
            &[
                CKA_LOCAL,
                CKA_ALWAYS_SENSITIVE,
                CKA_NEVER_EXTRACTABLE,
                CKA_EXTRACTABLE,
                CKA_ID,
                CKA_LABEL,
                CKA_KEY_GEN_MECHANISM,
            ],
        )
        .unwrap();
    assert_eq!(
        a[..4],
        [
            AttrValue::Value(vec![1]),
            AttrValue::Value(vec![1]),
            AttrValue::Value(vec![1]),
            AttrValue::Value(vec![0])
        ]
    );
    assert_eq!(a[4], AttrValue::Value(vec![9]));
    assert_eq!(a[5], AttrValue::Value(b"gen".to_vec()));
    assert_eq!(
        a[6],
        AttrValue::Value(CKM_RSA_PKCS_KEY_PAIR_GEN.to_ne_bytes().to_vec())
    );
    assert_eq!(
        f.m.attributes(h, public, &[CKA_MODULUS_BITS]).unwrap()[0],
        AttrValue::Value(bits.to_ne_bytes().to_vec())
    );
    let odd = vec![(CKA_MODULUS_BITS, (2000 as CK_ULONG).to_ne_bytes().to_vec())];
    assert_eq!(
        f.m.generate_key_pair(
            h,
            CKM_RSA_PKCS_KEY_PAIR_GEN,
            &MechParams::None,
            &borrow(&odd),
            &[]
        )
        .err()
        .unwrap()
        .rv,
        CKR_KEY_SIZE_RANGE
    );
    assert_eq!(
        f.m.generate_key_pair(h, CKM_RSA_PKCS, &MechParams::None, &borrow(&pubt), &[])
            .err()
            .unwrap()
            .rv,
        CKR_MECHANISM_INVALID
    );
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
fn metadata_records_apply_to_their_key_only_and_bad_ones_are_ignored() {
    let f = fixture(&[]);
    // A record whose name is not a hex key ID (written by hand, or by a
    // future version) must neither become an object nor stop the scan.
    f.store
        .add_key(&TokenKind::User, "user", "keyring-pkcs11:not-hex!", None);
    let other = rsa_key(1024);
    f.store
        .add_key(&TokenKind::User, "asymmetric", "other", Some(other.clone()));
    let h =
        f.m.open_session(USER, CKF_SERIAL_SESSION | CKF_RW_SESSION)
            .unwrap();
    assert_eq!(find(&f.m, h, &[]).len(), 4, "two keys, two objects each");
    let mine = find(
        &f.m,
        h,
        &[class(CKO_PRIVATE_KEY), (CKA_LABEL, b"mykey".to_vec())],
    );
    assert_eq!(mine.len(), 1);
    f.m.set_attributes(h, mine[0], &[(CKA_ID, &[9][..])])
        .unwrap();
    // Another process (a fresh module on the same keyring) sees the new ID on
    // that key and the derived ID on the other.
    let m2 = Module::new(f.store.clone(), &Config::default());
    let h2 = m2.open_session(USER, CKF_SERIAL_SESSION).unwrap();
    assert_eq!(find(&m2, h2, &[(CKA_ID, vec![9])]).len(), 2);
    let derived = RsaPublic {
        modulus: other.n().to_bytes_be(),
        exponent: other.e().to_bytes_be(),
    }
    .key_id();
    let theirs = find(&m2, h2, &[(CKA_ID, derived)]);
    assert_eq!(theirs.len(), 2);
    assert_eq!(find(&m2, h2, &[]).len(), 4);
    // Back to the derived ID: the record goes, and both modules follow.
    let derived_mine = RsaPublic {
        modulus: f.key.n().to_bytes_be(),
        exponent: f.key.e().to_bytes_be(),
    }
    .key_id();
    f.m.set_attributes(h, mine[0], &[(CKA_ID, &derived_mine[..])])
        .unwrap();
    assert!(
        f.store
            .user_payloads()
            .iter()
            .all(|(d, _)| d.contains("not-hex"))
    );
    assert!(find(&m2, h2, &[(CKA_ID, vec![9])]).is_empty());
    assert_eq!(find(&m2, h2, &[(CKA_ID, derived_mine)]).len(), 2);
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
