//! Objects as a session sees them: the handle table (a handle names one
//! object of one token, for good), searches, and attribute reads, which are
//! answered from the cache and never touch the kernel.

use super::discovery::{Known, Scanned};
use super::{Module, ObjKey, SessionEntry};
use crate::error::{Error, Result};
use crate::kernel::keyctl::Serial;
use crate::object::{self, AttrValue, CertInfo, Class, KeyInfo, KeyRecord};
use cryptoki_sys::*;
use std::sync::Arc;

/// A key's object as a session sees it: the session, the kernel key, this
/// token's record of it, and which of its two objects.
pub(super) type KeyObject = (Arc<SessionEntry>, Arc<KeyInfo>, Arc<KeyRecord>, Class);

impl Module {
    pub(super) fn handles(
        &self,
        slot: usize,
        serial: Serial,
    ) -> Result<(CK_OBJECT_HANDLE, CK_OBJECT_HANDLE)> {
        let mut st = self.state.lock();
        let private = st.handle_for(ObjKey {
            slot,
            serial,
            class: Class::Private,
        });
        let public = st.handle_for(ObjKey {
            slot,
            serial,
            class: Class::Public,
        });
        Ok((public, private))
    }

    pub fn find_init(
        &self,
        h: CK_SESSION_HANDLE,
        template: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
    ) -> Result<()> {
        let s = self.state.lock().session(h)?;
        if s.ops.lock().find.is_some() {
            return Err(Error::new(CKR_OPERATION_ACTIVE));
        }
        let Scanned { keys, certs } = self.scan(s.slot)?;
        let mut found = Vec::new();
        {
            let mut st = self.state.lock();
            if !st.sessions.contains_key(&h) {
                return Err(Error::new(CKR_SESSION_HANDLE_INVALID));
            }
            for (k, rec) in &keys {
                for class in [Class::Private, Class::Public] {
                    if object::matches(k, rec, class, template) {
                        found.push(st.handle_for(ObjKey {
                            slot: s.slot,
                            serial: k.serial,
                            class,
                        }));
                    }
                }
            }
            for c in certs.iter().filter(|c| object::cert_matches(c, template)) {
                found.push(st.handle_for(ObjKey {
                    slot: s.slot,
                    serial: c.serial,
                    class: Class::Certificate,
                }));
            }
        }
        let mut ops = s.ops.lock();
        if ops.find.is_some() {
            return Err(Error::new(CKR_OPERATION_ACTIVE));
        }
        found.reverse(); // handed out from the end
        ops.find = Some(found);
        Ok(())
    }

    pub fn find_next(&self, h: CK_SESSION_HANDLE, max: usize) -> Result<Vec<CK_OBJECT_HANDLE>> {
        let s = self.state.lock().session(h)?;
        let mut ops = s.ops.lock();
        let list = ops
            .find
            .as_mut()
            .ok_or(Error::new(CKR_OPERATION_NOT_INITIALIZED))?;
        let n = max.min(list.len());
        let at = list.len() - n;
        let mut out = list.split_off(at);
        out.reverse();
        Ok(out)
    }

    pub fn find_final(&self, h: CK_SESSION_HANDLE) -> Result<()> {
        let s = self.state.lock().session(h)?;
        s.ops
            .lock()
            .find
            .take()
            .map(|_| ())
            .ok_or(Error::new(CKR_OPERATION_NOT_INITIALIZED))
    }

    /// Looks up an object visible to a session: one of the session's token.
    pub(super) fn object(&self, h: CK_SESSION_HANDLE, obj: CK_OBJECT_HANDLE) -> Result<KeyObject> {
        let (s, ok) = {
            let st = self.state.lock();
            let s = st.session(h)?;
            let ok = st
                .objects
                .get(&obj)
                .copied()
                .filter(|o| o.slot == s.slot)
                .ok_or(Error::new(CKR_OBJECT_HANDLE_INVALID))?;
            (s, ok)
        };
        let key = match self.keys.lock().get(&ok.serial) {
            Some(Known::Key(k)) => k.clone(),
            _ => return Err(Error::new(CKR_OBJECT_HANDLE_INVALID)),
        };
        // This token's record of the key, as of its last scan.
        let rec = self
            .records
            .lock()
            .get(&(ok.slot, ok.serial))
            .cloned()
            .unwrap_or_default();
        Ok((s, key, rec, ok.class))
    }

    pub fn attributes(
        &self,
        h: CK_SESSION_HANDLE,
        obj: CK_OBJECT_HANDLE,
        types: &[CK_ATTRIBUTE_TYPE],
    ) -> Result<Vec<AttrValue>> {
        if let Some(c) = self.cert(h, obj)? {
            return Ok(types
                .iter()
                .map(|&t| object::cert_attribute(&c, t))
                .collect());
        }
        let (_, key, rec, class) = self.object(h, obj)?;
        Ok(types
            .iter()
            .map(|&t| object::attribute(&key, &rec, class, t))
            .collect())
    }

    /// The certificate behind a handle, if it is one.
    pub(super) fn cert(
        &self,
        h: CK_SESSION_HANDLE,
        obj: CK_OBJECT_HANDLE,
    ) -> Result<Option<Arc<CertInfo>>> {
        let ok = {
            let st = self.state.lock();
            let s = st.session(h)?;
            st.objects
                .get(&obj)
                .copied()
                .filter(|o| o.slot == s.slot && o.class == Class::Certificate)
        };
        let Some(ok) = ok else { return Ok(None) };
        match self.keys.lock().get(&ok.serial) {
            Some(Known::Cert(c, _)) => Ok(Some(c.clone())),
            _ => Err(Error::new(CKR_OBJECT_HANDLE_INVALID)),
        }
    }
}
