//! Message digests.

use super::*;

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
