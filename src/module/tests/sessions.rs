//! Sessions and login.

use super::*;

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
