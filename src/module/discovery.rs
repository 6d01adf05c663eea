//! What a token's keyring holds: its keys, certificates and our records, and
//! the cache of what each kernel key is. Learning a key costs a few kernel
//! public operations (its public key is recovered, see `crypto::pubkey`), so
//! it is done once per key and process; what a token's records say about a
//! key is re-read at every scan (another process may have changed them) and
//! kept per token (one kernel key may be linked into several tokens).
//!
//! A record is believed only if whoever wrote it could have written it for
//! that key: its owner must be the key's owner (or root). Anyone else able to
//! link a `user` key into the keyring could otherwise change a key's
//! `CKA_ID`, forge `CKA_LOCAL`, or pair a certificate with a victim's key.

use super::Module;
use crate::crypto::pubkey;
use crate::error::{Error, Result};
use crate::kernel::hints::KernelOp;
use crate::kernel::keyctl::{Errno, KEYCTL_SUPPORTS_SIGN, Serial};
use crate::kernel::store::KeyStore;
use crate::log::esc;
use crate::object::{CertInfo, KeyInfo, KeyRecord};
use crate::records::{self, CertRecord};
use cryptoki_sys::*;
use std::collections::HashMap;
use std::sync::Arc;

/// What we learned about a kernel key, cached by serial (the kernel never
/// gives a live key's serial to another).
#[derive(Clone)]
pub(super) enum Known {
    Key(Arc<KeyInfo>),
    /// A certificate stored beside the keys, and the uid that stored it.
    Cert(Arc<CertInfo>, u32),
    /// Our record for the key with this derived ID, and the uid that wrote
    /// it; its payload is re-read at every scan.
    Record(Vec<u8>, u32),
    /// Not an RSA private key we can use (another key type, a certificate's
    /// public key, a record in a form that is not ours).
    Ignored,
}

/// What a token holds that we show: each key with this token's record of
/// it, and the certificates.
pub(super) struct Scanned {
    pub(super) keys: Vec<(Arc<KeyInfo>, Arc<KeyRecord>)>,
    pub(super) certs: Vec<Arc<CertInfo>>,
}

impl Module {
    /// Reads the token's keyring (and the keyring of this module's session
    /// objects on that token) and learns any key not seen before. Kernel
    /// calls happen here, with no lock held.
    pub(super) fn scan(&self, slot: usize) -> Result<Scanned> {
        let keyring = self
            .keyring(slot)
            .ok_or(Error::new(CKR_TOKEN_NOT_PRESENT))?;
        let mut out = Scanned {
            keys: Vec::new(),
            certs: Vec::new(),
        };
        self.scan_ring(slot, keyring, false, &mut out)?;
        if let Some(ring) = self.session_ring(slot) {
            self.scan_ring(slot, ring, true, &mut out)?;
        }
        let mut records = self.records.lock();
        for (k, r) in &out.keys {
            records.insert((slot, k.serial), r.clone());
        }
        Ok(out)
    }

    fn scan_ring(&self, slot: usize, ring: Serial, session: bool, out: &mut Scanned) -> Result<()> {
        let serials = self.store.links(ring).map_err(|e| {
            Error::kernel(
                KernelOp::ReadKeyring,
                e,
                format!(
                    "reading the keyring of token \"{}\"",
                    esc(&self.tokens[slot].label)
                ),
            )
        })?;
        let first_key = out.keys.len();
        let mut certs: Vec<(Arc<CertInfo>, u32)> = Vec::new();
        let mut metas: HashMap<Vec<u8>, (Serial, u32)> = HashMap::new();
        // One lock for the whole keyring rather than one per key: a scan of a
        // big token is mostly cache hits.
        let cached: Vec<(Serial, Option<Known>)> = {
            let keys = self.keys.lock();
            serials
                .into_iter()
                .map(|s| (s, keys.get(&s).cloned()))
                .collect()
        };
        for (serial, known) in cached {
            let known = match known {
                Some(k) => k,
                None => match learn(&*self.store, serial) {
                    Some(k) => {
                        self.keys.lock().insert(serial, k.clone());
                        k
                    }
                    // Could not look at it now (permissions, a transient
                    // error): skip without remembering, so it can appear later.
                    None => continue,
                },
            };
            match known {
                Known::Key(k) => out.keys.push((k, Arc::default())),
                Known::Cert(c, owner) => certs.push((c, owner)),
                Known::Record(derived_id, owner) => {
                    metas.insert(derived_id, (serial, owner));
                }
                Known::Ignored => {}
            }
        }
        // A certificate is believed if its writer owns the key it pairs with,
        // is root, or is this user.
        let me = crate::kernel::keyctl::uid();
        for (c, owner) in certs {
            let key_owner = out.keys[first_key..]
                .iter()
                .find(|(k, _)| k.derived_id == c.id)
                .map(|(k, _)| k.owner);
            if owner != 0 && owner != me && Some(owner) != key_owner {
                crate::log::warn(format_args!(
                    "certificate record {} (\"{}\") in token \"{}\" was written by uid {owner}, not by the owner of its key or this user: ignored",
                    c.serial,
                    esc(&c.label),
                    esc(&self.tokens[slot].label)
                ));
            } else if session {
                out.certs.push(Arc::new(CertInfo {
                    session: true,
                    ..(*c).clone()
                }));
            } else {
                out.certs.push(c);
            }
        }
        // Apply this keyring's records to its keys: another process may have
        // changed them since.
        for (k, rec) in out.keys[first_key..].iter_mut() {
            let mut r = KeyRecord {
                session,
                ..KeyRecord::default()
            };
            if let Some(&(serial, owner)) = metas.get(&k.derived_id) {
                if owner != k.owner && owner != 0 {
                    crate::log::warn(format_args!(
                        "record {serial} for key {} (\"{}\") in token \"{}\" was written by uid {owner}, not by the key's owner (uid {}): ignored",
                        k.serial,
                        esc(&k.label),
                        esc(&self.tokens[slot].label),
                        k.owner
                    ));
                } else if let Some(read) = self
                    .store
                    .read(serial)
                    .ok()
                    .and_then(|b| records::decode_key_record(&b))
                {
                    r = KeyRecord { session, ..read };
                }
            }
            *rec = Arc::new(r);
        }
        Ok(())
    }

