//! What a token's keyring holds — its keys, certificates and our records —
//! learned as little and as late as possible, so that a token of 10,000 keys
//! costs what one key costs when a client wants one key.
//!
//! - A key is first only described and queried (two cheap calls): enough to
//!   list it and to match a template by class and label. Its public key —
//!   needed for `CKA_ID`, `CKA_MODULUS` and any operation — is learned on
//!   first need: taken from the key's record, where the module caches it
//!   when it creates a key, and checked against the kernel with one public
//!   operation on a random value; or, for a key without a record (loaded with
//!   `keyctl padd`), recovered from the kernel's public operation (see
//!   `crypto::pubkey`). Each is done once per key and process.
//! - A search by label asks the kernel for that one key (`KEYCTL_SEARCH`)
//!   instead of reading every key of the token; whether the key found is
//!   linked directly in the token's keyring is told by the links last read
//!   while the keyring holds as many links (see `directly_linked`).
//! - A full listing reads the keyring's links (one call): if they have not
//!   changed since the last look, nothing else is asked; otherwise only the
//!   keys and records not seen before are. Records are never changed in
//!   place (a change is a new record), so unchanged links mean unchanged
//!   records, and another process's changes show at the next search.
//!
//! A record is believed only if whoever wrote it could have written it for
//! that key: its owner must be the key's owner (or root). Anyone else able to
//! link a `user` key into the keyring could otherwise change a key's
//! `CKA_ID`, forge `CKA_LOCAL`, pair a certificate with a victim's key, or
//! offer a wrong public key (which the check against the kernel would also
//! refuse).

use super::{Module, parallel};
use crate::crypto::pubkey::{self, RsaPublic};
use crate::error::{Error, Result};
use crate::idhash::IdHashMap;
use crate::kernel::hints::KernelOp;
use crate::kernel::keyctl::{Errno, KEYCTL_SUPPORTS_SIGN, Serial};
use crate::kernel::store::KeyStore;
use crate::log::esc;
use crate::object::{CertInfo, KeyInfo, KeyRecord};
use crate::records::{self, CertRecord};
use cryptoki_sys::*;
use num_bigint::BigUint;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// A usable RSA private key in the kernel, as far as it has been looked at.
pub(super) struct KeyEntry {
    pub(super) serial: Serial,
    /// Its description: `CKA_LABEL`.
    pub(super) label: String,
    pub(super) owner: u32,
    /// The kernel's `max_sig_size` and key size (whole bytes, in bits).
    sig_len: usize,
    key_size: u32,
    /// The public key and what derives from it, once known.
    info: OnceLock<Arc<KeyInfo>>,
}

impl KeyEntry {
    /// The key's public key and what derives from it, if learned already.
    pub(super) fn public_key(&self) -> Option<Arc<KeyInfo>> {
        self.info.get().cloned()
    }

    /// An entry for a key whose public key is known already (one this
    /// process just made).
    pub(super) fn known(info: Arc<KeyInfo>, key_size: u32) -> KeyEntry {
        KeyEntry {
            serial: info.serial,
            label: info.label.clone(),
            owner: info.owner,
            sig_len: info.sig_len,
            key_size,
            info: OnceLock::from(info),
        }
    }
}

/// One of our records, by the derived ID its name gives, and its content
/// (records are immutable: read once).
pub(super) struct RecordEntry {
    pub(super) serial: Serial,
    pub(super) derived_id: Vec<u8>,
    pub(super) owner: u32,
    record: Option<KeyRecord>,
}

/// What we learned about a kernel key, cached by serial (the kernel never
/// gives a live key's serial to another).
#[derive(Clone)]
pub(super) enum Known {
    Key(Arc<KeyEntry>),
    /// A certificate stored beside the keys, and the uid that stored it.
    Cert(Arc<CertInfo>, u32),
    Record(Arc<RecordEntry>),
    /// Not something we show (another key type, a certificate's public key,
    /// a record whose name is not in our one canonical form).
    Ignored,
}

