//! The client the fuzzer drives: the function list, the mock kernel's
//! tokens, and what the client has learnt so far (sessions, objects, key
//! pairs, the last output), from which the next call's handles are chosen.

use crate::buffers::Guarded;
use crate::keys::{self, keys};
use crate::stats;
use arbitrary::Arbitrary;
use cryptoki_sys::*;
use keyring_pkcs11::kernel::mock::{MockStore, install_factory, install_generator};
use keyring_pkcs11::kernel::store::{KeyStore, TokenKind};
use std::collections::BTreeSet;
use std::ffi::c_void;
use std::ptr::null_mut;
use std::sync::{Arc, Mutex, OnceLock};

unsafe extern "C" {
    fn C_GetFunctionList(pp: *mut *mut CK_FUNCTION_LIST) -> CK_RV;
}

/// The store of the current input; `C_Initialize` builds the module over it,
/// so a re-initialisation in the middle of an input sees the same keys, as it
/// would with the kernel.
static STORE: Mutex<Option<Arc<MockStore>>> = Mutex::new(None);

fn factory() -> Arc<dyn KeyStore> {
    STORE
        .lock()
        .unwrap()
        .clone()
        .expect("a store for this input")
}

/// Six slots: session, user, persistent (absent), process, and the named
/// keyrings "work" and "absent" (absent).
fn fresh_store() -> Arc<MockStore> {
    let k = keys();
    let s = MockStore::default();
    let work = TokenKind::Named("work".into());
    for kind in [
        &TokenKind::Session,
        &TokenKind::User,
        &TokenKind::Process,
        &work,
    ] {
        s.add_keyring(kind);
    }
    let rsa = |kind: &TokenKind, name: &str, key: &rsa::RsaPrivateKey| {
        s.add_key(kind, "asymmetric", name, Some(key.clone()))
    };
    rsa(&TokenKind::User, "user-2048", &k.k2048);
    rsa(&TokenKind::User, "user-1024", &k.k1024a);
    s.add_key(&TokenKind::User, "user", "a password", None);
    // An asymmetric key the kernel cannot use for RSA.
    s.add_key(&TokenKind::User, "asymmetric", "not-rsa", None);
    rsa(&TokenKind::Session, "session-1024", &k.k1024b);
    rsa(&TokenKind::Process, "process-1024", &k.k1024a);
    let revoked = rsa(&TokenKind::Process, "revoked", &k.k1024b);
    s.set_gone(revoked, libc::EKEYREVOKED);
    rsa(&work, "work-2048", &k.k2048);
    Arc::new(s)
}

/// `FUZZ_DEBUG=1`: print every call, to see what an input does.
pub fn debug() -> bool {
    static DEBUG: OnceLock<bool> = OnceLock::new();
    *DEBUG.get_or_init(|| std::env::var_os("FUZZ_DEBUG").is_some())
}

fn setup() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        // SAFETY: set before the module (or anything else) reads the
        // environment, on the only thread there is yet.
        unsafe {
            std::env::set_var("KEYRING_PKCS11_KEYRINGS", "work,absent");
            std::env::set_var("KEYRING_PKCS11_CONFIG", "/dev/null");
            if std::env::var_os("KEYRING_PKCS11_LOG").is_none() {
                std::env::set_var("KEYRING_PKCS11_LOG", "off");
            }
            libc::atexit(stats::report);
        }
        install_factory(factory);
        install_generator(keys::generate);
        keys();
    });
}

/// A private key and its public key, both found in the token of `session`.
#[derive(Clone, Debug)]
pub struct KeyPair {
    pub session: CK_SESSION_HANDLE,
    pub private: CK_OBJECT_HANDLE,
    pub public: CK_OBJECT_HANDLE,
    pub modulus: Vec<u8>,
}

