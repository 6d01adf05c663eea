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
