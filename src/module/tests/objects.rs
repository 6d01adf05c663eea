//! Searches, handles and attributes.

use super::*;

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

#[test]
fn a_search_does_not_hand_out_an_object_destroyed_after_it_began() {
    let f = fixture(&[]);
    f.store
        .add_key(&TokenKind::User, "asymmetric", "other", Some(rsa_key(512)));
    let h =
        f.m.open_session(USER, CKF_SERIAL_SESSION | CKF_RW_SESSION)
            .unwrap();
    let mine = find(
        &f.m,
        h,
        &[class(CKO_PRIVATE_KEY), (CKA_LABEL, b"mykey".to_vec())],
    );
    assert_eq!(mine.len(), 1);
    f.m.find_init(h, &[]).unwrap();
    f.m.destroy_object(h, mine[0]).unwrap();
    // One at a time, as many clients ask: the other key's two objects, and
    // neither of the destroyed key's.
    let mut got = Vec::new();
    while let [o] = f.m.find_next(h, 1).unwrap()[..] {
        got.push(o);
    }
    f.m.find_final(h).unwrap();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(!got.contains(&mine[0]));
    for o in got {
        assert_eq!(
            value(&f.m.attributes(h, o, &[CKA_LABEL]).unwrap()[0]),
            b"other"
        );
    }
}
