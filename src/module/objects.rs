//! Objects as a session sees them: the handle table (a handle names one
//! object of one token, for good), searches, and attribute reads, which are
//! answered from the cache and never touch the kernel.

use super::discovery::{KeyEntry, Known, RingView};
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
        let (s, dropped) = {
            let st = self.state.lock();
            (st.session(h)?, st.dropped)
        };
        if s.ops.lock().find.is_some() {
            return Err(Error::new(CKR_OPERATION_ACTIVE));
        }
        // What the template asks for decides how much of the token is
        // looked at: a key by class and label is asked of the kernel alone; a
        // key by class and CKA_ID is found through the last look's index,
        // checked key by key; anything else is a listing.
        let value = |t: CK_ATTRIBUTE_TYPE| template.iter().find(|(a, _)| *a == t).map(|(_, v)| v);
        let key_class = value(CKA_CLASS).is_some_and(|c| {
            c[..] == CKO_PRIVATE_KEY.to_ne_bytes() || c[..] == CKO_PUBLIC_KEY.to_ne_bytes()
        });
        let mut keys: Vec<(Arc<KeyEntry>, bool, Option<Arc<RingView>>)> = Vec::new();
        let mut certs = Vec::new();
        match (
            value(CKA_LABEL).map(|l| std::str::from_utf8(l)),
            value(CKA_ID),
        ) {
            (Some(Ok(label)), _) if key_class => {
                for (k, session) in self.scan_label(s.slot, label)? {
                    keys.push((k, session, None));
                }
            }
            (_, Some(id)) if key_class => {
                for (k, session, view) in self.scan_id(s.slot, id)? {
                    keys.push((k, session, Some(view)));
                }
            }
            (_, Some(id)) => {
                for view in self.scan(s.slot)? {
                    for k in self.keys_with_id(s.slot, &view, id) {
                        keys.push((k, view.session, Some(view.clone())));
                    }
                    certs.extend(view.certs.iter().cloned());
                }
            }
            _ => {
                for view in self.scan(s.slot)? {
                    for k in &view.keys {
                        keys.push((k.clone(), view.session, Some(view.clone())));
                    }
                    certs.extend(view.certs.iter().cloned());
                }
            }
        }
        // A search that names its key by label learns the key's public key
        // now, as its first use would (a server's find-then-sign pays the
        // same): a key whose public key cannot be learned is not found. A
        // listing by class alone learns nothing (README, Objects).
        let named = value(CKA_LABEL).is_some();
        let mut matched = Vec::new();
        for (k, session, view) in &keys {
            // Learned at most once per key, on the first class that needs
            // it: a key that cannot be learned is tried (and logged) once.
            let mut learned = None;
            let mut learn = || {
                learned
                    .get_or_insert_with(|| {
                        self.resolve(s.slot, k, *session, view.as_deref())
                            .map_err(|e| e.log("C_FindObjectsInit"))
                            .ok()
                    })
                    .clone()
            };
            for class in [Class::Private, Class::Public] {
                let hit = match quick_match(k, *session, class, template) {
                    Some(true) if named => learn().is_some(),
                    Some(hit) => hit,
                    // The template needs the public key or the record: a key
                    // that cannot be resolved now is not listed.
                    None => learn()
                        .is_some_and(|(info, rec)| object::matches(&info, &rec, class, template)),
                };
                if hit {
                    matched.push((k.serial, class));
                }
            }
        }
        let mut found = Vec::new();
        let mut certs: Vec<_> = certs
            .into_iter()
            .filter(|c| object::cert_matches(c, template))
            .collect();
        let mut dropped = dropped;
        loop {
            let mut st = self.state.lock();
            if !st.sessions.contains_key(&h) {
                return Err(Error::new(CKR_SESSION_HANDLE_INVALID));
            }
            if st.dropped != dropped {
                // An object was destroyed (or found gone) while this search
                // looked: a handle made now for it would be a live handle of
                // a dead object. Which are still known is asked with the
                // state unlocked (the two locks are never nested).
                dropped = st.dropped;
                drop(st);
                let known = self.keys.lock();
                matched.retain(|(serial, _)| known.contains_key(serial));
                certs.retain(|c| known.contains_key(&c.serial));
                continue;
            }
            for (serial, class) in matched {
                found.push(st.handle_for(ObjKey {
                    slot: s.slot,
                    serial,
                    class,
                }));
            }
            for c in certs {
                found.push(st.handle_for(ObjKey {
                    slot: s.slot,
                    serial: c.serial,
                    class: Class::Certificate,
                }));
            }
            break;
        }
        let mut ops = s.ops.lock();
        if ops.find.is_some() {
            return Err(Error::new(CKR_OPERATION_ACTIVE));
        }
        found.reverse(); // handed out from the end
        ops.find = Some(found);
        ops.searches += 1;
        Ok(())
    }

    pub fn find_next(&self, h: CK_SESSION_HANDLE, max: usize) -> Result<Vec<CK_OBJECT_HANDLE>> {
        let s = self.state.lock().session(h)?;
        let mut out = Vec::new();
        let mut search = None;
        // The handles were found at C_FindObjectsInit: one destroyed since
        // (by this process) is dead and not handed out. The two locks are
        // taken in turn, never one inside the other.
        loop {
            let batch = {
                let mut ops = s.ops.lock();
                let this = ops.searches;
                let list = match (ops.find.as_mut(), search) {
                    (Some(list), None) => list,
                    (Some(list), Some(first)) if first == this => list,
                    // Another thread ended this search (and perhaps began
                    // another) between two batches: what was taken is the
                    // answer.
                    (_, Some(_)) => return Ok(out),
                    (None, None) => return Err(Error::new(CKR_OPERATION_NOT_INITIALIZED)),
                };
                search = Some(this);
                let n = (max - out.len()).min(list.len());
                let at = list.len() - n;
                let mut batch = list.split_off(at);
                batch.reverse();
                batch
            };
            if batch.is_empty() {
                return Ok(out);
            }
            let st = self.state.lock();
            out.extend(batch.into_iter().filter(|o| st.objects.contains_key(o)));
            if out.len() == max {
                return Ok(out);
            }
        }
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
        let session = self.session_objects.lock().contains_key(&ok.serial);
        // The records of the token's last full look (the listing that
        // handed out this handle, usually): where one caches this key's
        // public key, a key first read through its handle is checked (one
        // public operation) instead of recovered (a few, and a gcd) — what
        // a client that lists every key and reads each one's CKA_MODULUS
        // pays per key.
        let view = self.views.lock()[ok.slot][usize::from(session)].clone();
        let (key, rec) = match view {
            Some(v) => self.resolve_ahead(ok.slot, &key, session, &v)?,
            None => self.resolve(ok.slot, &key, session, None)?,
        };
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

/// Whether a key's object matches a template, if that can be told without
/// its public key or record (class, label, token, key type); `None` if not.
fn quick_match(
    k: &KeyEntry,
    session: bool,
    class: Class,
    template: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
) -> Option<bool> {
    let b = |v: bool| vec![v as CK_BBOOL];
    let object_class = match class {
        Class::Private => CKO_PRIVATE_KEY,
        _ => CKO_PUBLIC_KEY,
    };
    let mut all = true;
    for (t, want) in template {
        let hit = match *t {
            CKA_CLASS => want[..] == object_class.to_ne_bytes(),
            CKA_LABEL => want == k.label.as_bytes(),
            CKA_TOKEN => *want == b(!session),
            CKA_KEY_TYPE => want[..] == CKK_RSA.to_ne_bytes(),
            _ => return None,
        };
        all &= hit;
    }
    Some(all)
}
