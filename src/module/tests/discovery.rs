//! What a keyring holds: metadata records and their keys.

use super::*;

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
