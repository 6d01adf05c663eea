//! Sessions and login. There is no PIN: the kernel's key permissions are the
//! access control, so login changes the session state and nothing else.

use super::{Module, NEXT_SESSION, SessionEntry, next_handle};
use crate::error::{Error, Result};
use crate::kernel::keyctl::Serial;
use crate::sync::Mutex;
use cryptoki_sys::*;
use std::sync::Arc;

pub struct SessionInfo {
    pub slot: CK_SLOT_ID,
    pub state: CK_STATE,
    pub flags: CK_FLAGS,
}

impl Module {
    pub fn open_session(&self, slot: CK_SLOT_ID, flags: CK_FLAGS) -> Result<CK_SESSION_HANDLE> {
        if flags & CKF_SERIAL_SESSION == 0 {
            return Err(Error::new(CKR_SESSION_PARALLEL_NOT_SUPPORTED));
        }
        let i = self.present_slot(slot)?;
        let rw = flags & CKF_RW_SESSION != 0;
        let mut st = self.state.lock();
        if !rw && st.login[i] == Some(CKU_SO) {
            return Err(Error::new(CKR_SESSION_READ_WRITE_SO_EXISTS));
        }
        let h = next_handle(&NEXT_SESSION);
        st.sessions.insert(
            h,
            Arc::new(SessionEntry {
                slot: i,
                rw,
                ops: Mutex::default(),
            }),
        );
        Ok(h)
    }

    pub fn close_session(&self, h: CK_SESSION_HANDLE) -> Result<()> {
        let slot = {
            let mut st = self.state.lock();
            let s = st
                .sessions
                .remove(&h)
                .ok_or(Error::new(CKR_SESSION_HANDLE_INVALID))?;
            // Login state belongs to the application's sessions on a token
            // and ends with the last of them.
            if !st.sessions.values().any(|o| o.slot == s.slot) {
                st.login[s.slot] = None;
            }
            s.slot
        };
        self.end_session_objects(&[(h, slot)]);
        Ok(())
    }

    pub fn close_all_sessions(&self, slot: CK_SLOT_ID) -> Result<()> {
        let i = self.slot(slot)?;
        let closed: Vec<(CK_SESSION_HANDLE, usize)> = {
            let mut st = self.state.lock();
            let closed = st
                .sessions
                .iter()
                .filter(|(_, s)| s.slot == i)
                .map(|(h, _)| (*h, i))
                .collect();
            st.sessions.retain(|_, s| s.slot != i);
            st.login[i] = None;
            closed
        };
        self.end_session_objects(&closed);
        Ok(())
    }

    pub fn session_info(&self, h: CK_SESSION_HANDLE) -> Result<SessionInfo> {
        let st = self.state.lock();
        let s = st.session(h)?;
        let state = match (st.login[s.slot], s.rw) {
            (Some(CKU_SO), _) => CKS_RW_SO_FUNCTIONS,
            (Some(_), true) => CKS_RW_USER_FUNCTIONS,
            (Some(_), false) => CKS_RO_USER_FUNCTIONS,
            (None, true) => CKS_RW_PUBLIC_SESSION,
            (None, false) => CKS_RO_PUBLIC_SESSION,
        };
        let flags = CKF_SERIAL_SESSION | if s.rw { CKF_RW_SESSION } else { 0 };
        Ok(SessionInfo {
            slot: s.slot as CK_SLOT_ID,
            state,
            flags,
        })
    }

    /// There is no PIN: the kernel's key permissions are the access control.
    /// Login is accepted with any PIN (or none) so that tools which insist on
    /// logging in (`pkcs11-tool --login`) get the logged-in session they expect;
    /// it changes the session state and nothing else.
    pub fn login(&self, h: CK_SESSION_HANDLE, user: CK_USER_TYPE) -> Result<()> {
        let mut st = self.state.lock();
        let s = st.session(h)?;
        match user {
            CKU_USER | CKU_SO => {}
            CKU_CONTEXT_SPECIFIC => {
                // Re-authentication for the running operation of a key with
                // CKA_ALWAYS_AUTHENTICATE (there is no PIN to check).
                let mut ops = s.ops.lock();
                let mut any = false;
                for op in ops.crypt.iter_mut().flatten() {
                    op.needs_login = false;
                    any = true;
                }
                return if any {
                    Ok(())
                } else {
                    Err(Error::new(CKR_OPERATION_NOT_INITIALIZED))
                };
            }
            _ => return Err(Error::new(CKR_USER_TYPE_INVALID)),
        }
        match st.login[s.slot] {
            Some(u) if u == user => return Err(Error::new(CKR_USER_ALREADY_LOGGED_IN)),
            Some(_) => return Err(Error::new(CKR_USER_ANOTHER_ALREADY_LOGGED_IN)),
            None => {}
        }
        if user == CKU_SO && st.sessions.values().any(|o| o.slot == s.slot && !o.rw) {
            return Err(Error::new(CKR_SESSION_READ_ONLY_EXISTS));
        }
        st.login[s.slot] = Some(user);
        Ok(())
    }

    pub fn logout(&self, h: CK_SESSION_HANDLE) -> Result<()> {
        let mut st = self.state.lock();
        let s = st.session(h)?;
        if st.login[s.slot].take().is_none() {
            return Err(Error::new(CKR_USER_NOT_LOGGED_IN));
        }
        Ok(())
    }

    /// The token's keyring and whether the session may change it.
    /// The keyring a session may write a token object (`token`) or a
    /// session object into: the token's, which a read-only session may not
    /// change, or the module's own for session objects, which any session
    /// may make (PKCS#11 §4.3).
    pub(super) fn writable(
        &self,
        h: CK_SESSION_HANDLE,
        token: bool,
    ) -> Result<(Arc<SessionEntry>, Serial)> {
        let s = self.state.lock().session(h)?;
        if !token {
            self.keyring(s.slot)
                .ok_or(Error::new(CKR_TOKEN_NOT_PRESENT))?;
            let ring = self.session_ring_for_write(s.slot)?;
            return Ok((s, ring));
        }
        if !s.rw {
            return Err(Error::new(CKR_SESSION_READ_ONLY));
        }
        let keyring = self
            .keyring(s.slot)
            .ok_or(Error::new(CKR_TOKEN_NOT_PRESENT))?;
        Ok((s, keyring))
    }
}
