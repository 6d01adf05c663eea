//! Tokens, sessions, objects and operations: the PKCS#11 logic, in safe Rust,
//! independent of the C ABI (see `ffi`) and of the kernel (see `store`).
//!
//! Locking: `Module::state` guards the tables, each session has its own
//! operation lock, and neither is ever held across a kernel call. Work that
//! needs the kernel copies what it needs out of the tables, drops the lock,
//! calls the kernel, and then looks its target up again, so a session closed
//! meanwhile yields a defined error instead of a dangling reference.

use crate::config::Config;
use crate::crypto::{self, OpError};
use crate::error::{Error, Result};
use crate::idhash::IdHashMap;
use crate::keyctl::{Errno, KEYCTL_SUPPORTS_DECRYPT, KEYCTL_SUPPORTS_SIGN, Serial};
use crate::lifecycle::{self, CertRecord, Meta, RsaTemplate};
use crate::mechanism::{self, Hasher, MechParams, Padding, Resolved};
use crate::object::{self, AttrValue, CertInfo, Class, KeyInfo};
use crate::pubkey::RsaPublic;
use crate::pubkey::{self, RecoverError};
use crate::store::{KeyStore, TokenKind};
use crate::sync::Mutex;
use cryptoki_sys::*;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use zeroize::Zeroizing;

/// Handles come from process-wide counters and are never reused, not even
/// across `C_Finalize`/`C_Initialize`: a stale handle can only ever be invalid.
static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);
static NEXT_OBJECT: AtomicU64 = AtomicU64::new(1);

fn next_handle(c: &AtomicU64) -> CK_ULONG {
    c.fetch_add(1, Ordering::Relaxed) as CK_ULONG
}

/// What we learned about a kernel key. Building a `KeyInfo` costs a few
/// public-key operations (see `pubkey`), so it is done once per key and
/// cached by serial (the kernel never gives a live key's serial to another).
#[derive(Clone)]
enum Known {
    Key(Arc<KeyInfo>),
    /// A certificate stored beside the keys.
    Cert(Arc<CertInfo>),
    /// Our metadata record for the key with this derived ID (see
    /// `lifecycle::Meta`); its payload is re-read at every scan. Kept as
    /// bytes so that matching it to a key needs no per-key formatting.
    Meta(Vec<u8>),
    /// Not an RSA private key we can use (another key type, a certificate).
    Ignored,
}

/// What a token's keyring holds that we show.
struct Scanned {
    keys: Vec<Arc<KeyInfo>>,
    certs: Vec<Arc<CertInfo>>,
}

/// A slot and its token.
#[derive(Debug, Clone)]
pub struct Token {
    pub kind: TokenKind,
    pub label: String,
    pub model: &'static str,
    pub serial: String,
    pub description: String,
}

impl Token {
    fn new(kind: TokenKind, uid: u32) -> Token {
        let (label, model, serial, description) = match &kind {
            TokenKind::Session => (
                "session".to_string(),
                "session keyring",
                format!("s{uid}"),
                "session keyring (@s): keys live as long as the login session".to_string(),
            ),
            TokenKind::User => (
                "user".to_string(),
                "user keyring",
                format!("u{uid}"),
                "user keyring (@u): keys live while the user has processes".to_string(),
            ),
            TokenKind::Persistent => (
                "persistent".to_string(),
                "persist keyring",
                format!("p{uid}"),
                "persistent keyring: keys outlive logins until it expires".to_string(),
            ),
            TokenKind::Process => (
                "process".to_string(),
                "process keyring",
                format!("proc{uid}"),
                "process keyring (@p): keys die with the process, even on SIGKILL".to_string(),
            ),
            TokenKind::Named(n) => (
                n.clone(),
                "named keyring",
                format!("n{:08x}", fnv32(n.as_bytes())),
                format!("keyring \"{n}\""),
            ),
        };
        Token {
            kind,
            label,
            model,
            serial,
            description,
        }
    }
}

/// A stable, short hash for the serial numbers of named tokens.
fn fnv32(data: &[u8]) -> u32 {
    data.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

struct SessionEntry {
    slot: usize,
    rw: bool,
    ops: Mutex<Ops>,
}

/// The five kinds of key operation a session can have running at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Sign,
    Verify,
    VerifyRecover,
    Encrypt,
    Decrypt,
}

impl OpKind {
    const ALL: usize = 5;

    fn index(self) -> usize {
        self as usize
    }

    /// The mechanism flag that must be set for this use.
    fn flag(self) -> CK_FLAGS {
        match self {
            OpKind::Sign => CKF_SIGN,
            OpKind::Verify => CKF_VERIFY,
            OpKind::VerifyRecover => CKF_VERIFY_RECOVER,
            OpKind::Encrypt => CKF_ENCRYPT,
            OpKind::Decrypt => CKF_DECRYPT,
        }
    }

    /// Private-key operations need the private object, public ones the public.
    fn class(self) -> Class {
        match self {
            OpKind::Sign | OpKind::Decrypt => Class::Private,
            _ => Class::Public,
        }
    }
}

#[derive(Default)]
struct Ops {
    find: Option<Vec<CK_OBJECT_HANDLE>>,
    crypt: [Option<CryptOp>; OpKind::ALL],
    digest: Option<DigestOp>,
}

struct CryptOp {
    slot: usize,
    key: Arc<KeyInfo>,
    mech: Resolved,
    acc: Acc,
    /// An update was called: only the final call may finish it now.
    multipart: bool,
}

// Short-lived, on the stack of one call.
#[allow(clippy::large_enum_variant)]
enum Final {
    SizeOnly(usize),
    Run(CryptOp),
}

struct DigestOp {
    hasher: Hasher,
    multipart: bool,
}

// One per session at most; boxing the hash state would buy nothing.
#[allow(clippy::large_enum_variant)]
enum Acc {
    Hash(Hasher),
    /// Input collected as it is, wiped on drop: for CKM_RSA_PKCS it is usually
    /// a hash, but may be anything the caller wanted signed.
    Raw(Zeroizing<Vec<u8>>),
}

impl Acc {
    fn new(m: &Resolved) -> Acc {
        match m.spec.hash {
            Some(h) => Acc::Hash(h.hasher()),
            None => Acc::Raw(Zeroizing::new(Vec::new())),
        }
    }

    fn add(&mut self, data: &[u8], limit: usize) -> Result<()> {
        match self {
            Acc::Hash(h) => h.update(data),
            Acc::Raw(buf) => {
                if buf.len() + data.len() > limit {
                    return Err(Error::new(CKR_DATA_LEN_RANGE));
                }
                buf.extend_from_slice(data);
            }
        }
        Ok(())
    }