/// A keyring as the last full look found it. Shared, never changed: a new
/// look makes a new one.
pub(super) struct RingView {
    ring: Serial,
    /// Holds session objects (the module's own keyring for the token).
    pub(super) session: bool,
    links: Vec<Serial>,
    pub(super) keys: Vec<Arc<KeyEntry>>,
    pub(super) certs: Vec<Arc<CertInfo>>,
    pub(super) records: Vec<Arc<RecordEntry>>,
    /// The keys by `CKA_ID`, made on the first search by ID (it needs every
    /// key's public key and record).
    by_id: OnceLock<HashMap<Vec<u8>, Vec<usize>>>,
    /// The records by the label they cache and by the derived ID their name
    /// carries, made on first need: learning every key of a token asks
    /// these once per key, which a walk through every record would make n².
    records_by_label: OnceLock<HashMap<String, Vec<usize>>>,
    records_by_id: OnceLock<HashMap<Vec<u8>, usize>>,
    /// Each key's place in `keys`, and whether a read ahead has taken it
    /// (taken once: a key that cannot be learned is not tried again by every
    /// read ahead that passes it), made on the first read ahead.
    places: OnceLock<(IdHashMap<Serial, usize>, Vec<AtomicBool>)>,
    /// How many keys the next read ahead learns (`resolve_ahead`).
    ahead: AtomicUsize,
}

/// The most keys one read ahead learns: a client that lists every key but
/// reads one of them pays for this many at most (about 4 ms of work on a
/// native CPU with records, shared between the CPUs).
const MAX_AHEAD: usize = 64;

/// How long a full look at a keyring answers searches by `CKA_ID` whose
/// keys still check out (`scan_id`): the bound on how late such a search
/// sees another key newly given the ID. A full look costs 2–3 ms at 10,000
/// keys in the lab guest, so one a second is noise next to the searches.
pub(super) const ID_LOOK_TRUSTED: Duration = Duration::from_secs(1);

/// A key a search found: the key, whether its keyring holds session
/// objects, and the look at that keyring it was found in.
pub(super) type FoundKey = (Arc<KeyEntry>, bool, Arc<RingView>);

/// A keyring's links as last read.
pub(super) struct LinkSet {
    ring: Serial,
    links: IdHashMap<Serial, ()>,
}

impl RingView {
    /// The records caching this label, in keyring order.
    fn records_labelled(&self, label: &str) -> impl Iterator<Item = &Arc<RecordEntry>> {
        self.records_by_label
            .get_or_init(|| {
                let mut m: HashMap<String, Vec<usize>> = HashMap::new();
                for (i, r) in self.records.iter().enumerate() {
                    if let Some(l) = r.record.as_ref().and_then(|k| k.label.as_ref()) {
                        m.entry(l.clone()).or_default().push(i);
                    }
                }
                m
            })
            .get(label)
            .into_iter()
            .flatten()
            .map(|&i| &self.records[i])
    }

    /// The (first) record named for this derived ID.
    fn record_named(&self, derived_id: &[u8]) -> Option<&Arc<RecordEntry>> {
        self.records_by_id
            .get_or_init(|| {
                let mut m = HashMap::new();
                for (i, r) in self.records.iter().enumerate() {
                    m.entry(r.derived_id.clone()).or_insert(i);
                }
                m
            })
            .get(derived_id)
            .map(|&i| &self.records[i])
    }
}

impl Module {
    /// The token's keyring and, if this application made session objects on
    /// it, their keyring: (keyring, holds session objects).
    fn rings(&self, slot: usize) -> Result<Vec<(Serial, bool)>> {
        let keyring = self
            .keyring(slot)
            .ok_or(Error::new(CKR_TOKEN_NOT_PRESENT))?;
        let mut rings = vec![(keyring, false)];
        if let Some(r) = self.session_ring(slot) {
            rings.push((r, true));
        }
        Ok(rings)
    }

    fn links(&self, slot: usize, ring: Serial) -> Result<Vec<Serial>> {
        self.store.links(ring).map_err(|e| {
            Error::kernel(
                KernelOp::ReadKeyring,
                e,
                format!(
                    "reading the keyring of token \"{}\"",
                    esc(&self.tokens[slot].label)
                ),
            )
        })
    }

    /// Everything a token holds: the views of its keyring and of its
    /// session objects' keyring. Kernel calls happen here, with no lock held.
    pub(super) fn scan(&self, slot: usize) -> Result<Vec<Arc<RingView>>> {
        self.rings(slot)?
            .into_iter()
            .enumerate()
            .map(|(i, (ring, session))| self.view(slot, i, ring, session))
            .collect()
    }