pub struct Harness {
    pub fl: &'static CK_FUNCTION_LIST,
    pub store: Arc<MockStore>,
    pub initialized: bool,
    pub sessions: Vec<CK_SESSION_HANDLE>,
    pub objects: Vec<CK_OBJECT_HANDLE>,
    /// Objects with a session of their token.
    pub pairs: Vec<(CK_SESSION_HANDLE, CK_OBJECT_HANDLE)>,
    /// The private keys among them.
    pub private: Vec<(CK_SESSION_HANDLE, CK_OBJECT_HANDLE)>,
    /// Private and public key objects of one key, for the scenarios.
    pub keypairs: Vec<KeyPair>,
    /// Handles of destroyed objects: dead for good (handles are never
    /// reused, not even across `C_Finalize`).
    pub dead: BTreeSet<CK_OBJECT_HANDLE>,
    /// The last output of a successful operation, to feed back (a signature
    /// to verify, a ciphertext to decrypt).
    pub last: Vec<u8>,
}

/// Runs one input: a client's start (`C_Initialize`, a session and the
/// objects of one token), then the calls, then `C_Finalize`; or, one time
/// in sixteen, the calls without `C_Initialize` first.
pub fn run(input: crate::call::Input) {
    setup();
    stats::INPUTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    keys::reset_pool();
    let store = fresh_store();
    *STORE.lock().unwrap() = Some(store.clone());
    let mut h = Harness::new(store);
    if input.first_slot >= 240 {
        // One input in sixteen is a client that forgot C_Initialize: its
        // calls run as they are (until one of them initialises), and each
        // must say CKR_CRYPTOKI_NOT_INITIALIZED (`checks`).
        for call in input.calls {
            if debug() {
                eprintln!("{call:?}");
            }
            h.run(call);
        }
        h.finish();
        stats::input_done();
        return;
    }
    h.init();
    // A slot with a token: session, user, process or "work".
    let first = [0, 1, 3, 4][usize::from(input.first_slot) % 4];
    if h.discover(first) {
        for call in input.calls {
            if debug() {
                eprintln!("{call:?}");
            }
            h.run(call);
        }
    }
    h.finish();
    stats::input_done();
}

impl Harness {
    fn new(store: Arc<MockStore>) -> Harness {
        let mut p: *mut CK_FUNCTION_LIST = null_mut();
        // SAFETY: p is a valid location for the list pointer.
        let rv = unsafe { C_GetFunctionList(&mut p) };
        assert_eq!(rv, CKR_OK);
        stats::count("C_GetFunctionList", rv);
        // SAFETY: the module returns a pointer to its static list.
        let fl = unsafe { p.as_ref() }.expect("a function list");
        Harness {
            fl,
            store,
            initialized: false,
            sessions: Vec::new(),
            objects: Vec::new(),
            pairs: Vec::new(),
            private: Vec::new(),
            keypairs: Vec::new(),
            dead: BTreeSet::new(),
            last: Vec::new(),
        }
    }

    /// Private-key operations the mock kernel has done.
    pub fn private_ops(&self) -> usize {
        *self.store.signs.lock()
    }

    fn init(&mut self) {
        let rv = call!(self, C_Initialize(null_mut()));
        assert_eq!(rv, CKR_OK, "C_Initialize");
        self.initialized = true;
    }

    fn finish(&mut self) {
        if self.initialized {
            let rv = call!(self, C_Finalize(null_mut()));
            assert_eq!(rv, CKR_OK, "C_Finalize");
            self.initialized = false;
        }
    }

    /// Learns an object found or created with session `s`.
    pub fn learn(&mut self, s: CK_SESSION_HANDLE, o: CK_OBJECT_HANDLE) {
        self.objects.push(o);
        self.pairs.push((s, o));
    }

