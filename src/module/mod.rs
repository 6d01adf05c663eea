//! The PKCS#11 logic — tokens, sessions, objects, operations — in safe Rust,
//! independent of the C ABI (`ffi`) and of the kernel (it speaks only to
//! `kernel::store::KeyStore`, so the unit tests run it over an in-memory
//! store).
//!
//! One `Module` and one `impl Module` block per concern:
//! - `tokens`: the token catalogue (one slot per keyring) and slot/token info;
//! - `sessions`: sessions and login;
//! - `discovery`: what a token's keyring holds, and the cache of what each
//!   kernel key is (public key recovery is done once per key), learned on
//!   several CPUs at once where a client wants many keys (`parallel`);
//! - `objects`: the handle table, searches and attribute reads;
//! - `provisioning`: writing into the kernel (create, generate, destroy,
//!   `CKA_ID` changes), with `template` reading the caller's templates;
//! - `operations`: the sign/verify/encrypt/decrypt state machine;
//! - `digest`: message digests.
//!
//! Locking: `Module::state` guards the tables, `Module::keys` the cache, each
//! session has its own operation lock, and none is ever held across a kernel
//! call. Work that needs the kernel copies what it needs out of the tables,
//! drops the lock, calls the kernel, and then looks its target up again, so a
//! session closed meanwhile yields a defined error instead of a dangling
//! reference. Handles are never reused.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::idhash::IdHashMap;
use crate::kernel::keyctl::Serial;
use crate::kernel::store::{KeyStore, TokenKind};
use crate::object::{Class, KeyRecord};
use crate::sync::Mutex;
use cryptoki_sys::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

mod digest;
mod discovery;
mod objects;
mod operations;
mod parallel;
mod provisioning;
mod session_objects;
mod sessions;
mod template;
mod tokens;

pub use operations::OpKind;
pub(crate) use parallel::MAX_THREADS;
pub use sessions::SessionInfo;
pub use tokens::{SlotInfo, Token, TokenInfo};

use discovery::Known;
use operations::Ops;

/// Handles come from process-wide counters and are never reused, not even
/// across `C_Finalize`/`C_Initialize`: a stale handle can only ever be invalid.
static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);
static NEXT_OBJECT: AtomicU64 = AtomicU64::new(1);

fn next_handle(c: &AtomicU64) -> CK_ULONG {
    c.fetch_add(1, Ordering::Relaxed) as CK_ULONG
}

pub struct Module {
    store: Arc<dyn KeyStore>,
    tokens: Vec<Token>,
    state: Mutex<State>,
    /// What each kernel key seen so far is, by serial (the kernel never
    /// gives a live key's serial to another).
    keys: Mutex<IdHashMap<Serial, Known>>,
    /// What each token's records say about its keys, once looked up.
    records: Mutex<IdHashMap<(usize, Serial), Arc<KeyRecord>>>,
    /// Each token's keyring (and its session objects' keyring) as the last
    /// full look found it: unchanged links need no other kernel call.
    views: Mutex<Vec<[Option<Arc<discovery::RingView>>; 2]>>,
    /// The same keyrings' links as last read, by a full look or a search by
    /// label: what a search by label checks its key against.
    linked: Mutex<Vec<[Option<Arc<discovery::LinkSet>>; 2]>>,
    /// When each keyring's links were last read by a full look: how old
    /// the view a search by `CKA_ID` trusts may be (see `scan_id`).
    looked: Mutex<Vec<[Option<std::time::Instant>; 2]>>,
    /// Session objects (`CKA_TOKEN` false): a keyring of this module's own
    /// per token, linked into the process keyring (so the kernel destroys it
    /// with the process, however it dies), and which session made each key,
    /// record and certificate in it (they go when that session closes).
    session_rings: Mutex<Vec<Option<Serial>>>,
    session_objects: Mutex<IdHashMap<Serial, CK_SESSION_HANDLE>>,
    /// How many threads, the caller's included, learn keys at once
    /// (`parallel`).
    threads: usize,
}

struct SessionEntry {
    slot: usize,
    rw: bool,
    ops: Mutex<Ops>,
}

/// An object: a kernel key (as its private or public object) or a
/// certificate record, in one token.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct ObjKey {
    slot: usize,
    serial: Serial,
    class: Class,
}

#[derive(Default)]
struct State {
    /// Each token's keyring as last looked up (see `tokens::keyring`), and
    /// when: the persistent keyring's lookup renews its expiry.
    keyrings: Vec<Option<Serial>>,
    renewed: Vec<Option<std::time::Instant>>,
    login: Vec<Option<CK_USER_TYPE>>,
    sessions: IdHashMap<CK_SESSION_HANDLE, Arc<SessionEntry>>,
    objects: IdHashMap<CK_OBJECT_HANDLE, ObjKey>,
    handles: IdHashMap<ObjKey, CK_OBJECT_HANDLE>,
    /// Counts the objects that left (see `drop_handle`): a search that saw it
    /// change while it ran looks again at which of its keys are still known
    /// before it hands out handles.
    dropped: u64,
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

    /// Forgets the handles of an object that left the token.
    fn drop_handle(&mut self, k: ObjKey) {
        self.dropped += 1;
        if let Some(h) = self.handles.remove(&k) {
            self.objects.remove(&h);
        }
    }
}

impl Module {
    /// How many threads, the caller's included, learn keys at once.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Builds the module. No kernel call: each token's keyring is looked up
    /// when it is used.
    pub fn new(store: Arc<dyn KeyStore>, config: &Config) -> Module {
        let mut kinds = vec![
            TokenKind::Session,
            TokenKind::User,
            TokenKind::Persistent,
            TokenKind::Process,
        ];
        kinds.extend(config.named_keyrings.iter().cloned().map(TokenKind::Named));
        let mut m = Module::with_tokens(store, kinds);
        if let Some(n) = config.threads {
            m.threads = n;
        }
        m
    }

    /// A module with exactly these tokens, in this order (slot i is
    /// `kinds[i]`): for a program that needs one token and should not touch
    /// the others' keyrings (resolving the persistent keyring creates it).
    pub fn with_tokens(store: Arc<dyn KeyStore>, kinds: Vec<TokenKind>) -> Module {
        let uid = crate::kernel::keyctl::uid();
        let tokens: Vec<Token> = kinds.into_iter().map(|k| Token::new(k, uid)).collect();
        let state = State {
            keyrings: vec![None; tokens.len()],
            renewed: vec![None; tokens.len()],
            login: vec![None; tokens.len()],
            ..State::default()
        };
        Module {
            views: Mutex::new((0..tokens.len()).map(|_| [None, None]).collect()),
            linked: Mutex::new((0..tokens.len()).map(|_| [None, None]).collect()),
            looked: Mutex::new((0..tokens.len()).map(|_| [None, None]).collect()),
            session_rings: Mutex::new(vec![None; tokens.len()]),
            store,
            tokens,
            state: Mutex::new(state),
            keys: Mutex::default(),
            records: Mutex::default(),
            session_objects: Mutex::default(),
            threads: parallel::default_threads(),
        }
    }
}

#[cfg(test)]
mod tests;