    /// The keys of a view whose `CKA_ID` is `id`, through the view's index.
    pub(super) fn keys_with_id(
        &self,
        slot: usize,
        view: &RingView,
        id: &[u8],
    ) -> Vec<Arc<KeyEntry>> {
        let index = view.by_id.get_or_init(|| {
            let resolved = parallel::map(&view.keys, self.threads, 1, |k| {
                self.resolve(slot, k, view.session, Some(view))
            });
            let mut index: HashMap<Vec<u8>, Vec<usize>> = HashMap::new();
            for (i, r) in resolved.into_iter().enumerate() {
                match r {
                    Ok((info, rec)) => index.entry(rec.id(&info).to_vec()).or_default().push(i),
                    // Not usable now: not listed.
                    Err(e) => e.log("C_FindObjectsInit"),
                }
            }
            index
        });
        index
            .get(id)
            .map(|v| v.iter().map(|&i| view.keys[i].clone()).collect())
            .unwrap_or_default()
    }

    /// The token's keys whose `CKA_ID` is `id`, for a search of key objects
    /// by ID: (key, holds session objects, the view it was found in).
    ///
    /// There is no kernel search by `CKA_ID`, and reading every link to learn
    /// whether anything changed walks the whole keyring (80 kB at 10,000
    /// keys). So while a keyring holds as many links as at its last full look
    /// (one call that walks nothing), the keys that look found with this ID
    /// are checked one by one instead: each must still be what a kernel search
    /// for its label finds, and its record still the one that look read. A key
    /// replaced, unlinked or relabelled, or a record replaced (a change of
    /// `CKA_ID` is a new record), fails that check, and the links are read
    /// again. An ID no key had at the last look is always a full look. What
    /// the check cannot see is another key newly given an ID some key
    /// already had (its record replaced: as many links); so the last look is
    /// trusted for `ID_LOOK_TRUSTED` at most (README, Objects).
    pub(super) fn scan_id(&self, slot: usize, id: &[u8]) -> Result<Vec<FoundKey>> {
        let mut out = Vec::new();
        for (i, (ring, session)) in self.rings(slot)?.into_iter().enumerate() {
            let view = match self.unchanged_candidates(slot, i, ring, id) {
                Some((view, keys)) => {
                    out.extend(keys.into_iter().map(|k| (k, session, view.clone())));
                    continue;
                }
                None => self.view(slot, i, ring, session)?,
            };
            for k in self.keys_with_id(slot, &view, id) {
                out.push((k, session, view.clone()));
            }
        }
        Ok(out)
    }

    /// The keys with this ID in the last full look at `ring`, if that look
    /// still holds for them (see `scan_id`); None: look again.
    fn unchanged_candidates(
        &self,
        slot: usize,
        i: usize,
        ring: Serial,
        id: &[u8],
    ) -> Option<(Arc<RingView>, Vec<Arc<KeyEntry>>)> {
        if self.looked.lock()[slot][i]?.elapsed() > ID_LOOK_TRUSTED {
            return None;
        }
        let view = self.views.lock()[slot][i].clone()?;
        let index = view.by_id.get()?;
        let keys: Vec<Arc<KeyEntry>> = index
            .get(id)?
            .iter()
            .map(|&k| view.keys[k].clone())
            .collect();
        if view.ring != ring || self.store.link_count(ring).ok()? != view.links.len() {
            return None;
        }
        for k in &keys {
            if self.store.search(ring, "asymmetric", &k.label).ok()? != k.serial {
                return None;
            }
            let derived = &k.info.get()?.derived_id;
            let record = self
                .store
                .search(ring, "user", &records::meta_description(derived))
                .ok();
            if record != view.record_named(derived).map(|r| r.serial) {
                return None;
            }
        }
        Some((view, keys))
    }

    /// The token's keys labelled `label`: the kernel is asked for that one
    /// key, not for every key of the token.
    pub(super) fn scan_label(
        &self,
        slot: usize,
        label: &str,
    ) -> Result<Vec<(Arc<KeyEntry>, bool)>> {
        let mut out = Vec::new();
        for (i, (ring, session)) in self.rings(slot)?.into_iter().enumerate() {
            let Ok(serial) = self.store.search(ring, "asymmetric", label) else {
                continue;
            };
            if !self.directly_linked(slot, i, ring, serial)? {
                continue;
            }
            if let Some(Known::Key(k)) = self.known(serial) {
                if k.label == label {
                    // Its record is asked for again: another process may
                    // have changed it.
                    self.records.lock().remove(&(slot, k.serial));
                    out.push((k, session));
                }
            }
        }
        Ok(out)
    }

