//! PKCS#11 §5.6, session management, and login (there is no PIN).

use super::{cryptoki_fn, module, out};
use cryptoki_sys::*;
use std::ffi::c_void;

cryptoki_fn!(C_OpenSession(slot_id: CK_SLOT_ID, flags: CK_FLAGS, _app: *mut c_void, _notify: CK_NOTIFY, ph_session: *mut CK_SESSION_HANDLE) {
    let m = module()?;
    let o = out(ph_session)?;
    *o = m.open_session(slot_id, flags)?;
    Ok(())
});

cryptoki_fn!(C_CloseSession(h: CK_SESSION_HANDLE) {
    module()?.close_session(h)
});

cryptoki_fn!(C_CloseAllSessions(slot_id: CK_SLOT_ID) {
    module()?.close_all_sessions(slot_id)
});

cryptoki_fn!(C_GetSessionInfo(h: CK_SESSION_HANDLE, p_info: *mut CK_SESSION_INFO) {
    let m = module()?;
    let o = out(p_info)?;
    let s = m.session_info(h)?;
    *o = CK_SESSION_INFO { slotID: s.slot, state: s.state, flags: s.flags, ulDeviceError: 0 };
    Ok(())
});

// The PIN is deliberately not read: there is none (see `Module::login`).
cryptoki_fn!(C_Login(h: CK_SESSION_HANDLE, user: CK_USER_TYPE, _pin: *mut CK_UTF8CHAR, _pin_len: CK_ULONG) {
    module()?.login(h, user)
});

cryptoki_fn!(C_Logout(h: CK_SESSION_HANDLE) {
    module()?.logout(h)
});