    /// What every client does first: a session, and every object of its
    /// token. Several calls in one, so that the deep paths (signing,
    /// attributes of real keys) are a call away rather than four. False if
    /// the slot has no token.
    pub fn discover(&mut self, slot: u8) -> bool {
        let slot = CK_SLOT_ID::from(slot % 6);
        let mut h = Guarded::<CK_SESSION_HANDLE>::new();
        let flags = CKF_SERIAL_SESSION | CKF_RW_SESSION;
        let rv = call!(
            self,
            C_OpenSession(slot, flags, null_mut(), None, &mut h.value)
        );
        h.check("C_OpenSession");
        if rv != CKR_OK {
            return false;
        }
        let h = h.value;
        self.sessions.push(h);
        let rv = call!(self, C_FindObjectsInit(h, null_mut(), 0));
        assert_eq!(rv, CKR_OK, "C_FindObjectsInit on a new session");
        let mut found = [0 as CK_OBJECT_HANDLE; 32];
        let mut n: CK_ULONG = 0;
        let rv = call!(self, C_FindObjects(h, found.as_mut_ptr(), 32, &mut n));
        assert_eq!(rv, CKR_OK, "C_FindObjects");
        assert!(n <= 32);
        let found = &found[..n as usize];
        self.check_found(found);
        let mut keys = Vec::new();
        for &o in found {
            self.learn(h, o);
            let class = self.class(h, o);
            assert!(class.is_some(), "CKA_CLASS of a found object");
            if class == Some(CKO_PRIVATE_KEY) {
                self.private.push((h, o));
            }
            if matches!(class, Some(CKO_PRIVATE_KEY | CKO_PUBLIC_KEY)) {
                let token = self
                    .attribute(h, o, CKA_TOKEN)
                    .map(|(_, v)| v)
                    .unwrap_or_default();
                keys.push((class.unwrap(), o, self.modulus(h, o), token));
            }
        }
        self.pair_keys(h, &keys);
        let rv = call!(self, C_FindObjectsFinal(h));
        assert_eq!(rv, CKR_OK, "C_FindObjectsFinal");
        true
    }

    /// CKA_CLASS of an object, if it can be read.
    pub fn class(&self, s: CK_SESSION_HANDLE, o: CK_OBJECT_HANDLE) -> Option<CK_OBJECT_CLASS> {
        let mut class = Guarded::<CK_OBJECT_CLASS>::new();
        let mut t = CK_ATTRIBUTE {
            type_: CKA_CLASS,
            pValue: &mut class.value as *mut CK_OBJECT_CLASS as *mut c_void,
            ulValueLen: std::mem::size_of::<CK_OBJECT_CLASS>() as CK_ULONG,
        };
        let rv = call!(self, C_GetAttributeValue(s, o, &mut t, 1));
        class.check("C_GetAttributeValue(CKA_CLASS)");
        self.check_alive("C_GetAttributeValue", o, rv);
        (rv == CKR_OK).then_some(class.value)
    }

    /// CKA_MODULUS of a key object (empty if unavailable).
    pub fn modulus(&self, s: CK_SESSION_HANDLE, o: CK_OBJECT_HANDLE) -> Vec<u8> {
        self.attribute(s, o, CKA_MODULUS)
            .map(|(_, v)| v)
            .unwrap_or_default()
    }

    /// One attribute's value, or the call's error.
    pub fn attribute(
        &self,
        s: CK_SESSION_HANDLE,
        o: CK_OBJECT_HANDLE,
        ty: CK_ATTRIBUTE_TYPE,
    ) -> Result<(CK_RV, Vec<u8>), CK_RV> {
        let mut buf = crate::buffers::OutBuf::new(Some(4096));
        let mut t = CK_ATTRIBUTE {
            type_: ty,
            pValue: buf.ptr() as *mut c_void,
            ulValueLen: 4096,
        };
        let rv = call!(self, C_GetAttributeValue(s, o, &mut t, 1));
        buf.check("C_GetAttributeValue");
        self.check_alive("C_GetAttributeValue", o, rv);
        if rv == CKR_OK {
            Ok((rv, buf.bytes(t.ulValueLen as usize).to_vec()))
        } else {
            Err(rv)
        }
    }