    /// Whether a key the kernel's search found below `ring` is linked in it
    /// directly: the search also looks into keyrings linked in this one
    /// (the session keyring links the user keyring), and only a key linked
    /// directly in the token's keyring is the token's.
    ///
    /// Reading the links walks the whole keyring (80 kB at 10,000 keys, and
    /// most of a search's time), so the links last read answer instead when
    /// they held this key and the keyring still holds as many links (its
    /// size is one call that walks nothing). A key another process unlinked
    /// is not found by the search; a key linked anew is not in the links
    /// last read, which are then read again. What this cannot see is a key
    /// moved, with no other change in number, from this keyring into a
    /// keyring linked in it: it is still listed as this token's until the
    /// next look at every link, while it is reachable — and usable — only
    /// through it.
    fn directly_linked(&self, slot: usize, i: usize, ring: Serial, serial: Serial) -> Result<bool> {
        let last = self.linked.lock()[slot][i].clone();
        if let Some(l) = last {
            if l.ring == ring
                && l.links.contains_key(&serial)
                && self.store.link_count(ring).ok() == Some(l.links.len())
            {
                return Ok(true);
            }
        }
        let links = self.links(slot, ring)?;
        let direct = links.contains(&serial);
        self.remember_links(slot, i, ring, &links);
        Ok(direct)
    }

    fn remember_links(&self, slot: usize, i: usize, ring: Serial, links: &[Serial]) {
        let set = Arc::new(LinkSet {
            ring,
            links: links.iter().map(|&s| (s, ())).collect(),
        });
        self.linked.lock()[slot][i] = Some(set);
    }

    /// A keyring's view: the last one if its links have not changed, else
    /// one made anew, learning only what was not seen before.
    fn view(&self, slot: usize, i: usize, ring: Serial, session: bool) -> Result<Arc<RingView>> {
        let at = Instant::now();
        let links = self.links(slot, ring)?;
        self.looked.lock()[slot][i] = Some(at);
        if let Some(v) = &self.views.lock()[slot][i] {
            if v.ring == ring && v.links == links {
                return Ok(v.clone());
            }
        }
        let mut view = RingView {
            ring,
            session,
            links: Vec::with_capacity(links.len()),
            keys: Vec::new(),
            certs: Vec::new(),
            records: Vec::new(),
            by_id: OnceLock::new(),
            records_by_label: OnceLock::new(),
            records_by_id: OnceLock::new(),
            places: OnceLock::new(),
            ahead: AtomicUsize::new(0),
        };
        let me = crate::kernel::keyctl::uid();
        // What was not seen before is looked at on every CPU at once (two
        // or three calls per serial: a first look at 10,000 keys and their
        // records is 20,000 serials).
        let unseen: Vec<Serial> = {
            let keys = self.keys.lock();
            links
                .iter()
                .copied()
                .filter(|s| !keys.contains_key(s))
                .collect()
        };
        let learned: IdHashMap<Serial, Option<Known>> = unseen
            .iter()
            .copied()
            .zip(parallel::map(&unseen, self.threads, 64, |&s| self.known(s)))
            .collect();
        let mut certs = Vec::new();
        for &serial in &links {
            let known = match learned.get(&serial) {
                Some(k) => k.clone(),
                None => self.known(serial),
            };
            match known {
                Some(Known::Key(k)) => view.keys.push(k),
                Some(Known::Cert(c, owner)) => certs.push((c, owner)),
                Some(Known::Record(r)) => view.records.push(r),
                // Could not look at it now (permissions, a transient error):
                // skip it without remembering, so it can appear later.
                Some(Known::Ignored) | None => {}
            }
        }
        view.links = links;
        // A certificate is believed if its writer owns the key it pairs
        // with, is root, or is this user.
        for (c, owner) in certs {
            let key_owner = view
                .keys
                .iter()
                .find(|k| k.info.get().is_some_and(|i| i.derived_id == c.id))
                .map(|k| k.owner);
            if owner != 0 && owner != me && Some(owner) != key_owner {
                crate::log::warn(format_args!(
                    "certificate record {} (\"{}\") in token \"{}\" was written by uid {owner}, not by the owner of its key or this user: ignored",
                    c.serial,
                    esc(&c.label),
                    esc(&self.tokens[slot].label)
                ));
            } else if session {
                view.certs.push(Arc::new(CertInfo {
                    session: true,
                    ..(*c).clone()
                }));
            } else {
                view.certs.push(c);
            }
        }
        // What this view says about each key's record may have changed.
        {
            let mut recs = self.records.lock();
            for k in &view.keys {
                recs.remove(&(slot, k.serial));
            }
        }
        self.remember_links(slot, i, ring, &view.links);
        let view = Arc::new(view);
        self.views.lock()[slot][i] = Some(view.clone());
        Ok(view)
    }

