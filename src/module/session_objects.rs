//! Session objects (`CKA_TOKEN` false, the default of PKCS#11): keys and
//! certificates that only this application sees and that go when the
//! session that made them closes.
//!
//! They live in the kernel like every key, in a keyring of this module's own
//! per token (`keyring-pkcs11:session:<token>`), linked into the process
//! keyring: another process cannot see them through any token, and the
//! kernel destroys them with the process, however it dies. The module
//! unlinks a session's objects when it closes, and empties the keyrings at
//! `C_Finalize`.

use super::Module;
use crate::error::{Error, Result};
use crate::kernel::hints::KernelOp;
use crate::kernel::keyctl::Serial;
use crate::kernel::store::TokenKind;
use crate::log::esc;
use cryptoki_sys::*;

impl Module {
    /// The keyring of the session objects of a token, if any were made.
    pub(super) fn session_ring(&self, slot: usize) -> Option<Serial> {
        self.session_rings.lock()[slot]
    }

    /// The keyring of the session objects of a token, made on first use.
    pub(super) fn session_ring_for_write(&self, slot: usize) -> Result<Serial> {
        if let Some(r) = self.session_ring(slot) {
            return Ok(r);
        }
        let doing = || {
            format!(
                "making the keyring of session objects of token \"{}\"",
                esc(&self.tokens[slot].label)
            )
        };
        let process = self
            .store
            .resolve(&TokenKind::Process)
            .map_err(|e| Error::kernel(KernelOp::FindKeyring, e, doing()))?;
        let ring = self
            .store
            .new_keyring(
                process,
                &format!("keyring-pkcs11:session:{}", self.tokens[slot].serial),
            )
            .map_err(|e| Error::kernel(KernelOp::AddRecord, e, doing()))?;
        let mut rings = self.session_rings.lock();
        match rings[slot] {
            // Another thread made one meanwhile: use that, drop ours.
            Some(theirs) => {
                drop(rings);
                let _ = self.store.unlink(process, ring);
                Ok(theirs)
            }
            None => {
                rings[slot] = Some(ring);
                Ok(ring)
            }
        }
    }

    /// Remembers that session `h` made this key, record or certificate.
    pub(super) fn note_session_object(&self, serial: Serial, h: CK_SESSION_HANDLE) {
        self.session_objects.lock().insert(serial, h);
    }

    /// Destroys the session objects of the sessions that just closed (called
    /// after they left the session table, with no lock held).
    pub(super) fn end_session_objects(&self, closed: &[(CK_SESSION_HANDLE, usize)]) {
        if closed.is_empty() {
            return;
        }
        let gone: Vec<(Serial, usize)> = {
            let mut objects = self.session_objects.lock();
            let mut gone = Vec::new();
            objects.retain(|serial, h| match closed.iter().find(|(c, _)| c == h) {
                Some(&(_, slot)) => {
                    gone.push((*serial, slot));
                    false
                }
                None => true,
            });
            gone
        };
        for (serial, slot) in gone {
            if let Some(ring) = self.session_ring(slot) {
                let _ = self.store.unlink(ring, serial);
            }
            self.forget(serial);
        }
    }
}

impl Drop for Module {
    /// `C_Finalize`: the application's session objects go with its sessions.
    fn drop(&mut self) {
        let rings: Vec<Serial> = self
            .session_rings
            .lock()
            .iter()
            .flatten()
            .copied()
            .collect();
        for ring in rings {
            let _ = self.store.clear(ring);
        }
    }
}