    /// Pairs the private and public keys of one session's token by modulus
    /// and `CKA_TOKEN`: one key may be in a token's keyring and among its
    /// session objects (two kernel keys; destroying one leaves the other's
    /// objects), but twice in one keyring it is refused.
    pub fn pair_keys(
        &mut self,
        s: CK_SESSION_HANDLE,
        keys: &[(CK_OBJECT_CLASS, CK_OBJECT_HANDLE, Vec<u8>, Vec<u8>)],
    ) {
        for (class, private, n, token) in keys {
            if *class != CKO_PRIVATE_KEY || n.is_empty() {
                continue;
            }
            if let Some((_, public, _, _)) = keys
                .iter()
                .find(|(c, _, m, t)| *c == CKO_PUBLIC_KEY && m == n && t == token)
            {
                self.keypairs.push(KeyPair {
                    session: s,
                    private: *private,
                    public: *public,
                    modulus: n.clone(),
                });
            }
        }
    }

    /// Drops every handle learnt so far: the next ones are made up.
    pub fn forget(&mut self) {
        self.sessions.clear();
        self.objects.clear();
        self.pairs.clear();
        self.private.clear();
        self.keypairs.clear();
    }
}

/// `C_Initialize`'s arguments: NULL, or a `CK_C_INITIALIZE_ARGS` with some
/// of the four mutex callbacks (all or none is legal), flags and reserved.
#[derive(Arbitrary, Debug, Clone)]
pub struct InitArgs {
    pub args: Option<InitFields>,
}

#[derive(Arbitrary, Debug, Clone)]
pub struct InitFields {
    pub flags: u8,
    pub reserved: crate::args::Rare,
    /// Bits: CreateMutex, DestroyMutex, LockMutex, UnlockMutex.
    pub callbacks: u8,
}

impl Harness {
    pub fn initialize(&mut self, a: &InitArgs) {
        unsafe extern "C" fn create(p: *mut *mut c_void) -> CK_RV {
            // SAFETY: the module passes a location for the new mutex.
            static MUTEX: u8 = 0;
            if let Some(p) = unsafe { p.as_mut() } {
                *p = &MUTEX as *const u8 as *mut c_void;
            }
            CKR_OK
        }
        unsafe extern "C" fn other(_: *mut c_void) -> CK_RV {
            CKR_OK
        }
        let mut reserved = 0u64;
        let fields = a.args.clone();
        let callbacks = fields.as_ref().map_or(0, |f| f.callbacks % 16);
        let mut args = fields.as_ref().map(|f| CK_C_INITIALIZE_ARGS {
            CreateMutex: (callbacks & 1 != 0).then_some(create as _),
            DestroyMutex: (callbacks & 2 != 0).then_some(other as _),
            LockMutex: (callbacks & 4 != 0).then_some(other as _),
            UnlockMutex: (callbacks & 8 != 0).then_some(other as _),
            flags: [0, CKF_OS_LOCKING_OK, CKF_LIBRARY_CANT_CREATE_OS_THREADS]
                [usize::from(f.flags) % 3],
            pReserved: if f.reserved.0 {
                &mut reserved as *mut u64 as *mut c_void
            } else {
                null_mut()
            },
        });
        let p = args
            .as_mut()
            .map_or(null_mut(), |a| a as *mut _ as *mut c_void);
        let rv = call!(self, C_Initialize(p));
        // The four callbacks come all or none (PKCS#11 2.40 §5.4).
        let bad = !p.is_null() && callbacks != 0 && callbacks != 15;
        let expected = match (bad, self.initialized) {
            (true, _) => CKR_ARGUMENTS_BAD,
            (false, true) => CKR_CRYPTOKI_ALREADY_INITIALIZED,
            (false, false) => CKR_OK,
        };
        // Both problems at once: either answer will do.
        let either = [CKR_ARGUMENTS_BAD, CKR_CRYPTOKI_ALREADY_INITIALIZED];
        assert!(
            rv == expected || (bad && self.initialized && either.contains(&rv)),
            "C_Initialize: {rv:#x} (callbacks {callbacks:#b}, initialised {})",
            self.initialized
        );
        if rv == CKR_OK {
            self.initialized = true;
        }
    }
}