    /// What a serial is, learning it if it was not seen before.
    fn known(&self, serial: Serial) -> Option<Known> {
        if let Some(k) = self.keys.lock().get(&serial) {
            return Some(k.clone());
        }
        let k = learn(&*self.store, serial)?;
        // Two first looks at once (client threads, or helpers) both learn
        // a new serial: every view must share the one entry kept, or a key
        // learned through one would be learned again through the other.
        Some(self.keys.lock().entry(serial).or_insert(k).clone())
    }

    /// The key's public key and this token's record of it, learned on first
    /// need (see the module's documentation). Kernel calls, no lock held.
    ///
    /// `view` is a full look at the key's keyring, whose records are used
    /// (`None` after a search by label: the kernel is then asked for the
    /// key's one record by its name).
    pub(super) fn resolve(
        &self,
        slot: usize,
        key: &KeyEntry,
        session: bool,
        view: Option<&RingView>,
    ) -> Result<(Arc<KeyInfo>, Arc<KeyRecord>)> {
        if let (Some(info), Some(rec)) = (
            key.info.get(),
            self.records.lock().get(&(slot, key.serial)).cloned(),
        ) {
            return Ok((info.clone(), rec));
        }
        let ring = self
            .rings(slot)?
            .into_iter()
            .find(|(_, s)| *s == session)
            .map(|(r, _)| r)
            .ok_or(Error::new(CKR_OBJECT_HANDLE_INVALID))?;
        let believed = |r: &RecordEntry| r.owner == key.owner || r.owner == 0;
        let info = match key.info.get() {
            Some(i) => i.clone(),
            None => {
                // The public key a record of this key caches, checked.
                let cached = view
                    .into_iter()
                    .flat_map(|v| v.records_labelled(&key.label))
                    .filter(|r| believed(r))
                    .filter_map(|r| Some((r, r.record.as_ref()?)))
                    .filter(|(_, rec)| rec.label.as_deref() == Some(key.label.as_str()))
                    .find_map(|(r, rec)| {
                        let p = rec.public.as_ref()?;
                        if p.key_id() != r.derived_id {
                            // A record's name carries the ID of the key it
                            // describes: one caching another key's public
                            // key was not written by this module.
                            crate::log::warn(format_args!(
                                "record {} for key {} (\"{}\"): the public key it caches is not the one its name's CKA_ID is derived from: ignored",
                                r.serial,
                                key.serial,
                                esc(&key.label)
                            ));
                            return None;
                        }
                        // Each checked in turn: a planted record must not
                        // hide the module's own behind it.
                        self.checked(key, p)
                    });
                let public = match cached {
                    Some(p) => p,
                    None => self.recover(slot, key)?,
                };
                let info = Arc::new(KeyInfo::new(
                    key.serial,
                    key.label.clone(),
                    key.owner,
                    public,
                    key.sig_len,
                ));
                key.info.get_or_init(|| info).clone()
            }
        };
        // This token's record of it: found by the derived ID its name
        // carries, in the last full look or, after a search by label, by
        // asking the kernel for that one record.
        let entry = match view.and_then(|v| v.record_named(&info.derived_id)) {
            Some(r) => Some(r.clone()),
            None => self
                .store
                .search(ring, "user", &records::meta_description(&info.derived_id))
                .ok()
                .and_then(|s| match self.known(s) {
                    Some(Known::Record(r)) => Some(r),
                    _ => None,
                }),
        };
        let mut rec = KeyRecord::default();
        if let Some(r) = entry {
            if !believed(&r) {
                crate::log::warn(format_args!(
                    "record {} for key {} (\"{}\") in token \"{}\" was written by uid {}, not by the key's owner (uid {}): ignored",
                    r.serial,
                    key.serial,
                    esc(&key.label),
                    esc(&self.tokens[slot].label),
                    r.owner,
                    key.owner
                ));
            } else if let Some(read) = &r.record {
                rec = read.clone();
            }
        }
        rec.session = session;
        let rec = Arc::new(rec);
        self.records.lock().insert((slot, key.serial), rec.clone());
        Ok((info, rec))
    }