    pub(super) fn still_linked(&self, slot: usize, serial: Serial) -> bool {
        let in_ring = |ring: Option<Serial>| match ring.map(|k| self.store.links(k)) {
            Some(Ok(links)) => links.contains(&serial),
            _ => false,
        };
        in_ring(self.keyring(slot)) || in_ring(self.session_ring(slot))
    }

    pub(super) fn forget(&self, serial: Serial) {
        self.keys.lock().remove(&serial);
    }

    /// Maps a kernel error on a key and forgets a key that is gone for good.
    /// A refusal (EACCES) right after the key was unlinked from the token's
    /// keyring means the key left the token: an invalid handle, not a
    /// permission problem.
    pub(super) fn key_error(&self, slot: usize, info: &KeyInfo, e: Errno, what: &str) -> Error {
        let doing = format!("{what} with key {} (\"{}\")", info.serial, esc(&info.label));
        let refused = matches!(e.0, libc::EACCES | libc::EPERM);
        if e.is_key_gone() || (refused && !self.still_linked(slot, info.serial)) {
            self.forget(info.serial);
            return Error::kernel_as(CKR_KEY_HANDLE_INVALID, KernelOp::UseKey, e, doing).quietly();
        }
        Error::kernel(KernelOp::UseKey, e, doing)
    }
}

/// Inspects one key. `None` means "cannot tell now": not cached.
fn learn(store: &dyn KeyStore, serial: Serial) -> Option<Known> {
    let desc = match store.describe(serial) {
        Ok(d) => d,
        Err(e) => {
            crate::log::debug(format_args!("key {serial}: cannot describe: {e}"));
            return None;
        }
    };
    if desc.key_type == "user" && desc.description.starts_with(records::CERT_PREFIX) {
        let record = store.read(serial).ok().and_then(|b| CertRecord::decode(&b));
        return match record
            .filter(|r| records::cert_named_right(&desc.description, &r.der))
            .and_then(|r| CertInfo::parse(serial, r.label, r.id, r.der))
        {
            Some(c) => Some(Known::Cert(Arc::new(c), desc.uid)),
            None => Some(Known::Ignored),
        };
    }
    if desc.key_type == "user" {
        if let Some(id) = records::meta_id(&desc.description) {
            return Some(Known::Record(id, desc.uid));
        }
    }
    if desc.key_type != "asymmetric" {
        return Some(Known::Ignored);
    }
    let q = match store.query(serial) {
        Ok(q) => q,
        Err(e) => {
            crate::log::info(format_args!(
                "key {serial} (\"{}\"): not usable: {e}",
                esc(&desc.description)
            ));
            return None;
        }
    };
    if q.supported_ops & KEYCTL_SUPPORTS_SIGN == 0 || q.max_sig_size == 0 {
        // A certificate's public key, or a non-RSA key: nothing to sign with.
        return Some(Known::Ignored);
    }
    let k = usize::from(q.max_sig_size);
    let public = pubkey::recover(q.key_size, |x| {
        let mut out = vec![0u8; k];
        let n = store.public_raw(serial, x, &mut out)?;
        out.truncate(n);
        Ok::<_, Errno>(out)
    });
    match public {
        Ok(p) => Some(Known::Key(Arc::new(KeyInfo::new(
            serial,
            desc.description,
            desc.uid,
            p,
            k,
        )))),
        // The public operation failed: the key may be usable later.
        Err(e) if e.errno().is_some() => {
            crate::log::info(format_args!(
                "key {serial} (\"{}\"): {e}",
                esc(&desc.description)
            ));
            None
        }
        Err(why) => {
            crate::log::warn(format_args!(
                "key {serial} (\"{}\") skipped: {why}",
                esc(&desc.description)
            ));
            Some(Known::Ignored)
        }
    }
}
