//! Objects as a session sees them: the handle table (a handle names one
//! object of one token, for good), searches, and attribute reads, which are
//! answered from the cache and never touch the kernel.

use super::discovery::{Known, Scanned};
use super::{Module, ObjKey, SessionEntry};
use crate::error::{Error, Result};
use crate::kernel::keyctl::Serial;
use crate::object::{self, AttrValue, CertInfo, Class, KeyInfo};
use cryptoki_sys::*;
use std::sync::Arc;

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
            for k in &keys {
                for class in [Class::Private, Class::Public] {
                    if object::matches(k, class, template) {
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
    pub(super) fn object(
        &self,
        h: CK_SESSION_HANDLE,
        obj: CK_OBJECT_HANDLE,
    ) -> Result<(Arc<SessionEntry>, Arc<KeyInfo>, Class)> {
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
        match self.keys.lock().get(&ok.serial) {
            Some(Known::Key(k)) => Ok((s, k.clone(), ok.class)),
            _ => Err(Error::new(CKR_OBJECT_HANDLE_INVALID)),
        }
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
        let (_, key, class) = self.object(h, obj)?;
        Ok(types
            .iter()
            .map(|&t| object::attribute(&key, class, t))
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
            Some(Known::Cert(c)) => Ok(Some(c.clone())),
            _ => Err(Error::new(CKR_OBJECT_HANDLE_INVALID)),
        }
    }
}
