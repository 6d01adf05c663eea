//! Tokens and slots.

use super::*;

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
fn keyrings_are_looked_up_again_at_each_use() {
    let f = fixture(&["work"]);
    let work = TokenKind::Named("work".into());
    f.store.add_keyring(&work);
    let k = rsa_key(1024);
    f.store
        .add_key(&work, "asymmetric", "first", Some(k.clone()));
    let h = f.m.open_session(4, CKF_SERIAL_SESSION).unwrap();
    assert_eq!(find(&f.m, h, &[class(CKO_PRIVATE_KEY)]).len(), 1);
    // The keyring goes: the token is absent, not broken.
    f.store.remove_keyring(&work);
    assert!(!f.m.slot_list(true).contains(&4));
    assert_eq!(
        f.m.find_init(h, &[]).err().unwrap().rv,
        CKR_TOKEN_NOT_PRESENT
    );
    assert!(f.m.slot_info(4).unwrap().removable);
    assert!(!f.m.slot_info(USER).unwrap().removable);
    // Recreated (a new serial, other keys): the token is back with them.
    f.store.add_keyring(&work);
    f.store
        .add_key(&work, "asymmetric", "second", Some(k.clone()));
    assert!(f.m.slot_list(true).contains(&4));
    let found = find(&f.m, h, &[class(CKO_PRIVATE_KEY)]);
    assert_eq!(found.len(), 1);
    assert_eq!(
        f.m.attributes(h, found[0], &[CKA_LABEL]).unwrap()[0],
        AttrValue::Value(b"second".to_vec())
    );
    // A process that joins another session keyring sees that one's keys.
    let s = f.m.open_session(0, CKF_SERIAL_SESSION).unwrap();
    assert!(find(&f.m, s, &[]).is_empty());
    f.store.add_keyring(&TokenKind::Session);
    f.store
        .add_key(&TokenKind::Session, "asymmetric", "joined", Some(k));
    assert_eq!(find(&f.m, s, &[class(CKO_PRIVATE_KEY)]).len(), 1);
}