    /// What the RSA step works on: the message digest, or the raw input.
    fn payload(&self, last: Option<&[u8]>) -> Zeroizing<Vec<u8>> {
        match self {
            Acc::Hash(h) => {
                let mut h = h.clone();
                if let Some(d) = last {
                    h.update(d);
                }
                Zeroizing::new(h.finish())
            }
            Acc::Raw(buf) => Zeroizing::new(match last {
                Some(d) => d.to_vec(),
                None => buf.to_vec(),
            }),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct ObjKey {
    slot: usize,
    serial: Serial,
    class: Class,
}

#[derive(Default)]
struct State {
    keyrings: Vec<Option<Serial>>,
    login: Vec<Option<CK_USER_TYPE>>,
    sessions: IdHashMap<CK_SESSION_HANDLE, Arc<SessionEntry>>,
    objects: IdHashMap<CK_OBJECT_HANDLE, ObjKey>,
    handles: IdHashMap<ObjKey, CK_OBJECT_HANDLE>,
}

impl State {
    fn session(&self, h: CK_SESSION_HANDLE) -> Result<Arc<SessionEntry>> {
        self.sessions
            .get(&h)
            .cloned()
            .ok_or(Error::new(CKR_SESSION_HANDLE_INVALID))
    }

    fn handle_for(&mut self, k: ObjKey) -> CK_OBJECT_HANDLE {
        if let Some(h) = self.handles.get(&k) {
            return *h;
        }
        let h = next_handle(&NEXT_OBJECT);
        self.handles.insert(k, h);
        self.objects.insert(h, k);
        h
    }
}

pub struct SlotInfo {
    pub description: String,
    pub present: bool,
}

pub struct TokenInfo {
    pub label: String,
    pub model: &'static str,
    pub serial: String,
    pub sessions: usize,
    pub rw_sessions: usize,
}

pub struct SessionInfo {
    pub slot: CK_SLOT_ID,
    pub state: CK_STATE,
    pub flags: CK_FLAGS,
}

pub struct Module {
    store: Arc<dyn KeyStore>,
    tokens: Vec<Token>,
    state: Mutex<State>,
    keys: Mutex<IdHashMap<Serial, Known>>,
}

impl Module {
    /// Builds the module and resolves every token's keyring (kernel calls; no
    /// lock exists yet).
    pub fn new(store: Arc<dyn KeyStore>, config: &Config) -> Module {
        let uid = crate::keyctl::uid();
        let mut kinds = vec![
            TokenKind::Session,
            TokenKind::User,
            TokenKind::Persistent,
            TokenKind::Process,
        ];
        kinds.extend(config.named_keyrings.iter().cloned().map(TokenKind::Named));
        let tokens: Vec<Token> = kinds.into_iter().map(|k| Token::new(k, uid)).collect();
        let keyrings = tokens.iter().map(|t| resolve(&*store, t)).collect();
        let state = State {
            keyrings,
            login: vec![None; tokens.len()],
            ..State::default()
        };
        Module {
            store,
            tokens,
            state: Mutex::new(state),
            keys: Mutex::default(),
        }
    }

    pub fn tokens(&self) -> &[Token] {
        &self.tokens
    }

    fn slot(&self, slot: CK_SLOT_ID) -> Result<usize> {
        let i = usize::try_from(slot).map_err(|_| Error::new(CKR_SLOT_ID_INVALID))?;
        if i < self.tokens.len() {
            Ok(i)
        } else {
            Err(Error::new(CKR_SLOT_ID_INVALID))
        }
    }

    /// The token's keyring; a named keyring that did not exist at start-up
    /// is looked for again, so one created later shows up.
    fn keyring(&self, slot: usize) -> Option<Serial> {
        if let Some(k) = self.state.lock().keyrings[slot] {
            return Some(k);
        }
        if !matches!(self.tokens[slot].kind, TokenKind::Named(_)) {
            return None;
        }
        let found = resolve(&*self.store, &self.tokens[slot]);
        if found.is_some() {
            self.state.lock().keyrings[slot] = found;
        }
        found
    }

    pub fn slot_list(&self, present_only: bool) -> Vec<CK_SLOT_ID> {
        (0..self.tokens.len())
            .filter(|&i| !present_only || self.keyring(i).is_some())
            .map(|i| i as CK_SLOT_ID)
            .collect()
    }

    pub fn slot_info(&self, slot: CK_SLOT_ID) -> Result<SlotInfo> {
        let i = self.slot(slot)?;
        Ok(SlotInfo {
            description: self.tokens[i].description.clone(),
            present: self.keyring(i).is_some(),
        })
    }

    pub fn token_info(&self, slot: CK_SLOT_ID) -> Result<TokenInfo> {
        let i = self.slot(slot)?;
        if self.keyring(i).is_none() {
            return Err(Error::new(CKR_TOKEN_NOT_PRESENT));
        }
        let st = self.state.lock();
        let (mut sessions, mut rw_sessions) = (0, 0);
        for s in st.sessions.values().filter(|s| s.slot == i) {
            sessions += 1;
            rw_sessions += s.rw as usize;
        }
        let t = &self.tokens[i];
        Ok(TokenInfo {
            label: t.label.clone(),
            model: t.model,
            serial: t.serial.clone(),
            sessions,
            rw_sessions,
        })
    }

    fn present_slot(&self, slot: CK_SLOT_ID) -> Result<(usize, Serial)> {
        let i = self.slot(slot)?;
        let k = self.keyring(i).ok_or(Error::new(CKR_TOKEN_NOT_PRESENT))?;
        Ok((i, k))
    }

    pub fn mechanism_list(&self, slot: CK_SLOT_ID) -> Result<Vec<CK_MECHANISM_TYPE>> {
        self.present_slot(slot)?;
        Ok(mechanism::MECHANISMS.iter().map(|m| m.ty).collect())
    }

    pub fn mechanism_info(
        &self,
        slot: CK_SLOT_ID,
        ty: CK_MECHANISM_TYPE,
    ) -> Result<CK_MECHANISM_INFO> {
        self.present_slot(slot)?;
        let m = mechanism::lookup(ty).ok_or(Error::new(CKR_MECHANISM_INVALID))?;
        // Digests use no key: their sizes are zero.
        let (min, max) = match m.padding {
            Padding::Digest => (0, 0),
            Padding::KeyGen => (
                CK_ULONG::from(lifecycle::GENERATE_BITS[0]),
                CK_ULONG::from(lifecycle::GENERATE_BITS[2]),
            ),
            _ => (mechanism::min_key_bits(), mechanism::MAX_KEY_BITS),
        };
        Ok(CK_MECHANISM_INFO {
            ulMinKeySize: min,
            ulMaxKeySize: max,
            flags: m.flags,
        })
    }

    pub fn open_session(&self, slot: CK_SLOT_ID, flags: CK_FLAGS) -> Result<CK_SESSION_HANDLE> {
        if flags & CKF_SERIAL_SESSION == 0 {
            return Err(Error::new(CKR_SESSION_PARALLEL_NOT_SUPPORTED));
        }
        let (i, _) = self.present_slot(slot)?;
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
        let mut st = self.state.lock();
        let s = st
            .sessions
            .remove(&h)
            .ok_or(Error::new(CKR_SESSION_HANDLE_INVALID))?;
        // Login state belongs to the application's sessions on a token and
        // ends with the last of them.
        if !st.sessions.values().any(|o| o.slot == s.slot) {
            st.login[s.slot] = None;
        }
        Ok(())
    }

    pub fn close_all_sessions(&self, slot: CK_SLOT_ID) -> Result<()> {
        let i = self.slot(slot)?;
        let mut st = self.state.lock();
        st.sessions.retain(|_, s| s.slot != i);
        st.login[i] = None;
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
                // No key of ours needs CKA_ALWAYS_AUTHENTICATE; there is nothing
                // to re-authenticate unless an operation is running.
                let ops = s.ops.lock();
                return if ops.crypt.iter().any(Option::is_some) {
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

    /// Reads the token's keyring and learns any key not seen before. Kernel
    /// calls happen here, with no lock held.
    fn scan(&self, slot: usize) -> Result<Scanned> {
        let keyring = self
            .keyring(slot)
            .ok_or(Error::new(CKR_TOKEN_NOT_PRESENT))?;
        let serials = self.store.links(keyring).map_err(|e| {
            crate::log::warn(format_args!(
                "reading keyring of token \"{}\": {e}",
                self.tokens[slot].label
            ));
            Error::new(CKR_DEVICE_ERROR)
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

    /// The token's keyring and whether the session may change it.
    fn writable(&self, h: CK_SESSION_HANDLE) -> Result<(Arc<SessionEntry>, Serial)> {
        let s = self.state.lock().session(h)?;
        if !s.rw {
            return Err(Error::new(CKR_SESSION_READ_ONLY));
        }
        let keyring = self
            .keyring(s.slot)
            .ok_or(Error::new(CKR_TOKEN_NOT_PRESENT))?;
        Ok((s, keyring))
    }

    /// Maps a kernel refusal to create or change something in a keyring.
    fn write_error(&self, slot: usize, e: Errno, what: &str) -> Error {
        let token = &self.tokens[slot].label;
        let hint = |h: &str| format!(" ({h})");
        let (rv, hint) = match e.0 {
            libc::EBADMSG => (
                CKR_FUNCTION_FAILED,
                hint("the kernel cannot parse PKCS#8 private keys: sudo modprobe pkcs8_key_parser"),
            ),
            // Which quota and which sysctl: an administrator reading a server's
            // log should not have to work out the kernel's accounting.
            libc::EDQUOT => (
                CKR_DEVICE_MEMORY,
                hint(&format!(
                    "key quota exhausted: {}",
                    crate::lifecycle::quota_hints().join("; ")
                )),
            ),
            libc::EACCES | libc::EPERM => (
                CKR_TOKEN_WRITE_PROTECTED,
                hint("no write permission on the keyring"),
            ),
            libc::ENOPKG => (
                CKR_KEY_TYPE_INCONSISTENT,
                hint("the kernel cannot hold this key type"),
            ),
            libc::ENOMEM => (CKR_HOST_MEMORY, String::new()),
            _ => (CKR_DEVICE_ERROR, String::new()),
        };
        crate::log::warn(format_args!(
            "{what} in token \"{token}\": kernel said: {e}{hint}"
        ));
        Error::new(rv)
    }

    /// Loads a PKCS#8 private key into the session's token and makes its
    /// objects. The caller's copy of the DER is its own to wipe.
    fn load_private(
        &self,
        s: &SessionEntry,
        keyring: Serial,
        label: &str,
        der: &[u8],
        public: RsaPublic,
        meta: Meta,
    ) -> Result<Arc<KeyInfo>> {
        // add_key would silently displace a key of the same description:
        // refuse instead of losing it.
        let taken = self
            .store
            .links(keyring)
            .unwrap_or_default()
            .into_iter()
            .any(|k| {
                self.store
                    .describe(k)
                    .is_ok_and(|d| d.key_type == "asymmetric" && d.description == label)
            });
        if taken {
            crate::log::warn(format_args!(
                "a key labelled \"{label}\" is already in token \"{}\"; the kernel would replace it: choose another label",
                self.tokens[s.slot].label
            ));
            return Err(Error::new(CKR_ATTRIBUTE_VALUE_INVALID));
        }
        let serial = self
            .store
            .add(keyring, "asymmetric", label, der)
            .map_err(|e| self.write_error(s.slot, e, "adding a key"))?;
        let undo = |e: Error| {
            let _ = self.store.unlink(keyring, serial);
            e
        };
        let q = self
            .store
            .query(serial)
            .map_err(|e| undo(self.write_error(s.slot, e, "querying a new key")))?;
        let sig_len = usize::from(q.max_sig_size);
        if q.supported_ops & KEYCTL_SUPPORTS_SIGN == 0
            || sig_len == 0
            || u64::from(q.key_size) != u64::from(public.bits())
        {
            return Err(undo(Error::new(CKR_TEMPLATE_INCONSISTENT)));
        }
        let mut info = KeyInfo::new(serial, label.to_string(), public, sig_len);
        // The public half we report must be the kernel key's: check a raw
        // private operation against the public one.
        if !self.pair_matches(&info) {
            crate::log::warn(format_args!(
                "key \"{label}\": the private key does not match the public key given; not stored"
            ));
            return Err(undo(Error::new(CKR_TEMPLATE_INCONSISTENT)));
        }
        if meta != Meta::default() {
            let record = meta.encode();
            self.store
                .add(
                    keyring,
                    "user",
                    &lifecycle::meta_description(&info.derived_id),
                    &record,
                )
                .map_err(|e| undo(self.write_error(s.slot, e, "storing key metadata")))?;
        }
        if let Some(id) = meta.id {
            info.id = id;
        }
        info.local = meta.local;
        let info = Arc::new(info);
        self.keys.lock().insert(serial, Known::Key(info.clone()));
        Ok(info)
    }

    fn pair_matches(&self, info: &KeyInfo) -> bool {
        let k = info.sig_len;
        let mut x = vec![0u8; k];
        if crate::random::fill(&mut x[1..]).is_err() {
            return false;
        }
        let mut y = vec![0u8; k];
        let mut z = vec![0u8; k];
        self.store.private_raw(info.serial, &x, &mut y).is_ok()
            && self.store.public_raw(info.serial, &y, &mut z).is_ok()
            && {
                let v = num_bigint::BigUint::from_bytes_be(&y).modpow(
                    &num_bigint::BigUint::from_bytes_be(&info.public.exponent),
                    &info.n,
                );
                num_bigint::BigUint::from_bytes_be(&x) == v && z == x
            }
    }

    fn handles(&self, slot: usize, serial: Serial) -> Result<(CK_OBJECT_HANDLE, CK_OBJECT_HANDLE)> {
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

    /// `C_CreateObject`: an RSA private key from a full PKCS#11 template (or
    /// PKCS#8 in `CKA_VALUE`) goes to the kernel; a public key is accepted
    /// when its private key is already in the token (it is that key's public
    /// object). `template` borrows the caller's memory: nothing secret is
    /// copied except into the wiped PKCS#8 buffer.
    pub fn create_object(
        &self,
        h: CK_SESSION_HANDLE,
        template: &[(CK_ATTRIBUTE_TYPE, &[u8])],
    ) -> Result<CK_OBJECT_HANDLE> {
        let (s, keyring) = self.writable(h)?;
        let t = Tmpl(template);
        let class = t
            .ulong(CKA_CLASS)?
            .ok_or(Error::new(CKR_TEMPLATE_INCOMPLETE))?;
        if class == CKO_CERTIFICATE {
            return self.create_certificate(&s, keyring, &t);
        }
        if class != CKO_PRIVATE_KEY && class != CKO_PUBLIC_KEY {
            crate::log::warn(format_args!(
                "C_CreateObject: only RSA keys and X.509 certificates can be created (class {class:#x})"
            ));
            return Err(Error::new(CKR_ATTRIBUTE_VALUE_INVALID));
        }
        if t.ulong(CKA_KEY_TYPE)?.is_some_and(|k| k != CKK_RSA) {
            return Err(Error::new(CKR_ATTRIBUTE_VALUE_INVALID));
        }
        t.check_storable()?;
        let rsa = RsaTemplate {
            modulus: t.get(CKA_MODULUS),
            public_exponent: t.get(CKA_PUBLIC_EXPONENT),
            private_exponent: t.get(CKA_PRIVATE_EXPONENT),
            prime1: t.get(CKA_PRIME_1),
            prime2: t.get(CKA_PRIME_2),
            exponent1: t.get(CKA_EXPONENT_1),
            exponent2: t.get(CKA_EXPONENT_2),
            coefficient: t.get(CKA_COEFFICIENT),
        };
        let id = t.get(CKA_ID).map(<[u8]>::to_vec);
        if class == CKO_PUBLIC_KEY {
            let public = rsa.public().map_err(Error::new)?;
            let key = self.scan(s.slot)?.keys.into_iter().find(|k| k.public.modulus == public.modulus).ok_or_else(|| {
                crate::log::warn(format_args!("C_CreateObject: a public key is stored only with its private key, which is not in this token"));
                Error::new(CKR_TEMPLATE_INCONSISTENT)
            })?;
            if let Some(id) = id {
                self.set_id(s.slot, keyring, &key, id)?;
            }
            return Ok(self.handles(s.slot, key.serial)?.0);
        }
        let (der, public) = match t.get(CKA_VALUE) {
            Some(pkcs8) => {
                use rsa::pkcs8::DecodePrivateKey;
                use rsa::traits::PublicKeyParts;
                let k = rsa::RsaPrivateKey::from_pkcs8_der(pkcs8)
                    .map_err(|_| Error::new(CKR_ATTRIBUTE_VALUE_INVALID))?;
                (
                    Zeroizing::new(pkcs8.to_vec()),
                    RsaPublic {
                        modulus: k.n().to_bytes_be(),
                        exponent: k.e().to_bytes_be(),
                    },
                )
            }
            None => (
                rsa.pkcs8().map_err(Error::new)?,
                rsa.public().map_err(Error::new)?,
            ),
        };
        let label = t.label(&public)?;
        let derived = public.key_id();
        let meta = Meta {
            id: id.filter(|i| *i != derived),
            local: false,
        };
        let info = self.load_private(&s, keyring, &label, &der, public, meta)?;
        drop(der);
        Ok(self.handles(s.slot, info.serial)?.1)
    }

    /// An X.509 certificate (`CKC_X_509`, DER in `CKA_VALUE`), kept in a
    /// `user` key of the token's keyring. Its `CKA_ID` defaults to its RSA
    /// key's, so it pairs with that key with no help from the caller.
    fn create_certificate(
        &self,
        s: &SessionEntry,
        keyring: Serial,
        t: &Tmpl<'_>,
    ) -> Result<CK_OBJECT_HANDLE> {
        if t.ulong(CKA_CERTIFICATE_TYPE)?
            .is_some_and(|c| c != CKC_X_509)
        {
            return Err(Error::new(CKR_ATTRIBUTE_VALUE_INVALID));
        }
        t.check_storable()?;
        let der = t
            .get(CKA_VALUE)
            .ok_or(Error::new(CKR_TEMPLATE_INCOMPLETE))?
            .to_vec();
        let id = match t.get(CKA_ID) {
            Some(id) => id.to_vec(),
            None => CertInfo::default_id(&der).ok_or(Error::new(CKR_ATTRIBUTE_VALUE_INVALID))?,
        };
        let label = match t.get(CKA_LABEL) {
            Some(l) => String::from_utf8(l.to_vec())
                .map_err(|_| Error::new(CKR_ATTRIBUTE_VALUE_INVALID))?,
            None => String::new(),
        };
        if CertInfo::parse(0, String::new(), Vec::new(), der.clone()).is_none() {
            return Err(Error::new(CKR_ATTRIBUTE_VALUE_INVALID));
        }
        let record = CertRecord { label, id, der };
        let serial = self
            .store
            .add(keyring, "user", &record.description(), &record.encode())
            .map_err(|e| self.write_error(s.slot, e, "storing a certificate"))?;
        let info = Arc::new(
            CertInfo::parse(serial, record.label, record.id, record.der).expect("parsed above"),
        );
        self.keys.lock().insert(serial, Known::Cert(info));
        Ok(self.state.lock().handle_for(ObjKey {
            slot: s.slot,
            serial,
            class: Class::Certificate,
        }))
    }

    /// `C_GenerateKeyPair` with `CKM_RSA_PKCS_KEY_PAIR_GEN`. The kernel cannot
    /// generate keys; RustCrypto does, and the key goes straight in.
    pub fn generate_key_pair(
        &self,
        h: CK_SESSION_HANDLE,
        mech: CK_MECHANISM_TYPE,
        params: &MechParams,
        public_template: &[(CK_ATTRIBUTE_TYPE, &[u8])],
        private_template: &[(CK_ATTRIBUTE_TYPE, &[u8])],
    ) -> Result<(CK_OBJECT_HANDLE, CK_OBJECT_HANDLE)> {
        let (s, keyring) = self.writable(h)?;
        if mech != CKM_RSA_PKCS_KEY_PAIR_GEN {
            return Err(Error::new(CKR_MECHANISM_INVALID));
        }
        if *params != MechParams::None {
            return Err(Error::new(CKR_MECHANISM_PARAM_INVALID));
        }
        let (pt, st) = (Tmpl(public_template), Tmpl(private_template));
        pt.check_storable()?;
        st.check_storable()?;
        let bits = pt
            .ulong(CKA_MODULUS_BITS)?
            .ok_or(Error::new(CKR_TEMPLATE_INCOMPLETE))?;
        let bits = u32::try_from(bits).map_err(|_| Error::new(CKR_KEY_SIZE_RANGE))?;
        let exponent = match pt.get(CKA_PUBLIC_EXPONENT) {
            Some(e) if e.len() <= 8 => e.iter().fold(0u64, |a, b| (a << 8) | u64::from(*b)),
            Some(_) => return Err(Error::new(CKR_ATTRIBUTE_VALUE_INVALID)),
            None => 65537,
        };
        let (der, public) = lifecycle::generate(bits, exponent).map_err(Error::new)?;
        let id = st.get(CKA_ID).or(pt.get(CKA_ID)).map(<[u8]>::to_vec);
        let label = match st.get(CKA_LABEL).or(pt.get(CKA_LABEL)) {
            Some(_) if st.get(CKA_LABEL).is_some() => st.label(&public)?,
            Some(_) => pt.label(&public)?,
            None => st.label(&public)?,
        };
        let derived = public.key_id();
        let meta = Meta {
            id: id.filter(|i| *i != derived),
            local: true,
        };
        let info = self.load_private(&s, keyring, &label, &der, public, meta)?;
        drop(der);
        self.handles(s.slot, info.serial)
    }

    /// `C_DestroyObject`: unlinks the kernel key (and its metadata) from the
    /// token's keyring. The public object is the key's own view and cannot be
    /// destroyed alone.
    pub fn destroy_object(&self, h: CK_SESSION_HANDLE, obj: CK_OBJECT_HANDLE) -> Result<()> {
        let (s, keyring) = self.writable(h)?;
        if let Some(c) = self.cert(h, obj)? {
            self.store
                .unlink(keyring, c.serial)
                .map_err(|e| self.write_error(s.slot, e, "removing a certificate"))?;
            self.forget(c.serial);
            let mut st = self.state.lock();
            if let Some(h) = st.handles.remove(&ObjKey {
                slot: s.slot,
                serial: c.serial,
                class: Class::Certificate,
            }) {
                st.objects.remove(&h);
            }
            return Ok(());
        }
        let (_, key, class) = self.object(h, obj)?;
        if class == Class::Public {
            return Err(Error::new(CKR_ACTION_PROHIBITED));
        }
        self.store.unlink(keyring, key.serial).map_err(|e| {
            if e.is_key_gone() || e.0 == libc::ENOENT {
                Error::new(CKR_OBJECT_HANDLE_INVALID)
            } else {
                self.write_error(s.slot, e, "removing a key")
            }
        })?;
        self.forget(key.serial);
        if let Some(meta) = self.meta_serial(keyring, &key) {
            let _ = self.store.unlink(keyring, meta);
        }
        let mut st = self.state.lock();
        for class in [Class::Private, Class::Public] {
            if let Some(h) = st.handles.remove(&ObjKey {
                slot: s.slot,
                serial: key.serial,
                class,
            }) {
                st.objects.remove(&h);
            }
        }
        Ok(())
    }

    fn meta_serial(&self, keyring: Serial, key: &KeyInfo) -> Option<Serial> {
        let links = self.store.links(keyring).ok()?;
        let want = lifecycle::meta_description(&key.derived_id);
        links.into_iter().find(|s| {
            let cached = match self.keys.lock().get(s) {
                Some(Known::Meta(id)) => Some(*id == key.derived_id),
                Some(_) => Some(false),
                None => None,
            };
            // A record not scanned yet (this process may have just written
            // it) is recognised by its description.
            cached.unwrap_or_else(|| {
                self.store
                    .describe(*s)
                    .is_ok_and(|d| d.key_type == "user" && d.description == want)
            })
        })
    }

    fn set_id(&self, slot: usize, keyring: Serial, key: &KeyInfo, id: Vec<u8>) -> Result<()> {
        let meta = Meta {
            id: Some(id.clone()).filter(|i| *i != key.derived_id),
            local: key.local,
        };
        if meta == Meta::default() {
            if let Some(m) = self.meta_serial(keyring, key) {
                let _ = self.store.unlink(keyring, m);
            }
        } else {
            self.store
                .add(
                    keyring,
                    "user",
                    &lifecycle::meta_description(&key.derived_id),
                    &meta.encode(),
                )
                .map_err(|e| self.write_error(slot, e, "storing key metadata"))?;
        }
        let updated = Arc::new(KeyInfo { id, ..key.clone() });
        self.keys.lock().insert(key.serial, Known::Key(updated));
        Ok(())
    }

    /// `C_SetAttributeValue`: `CKA_ID` is kept in the key's metadata record;
    /// a kernel key's description (`CKA_LABEL`) cannot change, nor can
    /// anything else, except to the value it already has.
    pub fn set_attributes(
        &self,
        h: CK_SESSION_HANDLE,
        obj: CK_OBJECT_HANDLE,
        template: &[(CK_ATTRIBUTE_TYPE, &[u8])],
    ) -> Result<()> {
        let (s, keyring) = self.writable(h)?;
        if let Some(c) = self.cert(h, obj)? {
            // Stored certificates are immutable; setting a value they already have is fine.
            let same = template.iter().all(|(t, v)| matches!(object::cert_attribute(&c, *t), AttrValue::Value(cur) if cur == *v));
            return if same {
                Ok(())
            } else {
                Err(Error::new(CKR_ATTRIBUTE_READ_ONLY))
            };
        }
        let (_, key, class) = self.object(h, obj)?;
        let mut new_id = None;
        for (t, v) in template {
            match (*t, object::attribute(&key, class, *t)) {
                (CKA_ID, _) => new_id = Some(v.to_vec()),
                (_, AttrValue::Value(cur)) if cur == *v => {}
                (CKA_LABEL, _) => {
                    crate::log::warn(format_args!(
                        "CKA_LABEL is the kernel key's description, which cannot change"
                    ));
                    return Err(Error::new(CKR_ATTRIBUTE_READ_ONLY));
                }
                (_, AttrValue::Invalid) => return Err(Error::new(CKR_ATTRIBUTE_TYPE_INVALID)),
                _ => return Err(Error::new(CKR_ATTRIBUTE_READ_ONLY)),
            }
        }
        if let Some(id) = new_id {
            self.set_id(s.slot, keyring, &key, id)?;
        }
        Ok(())
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

    /// `C_SessionCancel` (PKCS#11 3.0): ends the session's active operations
    /// named by `flags`. Cancelling a kind that is not running is not an
    /// error; our operations finish inside one call, so there is never one
    /// that cannot be cancelled. Flags of operations the module has no
    /// multi-call form of (message-based, key generation, wrapping) have
    /// nothing to cancel and are accepted for the same reason.
    pub fn session_cancel(&self, h: CK_SESSION_HANDLE, flags: CK_FLAGS) -> Result<()> {
        let s = self.state.lock().session(h)?;
        let mut ops = s.ops.lock();
        for kind in [
            OpKind::Sign,
            OpKind::Verify,
            OpKind::VerifyRecover,
            OpKind::Encrypt,
            OpKind::Decrypt,
        ] {
            if flags & kind.flag() != 0 {
                ops.crypt[kind.index()] = None;
            }
        }
        if flags & CKF_DIGEST != 0 {
            ops.digest = None;
        }
        if flags & CKF_FIND_OBJECTS != 0 {
            ops.find = None;
        }
        Ok(())
    }

    /// Looks up an object visible to a session: one of the session's token.
    fn object(
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
    fn cert(&self, h: CK_SESSION_HANDLE, obj: CK_OBJECT_HANDLE) -> Result<Option<Arc<CertInfo>>> {
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

    /// `C_SignInit`, `C_VerifyInit`, `C_VerifyRecoverInit`, `C_EncryptInit`,
    /// `C_DecryptInit`.
    pub fn op_init(
        &self,
        h: CK_SESSION_HANDLE,
        kind: OpKind,
        mech: CK_MECHANISM_TYPE,
        params: &MechParams,
        key: CK_OBJECT_HANDLE,
    ) -> Result<()> {
        let (s, info, class) = self.object(h, key).map_err(|e| {
            if e.rv == CKR_OBJECT_HANDLE_INVALID {
                Error::new(CKR_KEY_HANDLE_INVALID)
            } else {
                e
            }
        })?;
        if s.ops.lock().crypt[kind.index()].is_some() {
            return Err(Error::new(CKR_OPERATION_ACTIVE));
        }
        let spec = mechanism::lookup(mech)
            .filter(|m| m.flags & kind.flag() != 0)
            .ok_or(Error::new(CKR_MECHANISM_INVALID))?;
        if class != kind.class() {
            return Err(Error::new(CKR_KEY_FUNCTION_NOT_PERMITTED));
        }
        let resolved = mechanism::resolve(spec, params, info.bits).map_err(Error::new)?;
        if kind.class() == Class::Private {
            // Fail now, not at C_Sign, if the key was revoked, expired or
            // unlinked since it was found: two cheap calls, no lock held. A
            // key unlinked from the token's keyring has left the token even if
            // the kernel has not collected it yet (it may still live elsewhere).
            if !self.still_linked(s.slot, info.serial) {
                self.forget(info.serial);
                return Err(Error::new(CKR_KEY_HANDLE_INVALID));
            }
            let q = self
                .store
                .query(info.serial)
                .map_err(|e| self.key_error(s.slot, &info, e, "operation init"))?;
            let need = if kind == OpKind::Sign && spec.padding == Padding::Pkcs1 {
                KEYCTL_SUPPORTS_SIGN
            } else {
                KEYCTL_SUPPORTS_DECRYPT
            };
            if q.supported_ops & need == 0 {
                return Err(Error::new(CKR_KEY_FUNCTION_NOT_PERMITTED));
            }
        } else {
            // Public operations run in userspace on the recovered public key
            // (see `crypto`), so the kernel no longer notices a key that has
            // gone: check here that the key pair is still in the token and
            // alive (KEYCTL_DESCRIBE fails on a revoked or expired key), as
            // for the private key above but without PKEY_QUERY's crypto set-up.
            if !self.still_linked(s.slot, info.serial) {
                self.forget(info.serial);
                return Err(Error::new(CKR_KEY_HANDLE_INVALID));
            }
            self.store
                .describe(info.serial)
                .map_err(|e| self.key_error(s.slot, &info, e, "operation init"))?;
        }
        let acc = Acc::new(&resolved);
        let mut ops = s.ops.lock();
        let slot = &mut ops.crypt[kind.index()];
        if slot.is_some() {
            return Err(Error::new(CKR_OPERATION_ACTIVE));
        }
        *slot = Some(CryptOp {
            slot: s.slot,
            key: info,
            mech: resolved,
            acc,
            multipart: false,
        });
        Ok(())
    }

    fn still_linked(&self, slot: usize, serial: Serial) -> bool {
        match self.keyring(slot).map(|k| self.store.links(k)) {
            Some(Ok(links)) => links.contains(&serial),
            _ => false,
        }
    }

    fn forget(&self, serial: Serial) {
        self.keys.lock().remove(&serial);
    }

    /// Maps a kernel error on a key and forgets a key that is gone for good.
    /// A refusal (EACCES) right after the key was unlinked from the token's
    /// keyring means the key left the token: an invalid handle, not a
    /// permission problem.
    fn key_error(&self, slot: usize, info: &KeyInfo, e: Errno, what: &str) -> Error {
        let refused = matches!(e.0, libc::EACCES | libc::EPERM);
        if e.is_key_gone() || (refused && !self.still_linked(slot, info.serial)) {
            self.forget(info.serial);
            crate::log::info(format_args!(
                "{what}: key {} (\"{}\") is gone: {e}",
                info.serial, info.label
            ));
            return Error::new(CKR_KEY_HANDLE_INVALID);
        }
        Error::from_key_errno(
            e,
            &format!("{what} with key {} (\"{}\")", info.serial, info.label),
        )
    }

    /// `C_SignUpdate` and `C_VerifyUpdate`.
    pub fn op_update(&self, h: CK_SESSION_HANDLE, kind: OpKind, data: &[u8]) -> Result<()> {
        let s = self.state.lock().session(h)?;
        let mut ops = s.ops.lock();
        let slot = &mut ops.crypt[kind.index()];
        let op = slot
            .as_mut()
            .ok_or(Error::new(CKR_OPERATION_NOT_INITIALIZED))?;
        op.multipart = true;
        let limit = op.key.sig_len;
        if let Err(e) = op.acc.add(data, limit) {
            *slot = None;
            return Err(e);
        }
        Ok(())
    }

    /// Takes the operation out of the session for its final step, answering
    /// size queries (`out` = None) and too-small buffers without doing the
    /// work and without ending the operation. With `exact`, the output is
    /// exactly k bytes; otherwise k bounds it.
    fn take_for_final(
        &self,
        s: &SessionEntry,
        kind: OpKind,
        single: Option<&[u8]>,
        out: Option<&[u8]>,
        exact: bool,
    ) -> Result<Final> {
        let mut ops = s.ops.lock();
        let slot = &mut ops.crypt[kind.index()];
        let op = slot
            .as_ref()
            .ok_or(Error::new(CKR_OPERATION_NOT_INITIALIZED))?;
        if single.is_some() && op.multipart {
            // A one-part call after an update is a caller error; end it.
            *slot = None;
            return Err(Error::new(CKR_OPERATION_ACTIVE));
        }
        let need = op.key.sig_len;
        match out {
            None => return Ok(Final::SizeOnly(need)),
            Some(buf) if exact && buf.len() < need => return Err(Error::buffer_too_small(need)),
            _ => {}
        }
        Ok(Final::Run(
            slot.take().expect("checked above under the same lock"),
        ))
    }

    /// `C_Sign` (`data` = Some) and `C_SignFinal` (`data` = None).
    pub fn sign(
        &self,
        h: CK_SESSION_HANDLE,
        data: Option<&[u8]>,
        out: Option<&mut [u8]>,
    ) -> Result<usize> {
        self.produce(h, OpKind::Sign, data, out)
    }

    /// `C_Encrypt`: single-part only, as PKCS#11 defines RSA encryption.
    pub fn encrypt(
        &self,
        h: CK_SESSION_HANDLE,
        data: &[u8],
        out: Option<&mut [u8]>,
    ) -> Result<usize> {
        self.produce(h, OpKind::Encrypt, Some(data), out)
    }

    /// `C_Decrypt`: single-part only.
    pub fn decrypt(
        &self,
        h: CK_SESSION_HANDLE,
        data: &[u8],
        out: Option<&mut [u8]>,
    ) -> Result<usize> {
        self.produce(h, OpKind::Decrypt, Some(data), out)
    }

    /// `C_VerifyRecover`.
    pub fn verify_recover(
        &self,
        h: CK_SESSION_HANDLE,
        signature: &[u8],
        out: Option<&mut [u8]>,
    ) -> Result<usize> {
        self.produce(h, OpKind::VerifyRecover, Some(signature), out)
    }

    /// The operations that produce bytes. Output lengths: a signature or a
    /// ciphertext is exactly k bytes, so a short buffer is refused before any
    /// work; a plaintext is at most k bytes, so a size query answers k, and a
    /// buffer shorter than k is tried, answering the exact length if it does
    /// not fit (the operation then stays active, per the two-call convention).
    fn produce(
        &self,
        h: CK_SESSION_HANDLE,
        kind: OpKind,
        data: Option<&[u8]>,
        out: Option<&mut [u8]>,
    ) -> Result<usize> {
        let s = self.state.lock().session(h)?;
        let exact = matches!(kind, OpKind::Sign | OpKind::Encrypt);
        let op = match self.take_for_final(&s, kind, data, out.as_deref(), exact)? {
            Final::Run(op) => op,
            Final::SizeOnly(n) => return Ok(n),
        };
        let payload = op.acc.payload(data);
        let result: std::result::Result<Zeroizing<Vec<u8>>, OpError> = match kind {
            OpKind::Sign => {
                crypto::sign(&*self.store, &op.key, &op.mech, &payload).map(Zeroizing::new)
            }
            OpKind::Encrypt => {
                crypto::encrypt(&*self.store, &op.key, &op.mech, &payload).map(Zeroizing::new)
            }
            OpKind::Decrypt => crypto::decrypt(&*self.store, &op.key, &op.mech, &payload),
            OpKind::VerifyRecover => {
                crypto::verify_recover(&*self.store, &op.key, &op.mech, &payload)
                    .map(Zeroizing::new)
            }
            OpKind::Verify => unreachable!("verify produces no bytes"),
        };
        let result = result.map_err(|e| self.op_error(&op, e, kind))?;
        let out = out.expect("size queries were answered above");
        if out.len() < result.len() {
            // Only for decryption and recovery: keep the operation so the
            // caller can retry with a larger buffer.
            s.ops.lock().crypt[kind.index()] = Some(op);
            return Err(Error::buffer_too_small(result.len()));
        }
        out[..result.len()].copy_from_slice(&result);
        Ok(result.len())
    }

    /// `C_Verify` (`data` = Some) and `C_VerifyFinal` (`data` = None).
    pub fn verify(
        &self,
        h: CK_SESSION_HANDLE,
        data: Option<&[u8]>,
        signature: &[u8],
    ) -> Result<()> {
        let s = self.state.lock().session(h)?;
        let Final::Run(op) =
            self.take_for_final(&s, OpKind::Verify, data, Some(signature), false)?
        else {
            unreachable!("a verification always has its signature")
        };
        let payload = op.acc.payload(data);
        crypto::verify(&*self.store, &op.key, &op.mech, &payload, signature)
            .map_err(|e| self.op_error(&op, e, OpKind::Verify))
    }

    fn op_error(&self, op: &CryptOp, e: OpError, kind: OpKind) -> Error {
        match e {
            OpError::Ck(rv) => Error::new(rv),
            OpError::Kernel(errno) => self.key_error(op.slot, &op.key, errno, &format!("{kind:?}")),
        }
    }

    pub fn digest_init(
        &self,
        h: CK_SESSION_HANDLE,
        mech: CK_MECHANISM_TYPE,
        params: &MechParams,
    ) -> Result<()> {
        let s = self.state.lock().session(h)?;
        let spec = mechanism::lookup(mech)
            .filter(|m| m.padding == Padding::Digest)
            .ok_or(Error::new(CKR_MECHANISM_INVALID))?;
        if *params != MechParams::None {
            return Err(Error::new(CKR_MECHANISM_PARAM_INVALID));
        }
        let hasher = spec
            .hash
            .expect("digest mechanisms name their hash")
            .hasher();
        let mut ops = s.ops.lock();
        if ops.digest.is_some() {
            return Err(Error::new(CKR_OPERATION_ACTIVE));
        }
        ops.digest = Some(DigestOp {
            hasher,
            multipart: false,
        });
        Ok(())
    }

    pub fn digest_update(&self, h: CK_SESSION_HANDLE, data: &[u8]) -> Result<()> {
        let s = self.state.lock().session(h)?;
        let mut ops = s.ops.lock();
        let d = ops
            .digest
            .as_mut()
            .ok_or(Error::new(CKR_OPERATION_NOT_INITIALIZED))?;
        d.multipart = true;
        d.hasher.update(data);
        Ok(())
    }

    /// `C_Digest` (`data` = Some) and `C_DigestFinal` (`data` = None), with
    /// the two-call convention.
    pub fn digest(
        &self,
        h: CK_SESSION_HANDLE,
        data: Option<&[u8]>,
        out: Option<&mut [u8]>,
    ) -> Result<usize> {
        let s = self.state.lock().session(h)?;
        let mut ops = s.ops.lock();
        let d = ops
            .digest
            .as_ref()
            .ok_or(Error::new(CKR_OPERATION_NOT_INITIALIZED))?;
        if data.is_some() && d.multipart {
            ops.digest = None;
            return Err(Error::new(CKR_OPERATION_ACTIVE));
        }
        let mut hasher = d.hasher.clone();
        if let Some(d) = data {
            hasher.update(d);
        }
        let digest = hasher.finish();
        match out {
            None => Ok(digest.len()),
            Some(buf) if buf.len() < digest.len() => Err(Error::buffer_too_small(digest.len())),
            Some(buf) => {
                buf[..digest.len()].copy_from_slice(&digest);
                ops.digest = None;
                Ok(digest.len())
            }
        }
    }
}

/// A creation template, borrowed from the caller.
struct Tmpl<'a>(&'a [(CK_ATTRIBUTE_TYPE, &'a [u8])]);

impl<'a> Tmpl<'a> {
    fn get(&self, t: CK_ATTRIBUTE_TYPE) -> Option<&'a [u8]> {
        self.0.iter().find(|(ty, _)| *ty == t).map(|(_, v)| *v)
    }

    fn ulong(&self, t: CK_ATTRIBUTE_TYPE) -> Result<Option<CK_ULONG>> {
        match self.get(t) {
            None => Ok(None),
            Some(v) => <[u8; std::mem::size_of::<CK_ULONG>()]>::try_from(v)
                .map(|b| Some(CK_ULONG::from_ne_bytes(b)))
                .map_err(|_| Error::new(CKR_ATTRIBUTE_VALUE_INVALID)),
        }
    }

    fn bool(&self, t: CK_ATTRIBUTE_TYPE) -> Result<Option<bool>> {
        match self.get(t) {
            None => Ok(None),
            Some([b]) => Ok(Some(*b != 0)),
            Some(_) => Err(Error::new(CKR_ATTRIBUTE_VALUE_INVALID)),
        }
    }

    /// Refuses what a kernel key can never be: extractable, or a session
    /// object (keys always live in a keyring: use the process token for keys
    /// that must die with the process).
    fn check_storable(&self) -> Result<()> {
        if self.bool(CKA_EXTRACTABLE)? == Some(true) {
            crate::log::warn(format_args!(
                "kernel keys can never be extracted: CKA_EXTRACTABLE=TRUE refused"
            ));
            return Err(Error::new(CKR_ATTRIBUTE_VALUE_INVALID));
        }
        if self.bool(CKA_TOKEN)? == Some(false) {
            crate::log::warn(format_args!(
                "session objects are not supported; create the key in the \"process\" token, which dies with the process"
            ));
            return Err(Error::new(CKR_ATTRIBUTE_VALUE_INVALID));
        }
        Ok(())
    }

    /// `CKA_LABEL`, which becomes the kernel key's description (never empty).
    fn label(&self, public: &RsaPublic) -> Result<String> {
        match self.get(CKA_LABEL) {
            Some(l) if !l.is_empty() => {
                String::from_utf8(l.to_vec()).map_err(|_| Error::new(CKR_ATTRIBUTE_VALUE_INVALID))
            }
            _ => Ok(format!("rsa-{}", &lifecycle::hex(&public.key_id())[..16])),
        }
    }
}

fn resolve(store: &dyn KeyStore, t: &Token) -> Option<Serial> {
    match store.resolve(&t.kind) {
        Ok(s) => Some(s),
        Err(e) => {
            crate::log::info(format_args!("token \"{}\" not present: {e}", t.label));
            None
        }
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
    if desc.key_type == "user" && desc.description.starts_with(lifecycle::CERT_PREFIX) {
        let record = store.read(serial).ok().and_then(|b| CertRecord::decode(&b));
        return match record.and_then(|r| CertInfo::parse(serial, r.label, r.id, r.der)) {
            Some(c) => Some(Known::Cert(Arc::new(c))),
            None => Some(Known::Ignored),
        };
    }
    if desc.key_type == "user" {
        if let Some(hex) = desc.description.strip_prefix(lifecycle::META_PREFIX) {
            return Some(lifecycle::unhex(hex).map_or(Known::Ignored, Known::Meta));
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
        Err(RecoverError::Oracle(e)) => {
            crate::log::info(format_args!(
                "key {serial} (\"{}\"): public operation failed: {e}",
                desc.description
            ));
            None
        }
        Err(RecoverError::Inconsistent(why)) => {
            crate::log::warn(format_args!(
                "key {serial} (\"{}\") skipped: {why}",
                desc.description
            ));
            Some(Known::Ignored)
        }
    }
}

#[cfg(test)]
mod tests;