    /// `resolve` for a key read through its handle, learning with it the
    /// keys that follow it in the view and are not learned yet, on every CPU
    /// at once: a client reading one key's attributes after a listing
    /// usually reads the next key's next. How many follow doubles with each
    /// read ahead, from one per thread to `MAX_AHEAD`, so a client that
    /// reads one key of a long listing pays for few more, in the same time.
    /// Another key that cannot be learned now is left for its own read to
    /// report: it is tried once more then, and by no other read ahead of
    /// this view.
    pub(super) fn resolve_ahead(
        &self,
        slot: usize,
        key: &Arc<KeyEntry>,
        session: bool,
        view: &RingView,
    ) -> Result<(Arc<KeyInfo>, Arc<KeyRecord>)> {
        if self.threads <= 1 || key.info.get().is_some() || view.session != session {
            return self.resolve(slot, key, session, Some(view));
        }
        let (places, taken) = view.places.get_or_init(|| {
            let places = view
                .keys
                .iter()
                .enumerate()
                .map(|(i, k)| (k.serial, i))
                .collect();
            (
                places,
                view.keys.iter().map(|_| AtomicBool::new(false)).collect(),
            )
        });
        let Some(&at) = places.get(&key.serial) else {
            return self.resolve(slot, key, session, Some(view));
        };
        taken[at].store(true, Ordering::Relaxed);
        let window = (view.ahead.load(Ordering::Relaxed) * 2).clamp(self.threads, MAX_AHEAD);
        view.ahead.store(window, Ordering::Relaxed);
        let batch: Vec<&Arc<KeyEntry>> = std::iter::once(key)
            .chain(
                view.keys[at + 1..]
                    .iter()
                    .zip(&taken[at + 1..])
                    .filter(|(k, t)| k.info.get().is_none() && !t.swap(true, Ordering::Relaxed))
                    .map(|(k, _)| k),
            )
            .take(window)
            .collect();
        parallel::map(&batch, self.threads, 1, |k| {
            self.resolve(slot, k, session, Some(view))
        })
        .swap_remove(0)
    }

    /// A cached public key, if the kernel key agrees: for a random x < n, the
    /// kernel's x^e mod n is the one computed with it.
    fn checked(&self, key: &KeyEntry, p: &RsaPublic) -> Option<RsaPublic> {
        let n = BigUint::from_bytes_be(&p.modulus);
        let e_big = BigUint::from_bytes_be(&p.exponent);
        if e_big <= BigUint::from(1u8) || e_big >= n {
            return None;
        }
        if p.bits().div_ceil(8) != key.key_size.div_ceil(8) || n.bits() < 256 {
            return None;
        }
        let k = key.sig_len;
        let mut x = vec![0u8; k];
        crate::random::fill(&mut x[1..]).ok()?;
        let xn = BigUint::from_bytes_be(&x) % &n;
        let mut input = vec![0u8; k];
        let b = xn.to_bytes_be();
        input[k - b.len()..].copy_from_slice(&b);
        let mut out = vec![0u8; k];
        let got = self.store.public_raw(key.serial, &input, &mut out).ok()?;
        // A record may cache any exponent the kernel took (the module
        // creates keys with exponents beyond 32 bits, which recovery cannot
        // find): those are checked with the general modpow.
        let want = match pubkey::small_exponent(&p.exponent) {
            Some(e) => pubkey::pow_small(&xn, e, &n),
            None => xn.modpow(&e_big, &n),
        };
        let agrees = BigUint::from_bytes_be(&out[..got]) == want;
        if !agrees {
            crate::log::warn(format_args!(
                "key {} (\"{}\"): the public key its record caches is not the kernel key's: ignored",
                key.serial,
                esc(&key.label)
            ));
        }
        agrees.then(|| p.clone())
    }

