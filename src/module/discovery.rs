//! What a token's keyring holds: its keys, certificates and our metadata
//! records, and the cache of what each kernel key is. Learning a key costs a
//! few kernel public operations (its public key is recovered, see
//! `crypto::pubkey`), so it is done once per key and process.

use super::Module;
use crate::crypto::pubkey;
use crate::error::{Error, Result};
use crate::kernel::hints::KernelOp;
use crate::kernel::keyctl::{Errno, KEYCTL_SUPPORTS_SIGN, Serial};
use crate::kernel::store::KeyStore;
use crate::object::{CertInfo, KeyInfo};
use crate::records::{self, CertRecord, Meta};
use cryptoki_sys::*;
use std::collections::HashMap;
use std::sync::Arc;

/// What we learned about a kernel key. Building a `KeyInfo` costs a few
/// public-key operations (see `pubkey`), so it is done once per key and
/// cached by serial (the kernel never gives a live key's serial to another).
#[derive(Clone)]
pub(super) enum Known {
    Key(Arc<KeyInfo>),
    /// A certificate stored beside the keys.
    Cert(Arc<CertInfo>),
    /// Our metadata record for the key with this derived ID (see
    /// `records::Meta`); its payload is re-read at every scan. Kept as
    /// bytes so that matching it to a key needs no per-key formatting.
    Meta(Vec<u8>),
    /// Not an RSA private key we can use (another key type, a certificate).
    Ignored,
}

/// What a token's keyring holds that we show.
pub(super) struct Scanned {
    pub(super) keys: Vec<Arc<KeyInfo>>,
    pub(super) certs: Vec<Arc<CertInfo>>,
}

impl Module {
    /// Reads the token's keyring and learns any key not seen before. Kernel
    /// calls happen here, with no lock held.
    pub(super) fn scan(&self, slot: usize) -> Result<Scanned> {
        let keyring = self
            .keyring(slot)
            .ok_or(Error::new(CKR_TOKEN_NOT_PRESENT))?;
        let serials = self.store.links(keyring).map_err(|e| {
            Error::kernel(
                KernelOp::ReadKeyring,
                e,
                format!(
                    "reading the keyring of token \"{}\"",
                    self.tokens[slot].label
                ),
            )
        })?;
        let mut out = Vec::with_capacity(serials.len());
        let mut metas: HashMap<Vec<u8>, Meta> = HashMap::new();
        let mut certs = Vec::new();
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
                Known::Key(k) => out.push(k),
                Known::Cert(c) => certs.push(c),
                Known::Meta(derived_id) => {
                    if let Some(m) = self.store.read(serial).ok().and_then(|b| Meta::decode(&b)) {
                        metas.insert(derived_id, m);
                    }
                }
                Known::Ignored => {}
            }
        }
        // Apply the metadata: another process may have set a CKA_ID since.
        for k in out.iter_mut() {
            let m = if metas.is_empty() {
                Meta::default() // the usual case: no hashing per key
            } else {
                metas.remove(&k.derived_id).unwrap_or_default()
            };
            let id = m.id.as_deref().unwrap_or(&k.derived_id);
            if k.id != id || k.local != m.local {
                let updated = Arc::new(KeyInfo {
                    id: id.to_vec(),
                    local: m.local,
                    ..(**k).clone()
                });
                self.keys
                    .lock()
                    .insert(k.serial, Known::Key(updated.clone()));
                *k = updated;
            }
        }
        Ok(Scanned { keys: out, certs })
    }

    pub(super) fn still_linked(&self, slot: usize, serial: Serial) -> bool {
        match self.keyring(slot).map(|k| self.store.links(k)) {
            Some(Ok(links)) => links.contains(&serial),
            _ => false,
        }
    }

    pub(super) fn forget(&self, serial: Serial) {
        self.keys.lock().remove(&serial);
    }

    /// Maps a kernel error on a key and forgets a key that is gone for good.
    /// A refusal (EACCES) right after the key was unlinked from the token's
    /// keyring means the key left the token: an invalid handle, not a
    /// permission problem.
    pub(super) fn key_error(&self, slot: usize, info: &KeyInfo, e: Errno, what: &str) -> Error {
        let doing = format!("{what} with key {} (\"{}\")", info.serial, info.label);
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
        return match record.and_then(|r| CertInfo::parse(serial, r.label, r.id, r.der)) {
            Some(c) => Some(Known::Cert(Arc::new(c))),
            None => Some(Known::Ignored),
        };
    }
    if desc.key_type == "user" {
        if let Some(hex) = desc.description.strip_prefix(records::META_PREFIX) {
            return Some(records::unhex(hex).map_or(Known::Ignored, Known::Meta));
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
                desc.description
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
            p,
            k,
        )))),
        // The public operation failed: the key may be usable later.
        Err(e) if e.errno().is_some() => {
            crate::log::info(format_args!("key {serial} (\"{}\"): {e}", desc.description));
            None
        }
        Err(why) => {
            crate::log::warn(format_args!(
                "key {serial} (\"{}\") skipped: {why}",
                desc.description
            ));
            Some(Known::Ignored)
        }
    }
}