    fn recover(&self, slot: usize, key: &KeyEntry) -> Result<RsaPublic> {
        let k = key.sig_len;
        pubkey::recover(key.key_size, |x| {
            let mut out = vec![0u8; k];
            let n = self.store.public_raw(key.serial, x, &mut out)?;
            out.truncate(n);
            Ok::<_, Errno>(out)
        })
        .map_err(|e| match e.errno() {
            Some(errno) => self.key_error(
                slot,
                key.serial,
                &key.label,
                errno,
                "recovering the public key",
            ),
            None => {
                crate::log::warn(format_args!(
                    "key {} (\"{}\") cannot be used: {e}",
                    key.serial,
                    esc(&key.label)
                ));
                Error::new(CKR_KEY_HANDLE_INVALID)
            }
        })
    }

    pub(super) fn still_linked(&self, slot: usize, serial: Serial) -> bool {
        let in_ring = |ring: Option<Serial>| match ring.map(|k| self.store.links(k)) {
            Some(Ok(links)) => links.contains(&serial),
            _ => false,
        };
        in_ring(self.keyring(slot)) || in_ring(self.session_ring(slot))
    }

    /// Whether a key found earlier is still the token's and usable now,
    /// proven in two kernel calls that walk nothing: a search of its
    /// keyring for its description (`CKA_LABEL`) finds exactly this key,
    /// and it is linked there directly, by the test a search by label uses
    /// (`directly_linked`: the links last read held it and the keyring
    /// holds as many links now). The kernel looks such a search up by type
    /// and description in the keyring's index instead of walking it, as
    /// reading its links does (a token of 10,000 keys is 80 kB to read at
    /// every `C_SignInit`), and finds only a key that is neither revoked,
    /// expired nor invalidated and that this process may search: what a key
    /// operation needs. The search also looks into keyrings linked in the
    /// token's (a session keyring links `@u`), hence the second test: a key
    /// unlinked from this keyring but still in one linked in it has left
    /// the token. `false` proves nothing (another key took the label, the
    /// key went): the caller asks the slow way, which names the exact
    /// cause.
    pub(super) fn still_found(&self, slot: usize, info: &KeyInfo, session: bool) -> bool {
        let (i, ring) = if session {
            (1, self.session_ring(slot))
        } else {
            (0, self.keyring(slot))
        };
        ring.is_some_and(|r| {
            matches!(self.store.search(r, "asymmetric", &info.label), Ok(s) if s == info.serial)
                && self
                    .directly_linked(slot, i, r, info.serial)
                    .unwrap_or(false)
        })
    }

    /// Forgets a key that went (and the full looks that listed it: the next
    /// search asks the kernel again).
    pub(super) fn forget(&self, serial: Serial) {
        self.keys.lock().remove(&serial);
        for v in self.views.lock().iter_mut() {
            *v = [None, None];
        }
        for l in self.linked.lock().iter_mut() {
            *l = [None, None];
        }
    }

    /// Maps a kernel error on a key and forgets a key that is gone for good.
    /// A refusal (EACCES) right after the key was unlinked from the token's
    /// keyring means the key left the token: an invalid handle, not a
    /// permission problem.
    pub(super) fn key_error(
        &self,
        slot: usize,
        serial: Serial,
        label: &str,
        e: Errno,
        what: &str,
    ) -> Error {
        let doing = format!("{what} with key {serial} (\"{}\")", esc(label));
        let refused = matches!(e.0, libc::EACCES | libc::EPERM);
        if e.is_key_gone() || (refused && !self.still_linked(slot, serial)) {
            self.forget(serial);
            return Error::kernel_as(CKR_KEY_HANDLE_INVALID, KernelOp::UseKey, e, doing).quietly();
        }
        Error::kernel(KernelOp::UseKey, e, doing)
    }
}

/// Looks at a serial not seen before: what it is, without its public key.
/// `None` means "cannot tell now": not cached.
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
        if let Some(derived_id) = records::meta_id(&desc.description) {
            let record = store
                .read(serial)
                .ok()
                .and_then(|b| records::decode_key_record(&b));
            return Some(Known::Record(Arc::new(RecordEntry {
                serial,
                derived_id,
                owner: desc.uid,
                record,
            })));
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
    Some(Known::Key(Arc::new(KeyEntry {
        serial,
        label: desc.description,
        owner: desc.uid,
        sig_len: usize::from(q.max_sig_size),
        key_size: q.key_size,
        info: OnceLock::new(),
    })))
}
