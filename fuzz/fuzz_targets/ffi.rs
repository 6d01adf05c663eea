//! Fuzzes the C ABI as a C client sees it: every input is a sequence of
//! `C_*` calls made through the function list from `C_GetFunctionList`, with
//! handles (some returned earlier, some made up), templates, mechanism
//! parameters, lengths and NULL or short buffers chosen by the fuzzer, over an
//! in-memory key store holding real RSA keys in several tokens.
//!
//! The harness never lies about a buffer: a length it passes is the length of
//! memory behind the pointer (or the pointer is NULL), so whatever goes wrong
//! is the module's fault. Beyond crashes and panics (libfuzzer-sys aborts on
//! any panic, so a panic caught by the entry macro is reported too) it checks
//! what the spec promises:
//! - every return value is a defined `CKR_*` and never `CKR_GENERAL_ERROR`;
//! - nothing is written past a buffer (guard bytes follow every output);
//! - a returned length fits the buffer on success and exceeds it on
//!   `CKR_BUFFER_TOO_SMALL`;
//! - a size query (NULL output) or a too-short signature buffer performs no
//!   private-key operation and leaves the operation active;
//! - without `C_Initialize` every function says `CKR_CRYPTOKI_NOT_INITIALIZED`.

#![no_main]

use cryptoki_sys::*;
use keyring_pkcs11::kernel::mock::{MockStore, install_factory};
use keyring_pkcs11::kernel::store::{KeyStore, TokenKind};
use libfuzzer_sys::arbitrary::{Result as AResult, Unstructured};
use libfuzzer_sys::fuzz_target;
use rsa::traits::{PrivateKeyParts, PublicKeyParts};
use rsa::{BigUint, RsaPrivateKey};
use std::collections::BTreeMap;
use std::ffi::c_void;
use std::ptr::null_mut;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

mod keys;

unsafe extern "C" {
    fn C_GetFunctionList(pp: *mut *mut CK_FUNCTION_LIST) -> CK_RV;
}

static CALLS: AtomicU64 = AtomicU64::new(0);
static INPUTS: AtomicU64 = AtomicU64::new(0);
/// Calls and successes per function: evidence that the deep paths (signing,
/// decryption, imports) are reached, not only the argument checks.
static STATS: Mutex<BTreeMap<&'static str, (u64, u64)>> = Mutex::new(BTreeMap::new());

/// libFuzzer ends with `exit()`, so the totals are printed from an atexit
/// handler; `fuzz/run` reads this line.
extern "C" fn report() {
    if let Ok(stats) = STATS.lock() {
        let line: Vec<String> = stats
            .iter()
            .map(|(name, (n, ok))| format!("{name} {ok}/{n}"))
            .collect();
        eprintln!("fuzz-ffi: CKR_OK/calls: {}", line.join(", "));
    }
    eprintln!(
        "fuzz-ffi: {} C_* calls in {} inputs",
        CALLS.load(Ordering::Relaxed),
        INPUTS.load(Ordering::Relaxed)
    );
}

struct Keys {
    k2048: RsaPrivateKey,
    k1024a: RsaPrivateKey,
    k1024b: RsaPrivateKey,
    /// Not in any token: its parts are offered to `C_CreateObject`.
    import: RsaPrivateKey,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let key = |name: &str| {
            let (_, p, q) = keys::PRIMES
                .iter()
                .find(|k| k.0 == name)
                .expect("a key of that name");
            let n = |hex: &str| BigUint::parse_bytes(hex.as_bytes(), 16).expect("hex");
            RsaPrivateKey::from_p_q(n(p), n(q), BigUint::from(65537u32)).expect("a valid key")
        };
        Keys {
            k2048: key("k2048"),
            k1024a: key("k1024a"),
            k1024b: key("k1024b"),
            import: key("import"),
        }
    })
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

fn fresh_store() -> Arc<MockStore> {
    let k = keys();
    let s = MockStore::default();
    let work = TokenKind::Named("work".into());
    // The persistent keyring and the named "absent" one do not exist:
    // their slots have no token.
    for kind in [
        &TokenKind::Session,
        &TokenKind::User,
        &TokenKind::Process,
        &work,
    ] {
        s.add_keyring(kind);
    }
    s.add_key(
        &TokenKind::User,
        "asymmetric",
        "user-2048",
        Some(k.k2048.clone()),
    );
    s.add_key(
        &TokenKind::User,
        "asymmetric",
        "user-1024",
        Some(k.k1024a.clone()),
    );
    s.add_key(&TokenKind::User, "user", "a password", None);
    // An asymmetric key the kernel cannot use for RSA.
    s.add_key(&TokenKind::User, "asymmetric", "not-rsa", None);
    s.add_key(
        &TokenKind::Session,
        "asymmetric",
        "session-1024",
        Some(k.k1024b.clone()),
    );
    s.add_key(
        &TokenKind::Process,
        "asymmetric",
        "process-1024",
        Some(k.k1024a.clone()),
    );
    let revoked = s.add_key(
        &TokenKind::Process,
        "asymmetric",
        "revoked",
        Some(k.k1024b.clone()),
    );
    s.set_gone(revoked, libc::EKEYREVOKED);
    s.add_key(&work, "asymmetric", "work-2048", Some(k.k2048.clone()));
    Arc::new(s)
}

/// `FUZZ_DEBUG=1`: print every call, to see what an input does.
fn debug() -> bool {
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
            libc::atexit(report);
        }
        install_factory(factory);
        keys();
    });
}

fuzz_target!(|data: &[u8]| {
    setup();
    INPUTS.fetch_add(1, Ordering::Relaxed);
    let store = fresh_store();
    *STORE.lock().unwrap() = Some(store.clone());
    let mut h = Harness::new(store);
    let mut u = Unstructured::new(data);
    h.init();
    // Every input starts as a client does, with a session and the objects of
    // one token; what follows may close, finalise and re-initialise.
    if h.discover(&mut u).is_ok() {
        for _ in 0..MAX_STEPS {
            if u.is_empty() || h.step(&mut u).is_err() {
                break;
            }
        }
    }
    h.finish();
});

const MAX_STEPS: usize = 48;
const GUARD: usize = 24;
const GUARD_BYTE: u8 = 0xa5;
const FILL_BYTE: u8 = 0x5a;

const VALID_RV: &[CK_RV] = &[
    CKR_OK,
    CKR_CANCEL,
    CKR_HOST_MEMORY,
    CKR_SLOT_ID_INVALID,
    CKR_FUNCTION_FAILED,
    CKR_ARGUMENTS_BAD,
    CKR_NO_EVENT,
    CKR_NEED_TO_CREATE_THREADS,
    CKR_CANT_LOCK,
    CKR_ATTRIBUTE_READ_ONLY,
    CKR_ATTRIBUTE_SENSITIVE,
    CKR_ATTRIBUTE_TYPE_INVALID,
    CKR_ATTRIBUTE_VALUE_INVALID,
    CKR_ACTION_PROHIBITED,
    CKR_DATA_INVALID,
    CKR_DATA_LEN_RANGE,
    CKR_DEVICE_ERROR,
    CKR_DEVICE_MEMORY,
    CKR_DEVICE_REMOVED,
    CKR_ENCRYPTED_DATA_INVALID,
    CKR_ENCRYPTED_DATA_LEN_RANGE,
    CKR_FUNCTION_CANCELED,
    CKR_FUNCTION_NOT_PARALLEL,
    CKR_FUNCTION_NOT_SUPPORTED,
    CKR_KEY_HANDLE_INVALID,
    CKR_KEY_SIZE_RANGE,
    CKR_KEY_TYPE_INCONSISTENT,
    CKR_KEY_NOT_NEEDED,
    CKR_KEY_CHANGED,
    CKR_KEY_NEEDED,
    CKR_KEY_INDIGESTIBLE,
    CKR_KEY_FUNCTION_NOT_PERMITTED,
    CKR_KEY_NOT_WRAPPABLE,
    CKR_KEY_UNEXTRACTABLE,
    CKR_MECHANISM_INVALID,
    CKR_MECHANISM_PARAM_INVALID,
    CKR_OBJECT_HANDLE_INVALID,
    CKR_OPERATION_ACTIVE,
    CKR_OPERATION_NOT_INITIALIZED,
    CKR_PIN_INCORRECT,
    CKR_PIN_INVALID,
    CKR_PIN_LEN_RANGE,
    CKR_PIN_EXPIRED,
    CKR_PIN_LOCKED,
    CKR_SESSION_CLOSED,
    CKR_SESSION_COUNT,
    CKR_SESSION_HANDLE_INVALID,
    CKR_SESSION_PARALLEL_NOT_SUPPORTED,
    CKR_SESSION_READ_ONLY,
    CKR_SESSION_EXISTS,
    CKR_SESSION_READ_ONLY_EXISTS,
    CKR_SESSION_READ_WRITE_SO_EXISTS,
    CKR_SIGNATURE_INVALID,
    CKR_SIGNATURE_LEN_RANGE,
    CKR_TEMPLATE_INCOMPLETE,
    CKR_TEMPLATE_INCONSISTENT,
    CKR_TOKEN_NOT_PRESENT,
    CKR_TOKEN_NOT_RECOGNIZED,
    CKR_TOKEN_WRITE_PROTECTED,
    CKR_USER_ALREADY_LOGGED_IN,
    CKR_USER_NOT_LOGGED_IN,
    CKR_USER_PIN_NOT_INITIALIZED,
    CKR_USER_TYPE_INVALID,
    CKR_USER_ANOTHER_ALREADY_LOGGED_IN,
    CKR_USER_TOO_MANY_TYPES,
    CKR_RANDOM_SEED_NOT_SUPPORTED,
    CKR_RANDOM_NO_RNG,
    CKR_DOMAIN_PARAMS_INVALID,
    CKR_BUFFER_TOO_SMALL,
    CKR_SAVED_STATE_INVALID,
    CKR_INFORMATION_SENSITIVE,
    CKR_STATE_UNSAVEABLE,
    CKR_CRYPTOKI_NOT_INITIALIZED,
    CKR_CRYPTOKI_ALREADY_INITIALIZED,
    CKR_MUTEX_BAD,
    CKR_MUTEX_NOT_LOCKED,
    CKR_FUNCTION_REJECTED,
    CKR_PUBLIC_KEY_INVALID,
];

/// Entry points that answer the same whether or not the library is
/// initialised (the unsupported ones may say so first).
const ANSWER_ANYWAY: &[&str] = &[
    "C_GetFunctionList",
    "C_Initialize",
    "C_InitToken",
    "C_InitPIN",
    "C_SetPIN",
    "C_GetOperationState",
    "C_SetOperationState",
    "C_CopyObject",
    "C_EncryptUpdate",
    "C_EncryptFinal",
    "C_DecryptUpdate",
    "C_DecryptFinal",
    "C_DigestKey",
    "C_SignRecoverInit",
    "C_SignRecover",
    "C_DigestEncryptUpdate",
    "C_DecryptDigestUpdate",
    "C_SignEncryptUpdate",
    "C_DecryptVerifyUpdate",
    "C_GenerateKey",
    "C_WrapKey",
    "C_UnwrapKey",
    "C_DeriveKey",
    "C_GetFunctionStatus",
    "C_CancelFunction",
    "C_WaitForSlotEvent",
];

const MECHS: &[CK_MECHANISM_TYPE] = &[
    CKM_RSA_PKCS,
    CKM_RSA_X_509,
    CKM_RSA_PKCS_PSS,
    CKM_RSA_PKCS_OAEP,
    CKM_SHA1_RSA_PKCS,
    CKM_SHA224_RSA_PKCS,
    CKM_SHA256_RSA_PKCS,
    CKM_SHA384_RSA_PKCS,
    CKM_SHA512_RSA_PKCS,
    CKM_SHA1_RSA_PKCS_PSS,
    CKM_SHA224_RSA_PKCS_PSS,
    CKM_SHA256_RSA_PKCS_PSS,
    CKM_SHA384_RSA_PKCS_PSS,
    CKM_SHA512_RSA_PKCS_PSS,
    CKM_SHA_1,
    CKM_SHA224,
    CKM_SHA256,
    CKM_SHA384,
    CKM_SHA512,
    CKM_MD5,
    CKM_RSA_PKCS_KEY_PAIR_GEN,
    CKM_RSA_9796,
    CKM_AES_CBC,
];

const HASHES: &[CK_MECHANISM_TYPE] = &[
    CKM_SHA_1,
    CKM_SHA224,
    CKM_SHA256,
    CKM_SHA384,
    CKM_SHA512,
    CKM_MD5,
    CKM_SHA3_256,
];
const MGFS: &[CK_RSA_PKCS_MGF_TYPE] = &[
    CKG_MGF1_SHA1,
    CKG_MGF1_SHA224,
    CKG_MGF1_SHA256,
    CKG_MGF1_SHA384,
    CKG_MGF1_SHA512,
    0,
];

const ATTRS: &[CK_ATTRIBUTE_TYPE] = &[
    CKA_CLASS,
    CKA_TOKEN,
    CKA_PRIVATE,
    CKA_LABEL,
    CKA_VALUE,
    CKA_CERTIFICATE_TYPE,
    CKA_ISSUER,
    CKA_SERIAL_NUMBER,
    CKA_SUBJECT,
    CKA_ID,
    CKA_KEY_TYPE,
    CKA_SENSITIVE,
    CKA_ENCRYPT,
    CKA_DECRYPT,
    CKA_WRAP,
    CKA_UNWRAP,
    CKA_SIGN,
    CKA_SIGN_RECOVER,
    CKA_VERIFY,
    CKA_VERIFY_RECOVER,
    CKA_DERIVE,
    CKA_MODULUS,
    CKA_MODULUS_BITS,
    CKA_PUBLIC_EXPONENT,
    CKA_PRIVATE_EXPONENT,
    CKA_PRIME_1,
    CKA_PRIME_2,
    CKA_EXPONENT_1,
    CKA_EXPONENT_2,
    CKA_COEFFICIENT,
    CKA_PUBLIC_KEY_INFO,
    CKA_EXTRACTABLE,
    CKA_LOCAL,
    CKA_NEVER_EXTRACTABLE,
    CKA_ALWAYS_SENSITIVE,
    CKA_MODIFIABLE,
    CKA_COPYABLE,
    CKA_DESTROYABLE,
    CKA_ALWAYS_AUTHENTICATE,
    CKA_ALLOWED_MECHANISMS,
    CKA_KEY_GEN_MECHANISM,
    CKA_START_DATE,
    CKA_END_DATE,
    CKA_TRUSTED,
    CKA_CERTIFICATE_CATEGORY,
    CKA_WRAP_TEMPLATE,
    CKA_VENDOR_DEFINED,
];

const ULONG_VALUES: &[CK_ULONG] = &[
    CKO_PRIVATE_KEY,
    CKO_PUBLIC_KEY,
    CKO_CERTIFICATE,
    CKO_DATA,
    CKO_SECRET_KEY,
    CKK_RSA,
    CKK_EC,
    CKC_X_509,
    0,
    1,
    512,
    1024,
    2047,
    65537,
    CK_UNAVAILABLE_INFORMATION,
];

/// Output buffer lengths worth trying: around digest and RSA sizes.
const LENGTHS: &[usize] = &[
    0, 1, 16, 20, 28, 32, 48, 64, 117, 127, 128, 129, 255, 256, 257, 512,
];

/// A byte buffer whose memory is exactly as long as claimed, followed by
/// guard bytes that the module must not touch. NULL when `len` is None.
struct OutBuf {
    mem: Box<[u8]>,
    len: Option<usize>,
}

impl OutBuf {
    fn new(len: Option<usize>) -> OutBuf {
        let n = len.unwrap_or(0);
        let mut mem = vec![FILL_BYTE; n + GUARD];
        mem[n..].fill(GUARD_BYTE);
        OutBuf {
            mem: mem.into(),
            len,
        }
    }
    /// An input value: no guard, so reading past it is an ASan error.
    fn input(v: Vec<u8>) -> OutBuf {
        let len = Some(v.len());
        OutBuf { mem: v.into(), len }
    }
    fn ptr(&mut self) -> *mut u8 {
        match self.len {
            Some(_) => self.mem.as_mut_ptr(),
            None => null_mut(),
        }
    }
    fn check(&self, what: &str) {
        let n = self.len.unwrap_or(0);
        assert!(
            self.mem[n..].iter().all(|b| *b == GUARD_BYTE),
            "{what}: written past the end of a {n}-byte buffer"
        );
    }
    fn bytes(&self, n: usize) -> &[u8] {
        &self.mem[..n.min(self.len.unwrap_or(0))]
    }
}

/// A value followed by guard bytes, for the `CK_*_INFO` outputs.
#[repr(C)]
struct Guarded<T> {
    value: T,
    guard: [u8; GUARD],
}

impl<T> Guarded<T> {
    fn new() -> Box<Guarded<T>> {
        // SAFETY: every CK_*_INFO and CK_ULONG is plain old data, for which
        // any bit pattern (here all FILL_BYTE) is a value.
        let mut b: Box<Guarded<T>> = Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: as above; the whole struct is bytes.
        unsafe {
            std::ptr::write_bytes(
                &mut *b as *mut Guarded<T> as *mut u8,
                FILL_BYTE,
                std::mem::size_of::<Guarded<T>>(),
            )
        };
        b.guard = [GUARD_BYTE; GUARD];
        b
    }
    fn check(&self, what: &str) {
        assert!(
            self.guard.iter().all(|b| *b == GUARD_BYTE),
            "{what}: written past the structure"
        );
    }
}

/// A `CK_MECHANISM` and the memory its parameter points into.
struct Mech {
    m: CK_MECHANISM,
    _param: Vec<u8>,
    _label: Vec<u8>,
}

/// A template and the memory its values point into.
struct Template {
    attrs: Vec<CK_ATTRIBUTE>,
    bufs: Vec<OutBuf>,
    null_array: bool,
    count: CK_ULONG,
}

impl Template {
    fn ptr(&mut self) -> *mut CK_ATTRIBUTE {
        if self.null_array {
            null_mut()
        } else {
            self.attrs.as_mut_ptr()
        }
    }
    fn check(&self, what: &str) {
        for b in &self.bufs {
            b.check(what);
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Sign,
    Verify,
    VerifyRecover,
    Encrypt,
    Decrypt,
}

struct Harness {
    fl: &'static CK_FUNCTION_LIST,
    store: Arc<MockStore>,
    initialized: bool,
    sessions: Vec<CK_SESSION_HANDLE>,
    objects: Vec<CK_OBJECT_HANDLE>,
    /// Objects with a session of their token.
    pairs: Vec<(CK_SESSION_HANDLE, CK_OBJECT_HANDLE)>,
    /// The private keys among them.
    private: Vec<(CK_SESSION_HANDLE, CK_OBJECT_HANDLE)>,
    /// Private and public key objects of one key, for the scenarios.
    keypairs: Vec<scenario::KeyPair>,
    /// The last output of a successful operation, to feed back (a signature
    /// to verify, a ciphertext to decrypt).
    last: Vec<u8>,
}

macro_rules! call {
    ($h:expr, $f:ident($($a:expr),* $(,)?)) => {{
        let f = $h.fl.$f.expect(concat!(stringify!($f), " is in the function list"));
        // SAFETY: every pointer argument is NULL or points to live memory of
        // the length passed beside it.
        let rv = unsafe { f($($a),*) };
        $h.check_rv(stringify!($f), rv)
    }};
}

impl Harness {
    fn new(store: Arc<MockStore>) -> Harness {
        let mut p: *mut CK_FUNCTION_LIST = null_mut();
        // SAFETY: p is a valid location for the list pointer.
        let rv = unsafe { C_GetFunctionList(&mut p) };
        assert_eq!(rv, CKR_OK);
        CALLS.fetch_add(1, Ordering::Relaxed);
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
            last: Vec::new(),
        }
    }

    fn check_rv(&self, name: &'static str, rv: CK_RV) -> CK_RV {
        CALLS.fetch_add(1, Ordering::Relaxed);
        let mut stats = STATS.lock().unwrap();
        let entry = stats.entry(name.trim_start_matches("C_")).or_default();
        entry.0 += 1;
        entry.1 += u64::from(rv == CKR_OK);
        drop(stats);
        if debug() {
            eprintln!("{name} -> {rv:#x}");
        }
        assert_ne!(
            rv, CKR_GENERAL_ERROR,
            "{name}: CKR_GENERAL_ERROR (a panic caught in the module)"
        );
        assert!(
            VALID_RV.contains(&rv),
            "{name}: undefined return value {rv:#x}"
        );
        if !self.initialized && !ANSWER_ANYWAY.contains(&name) {
            // A bad argument may be noticed first.
            assert!(
                matches!(rv, CKR_CRYPTOKI_NOT_INITIALIZED | CKR_ARGUMENTS_BAD),
                "{name} before C_Initialize: {rv:#x}"
            );
        }
        rv
    }

    fn private_ops(&self) -> usize {
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

    fn session(&self, u: &mut Unstructured) -> AResult<CK_SESSION_HANDLE> {
        Ok(match u.int_in_range(0..=9)? {
            0 => 0,
            1 => u.arbitrary()?,
            2 => u.int_in_range(0..=8)?,
            // The latest session, as a client mostly uses one.
            3..=5 if !self.sessions.is_empty() => self.sessions[self.sessions.len() - 1],
            _ if !self.sessions.is_empty() => *u.choose(&self.sessions)?,
            _ => 1,
        })
    }

    /// A session and an object: often one found in that session's token.
    fn session_object(
        &self,
        u: &mut Unstructured,
    ) -> AResult<(CK_SESSION_HANDLE, CK_OBJECT_HANDLE)> {
        if !self.pairs.is_empty() && u.ratio(1, 2)? {
            return Ok(*u.choose(&self.pairs)?);
        }
        Ok((self.session(u)?, self.object(u)?))
    }

    fn object(&self, u: &mut Unstructured) -> AResult<CK_OBJECT_HANDLE> {
        Ok(match u.int_in_range(0..=9)? {
            0 => 0,
            1 => u.arbitrary()?,
            2 => u.int_in_range(0..=40)?,
            _ if !self.objects.is_empty() => *u.choose(&self.objects)?,
            _ => 1,
        })
    }

    fn slot(u: &mut Unstructured) -> AResult<CK_SLOT_ID> {
        Ok(match u.int_in_range(0..=7)? {
            7 => u.arbitrary()?,
            n => n,
        })
    }

    fn ulong(u: &mut Unstructured) -> AResult<CK_ULONG> {
        Ok(if u.ratio(1, 4)? {
            u.arbitrary()?
        } else {
            *u.choose(ULONG_VALUES)?
        })
    }

    /// An input buffer: exactly as long as claimed, so any over-read is
    /// AddressSanitizer's to see. None is NULL (with a length of its own).
    fn input(&self, u: &mut Unstructured) -> AResult<(Option<Box<[u8]>>, CK_ULONG)> {
        let k = keys();
        let v = match u.int_in_range(0..=11)? {
            0 => {
                return Ok((
                    None,
                    if u.ratio(1, 2)? {
                        0
                    } else {
                        u.int_in_range(1..=512)?
                    },
                ));
            }
            1 => self.last.clone(),
            2 => {
                let n = *u.choose(&[20usize, 28, 32, 48, 64])?;
                u.bytes(n)?.to_vec()
            }
            // A key-sized value below the modulus, and the modulus itself.
            3 => {
                let mut v = u.bytes(255)?.to_vec();
                v.insert(0, 0);
                v
            }
            4 => k.k2048.n().to_bytes_be(),
            5 => {
                let mut v = u.bytes(127)?.to_vec();
                v.insert(0, 0);
                v
            }
            6 => k.k1024a.n().to_bytes_be(),
            _ => {
                let n = u.int_in_range(0..=300)?;
                u.bytes(n)?.to_vec()
            }
        };
        let len = v.len() as CK_ULONG;
        Ok((Some(v.into()), len))
    }

    fn out_len(u: &mut Unstructured) -> AResult<Option<usize>> {
        Ok(match u.int_in_range(0..=9)? {
            0..=2 => None,
            3 => Some(u.int_in_range(0..=600)?),
            _ => Some(*u.choose(LENGTHS)?),
        })
    }

    fn mechanism(u: &mut Unstructured) -> AResult<Mech> {
        let ty = if u.ratio(1, 10)? {
            u.arbitrary()?
        } else {
            *u.choose(MECHS)?
        };
        let hash = |u: &mut Unstructured| -> AResult<CK_ULONG> {
            Ok(if u.ratio(1, 8)? {
                u.arbitrary()?
            } else {
                *u.choose(HASHES)?
            })
        };
        let mgf = |u: &mut Unstructured| -> AResult<CK_ULONG> {
            Ok(if u.ratio(1, 8)? {
                u.arbitrary()?
            } else {
                *u.choose(MGFS)?
            })
        };
        let mut label = Vec::new();
        // The parameters that fit the mechanism, for the paths past the checks.
        let fit = |u: &mut Unstructured| -> AResult<(CK_ULONG, CK_ULONG, CK_ULONG)> {
            let all = [
                (CKM_SHA_1, CKG_MGF1_SHA1, 20),
                (CKM_SHA224, CKG_MGF1_SHA224, 28),
                (CKM_SHA256, CKG_MGF1_SHA256, 32),
                (CKM_SHA384, CKG_MGF1_SHA384, 48),
                (CKM_SHA512, CKG_MGF1_SHA512, 64),
            ];
            let i = match ty {
                CKM_SHA1_RSA_PKCS_PSS => 0,
                CKM_SHA224_RSA_PKCS_PSS => 1,
                CKM_SHA256_RSA_PKCS_PSS => 2,
                CKM_SHA384_RSA_PKCS_PSS => 3,
                CKM_SHA512_RSA_PKCS_PSS => 4,
                _ => u.int_in_range(0..=4)?,
            };
            Ok(all[i])
        };
        let param: Option<Vec<u8>> = match u.int_in_range(0..=7)? {
            0 | 1 => None,
            6 | 7 if ty == CKM_RSA_PKCS_OAEP => {
                let (hash, mgf, _) = fit(u)?;
                Some(bytes_of(&CK_RSA_PKCS_OAEP_PARAMS {
                    hashAlg: hash,
                    mgf,
                    source: CKZ_DATA_SPECIFIED,
                    pSourceData: null_mut(),
                    ulSourceDataLen: 0,
                }))
            }
            6 | 7 if MECHS[..14].contains(&ty) && !matches!(ty, CKM_RSA_PKCS | CKM_RSA_X_509) => {
                let (hash, mgf, len) = fit(u)?;
                Some(bytes_of(&CK_RSA_PKCS_PSS_PARAMS {
                    hashAlg: hash,
                    mgf,
                    sLen: len,
                }))
            }
            6 | 7 => None,
            2 => {
                let p = CK_RSA_PKCS_PSS_PARAMS {
                    hashAlg: hash(u)?,
                    mgf: mgf(u)?,
                    sLen: match u.int_in_range(0..=3)? {
                        0 => u.arbitrary()?,
                        1 => 0,
                        _ => *u.choose(&[20, 28, 32, 48, 64, 94, 222])?,
                    },
                };
                Some(bytes_of(&p))
            }
            3 => {
                let (data, len) = if u.ratio(1, 3)? {
                    (
                        null_mut(),
                        if u.ratio(1, 2)? {
                            0
                        } else {
                            u.int_in_range(1..=64)?
                        },
                    )
                } else {
                    let n = u.int_in_range(0..=40)?;
                    label = u.bytes(n)?.to_vec();
                    (label.as_mut_ptr() as *mut c_void, n as CK_ULONG)
                };
                let p = CK_RSA_PKCS_OAEP_PARAMS {
                    hashAlg: hash(u)?,
                    mgf: mgf(u)?,
                    source: if u.ratio(1, 6)? {
                        u.arbitrary()?
                    } else {
                        CKZ_DATA_SPECIFIED
                    },
                    pSourceData: data,
                    ulSourceDataLen: len,
                };
                Some(bytes_of(&p))
            }
            _ => {
                let n = u.int_in_range(0..=48)?;
                Some(u.bytes(n)?.to_vec())
            }
        };
        // The claimed length is the structure's or less, never more than the
        // memory behind the pointer; sometimes the structure is unaligned.
        let (mut param, offset, len) = match param {
            None => (
                Vec::new(),
                0,
                if u.ratio(1, 4)? {
                    u.int_in_range(1..=64)?
                } else {
                    0
                },
            ),
            Some(v) => {
                let claim = if u.ratio(3, 4)? {
                    v.len()
                } else {
                    u.int_in_range(0..=v.len())?
                };
                let offset = usize::from(u.ratio(1, 4)?);
                let mut mem = vec![0u8; offset];
                mem.extend_from_slice(&v);
                (mem, offset, claim as CK_ULONG)
            }
        };
        let p = if param.is_empty() {
            null_mut()
        } else {
            param[offset..].as_mut_ptr() as *mut c_void
        };
        Ok(Mech {
            m: CK_MECHANISM {
                mechanism: ty,
                pParameter: p,
                ulParameterLen: len,
            },
            _param: param,
            _label: label,
        })
    }

    /// A template; `output` gives guarded value buffers for
    /// C_GetAttributeValue, otherwise values are exactly sized.
    fn template(&self, u: &mut Unstructured, output: bool) -> AResult<Template> {
        let k = keys();
        let n = u.int_in_range(0..=8)?;
        let mut attrs = Vec::with_capacity(n);
        let mut bufs = Vec::with_capacity(n);
        for _ in 0..n {
            let ty = if u.ratio(1, 12)? {
                u.arbitrary()?
            } else {
                *u.choose(ATTRS)?
            };
            let (mut buf, claim) = if output {
                let len = Self::out_len(u)?;
                let claim = match len {
                    Some(l) => l as CK_ULONG,
                    None => u.arbitrary()?,
                };
                (OutBuf::new(len), claim)
            } else {
                let value: Option<Vec<u8>> = match u.int_in_range(0..=11)? {
                    0 => None,
                    1..=3 => Some(Self::ulong(u)?.to_ne_bytes().to_vec()),
                    4 => Some(vec![u.int_in_range(0..=2)?]),
                    5 => {
                        let l = u.int_in_range(0..=40)?;
                        Some(u.bytes(l)?.to_vec())
                    }
                    // The parts of a key, to import.
                    _ => Some(match ty {
                        CKA_MODULUS => k.import.n().to_bytes_be(),
                        CKA_PUBLIC_EXPONENT => k.import.e().to_bytes_be(),
                        CKA_PRIVATE_EXPONENT => k.import.d().to_bytes_be(),
                        CKA_PRIME_1 => k.import.primes()[0].to_bytes_be(),
                        CKA_PRIME_2 => k.import.primes()[1].to_bytes_be(),
                        CKA_EXPONENT_1 => k.import.dp().expect("dp").to_bytes_be(),
                        CKA_EXPONENT_2 => k.import.dq().expect("dq").to_bytes_be(),
                        CKA_COEFFICIENT => k.import.crt_coefficient().expect("qinv").to_bytes_be(),
                        CKA_LABEL => {
                            let names: &[&[u8]] =
                                &[b"user-2048", b"imported", b"x", b"revoked", b""];
                            u.choose(names)?.to_vec()
                        }
                        CKA_MODULUS_BITS => {
                            // Valid sizes are left out: real key generation
                            // takes seconds and would stall the fuzzer.
                            let b: CK_ULONG = u.arbitrary()?;
                            let b = if [2048, 3072, 4096].contains(&b) {
                                b + 1
                            } else {
                                b
                            };
                            b.to_ne_bytes().to_vec()
                        }
                        _ => Self::ulong(u)?.to_ne_bytes().to_vec(),
                    }),
                };
                match value {
                    None => (
                        OutBuf::new(None),
                        if u.ratio(1, 2)? {
                            0
                        } else {
                            u.int_in_range(1..=64)?
                        },
                    ),
                    Some(v) => {
                        let l = v.len() as CK_ULONG;
                        (OutBuf::input(v), l)
                    }
                }
            };
            attrs.push(CK_ATTRIBUTE {
                type_: ty,
                pValue: buf.ptr() as *mut c_void,
                ulValueLen: claim,
            });
            bufs.push(buf);
        }
        let null_array = u.ratio(1, 20)?;
        // Claim every attribute, or fewer.
        let count = if u.ratio(1, 10)? {
            u.int_in_range(0..=n)?
        } else {
            n
        } as CK_ULONG;
        Ok(Template {
            attrs,
            bufs,
            null_array,
            count,
        })
    }

    fn step(&mut self, u: &mut Unstructured) -> AResult<()> {
        match u.int_in_range(0..=55)? {
            0 => self.initialize(u)?,
            1 => {
                let mut reserved = 0u8;
                let p = if u.ratio(1, 4)? {
                    &mut reserved as *mut u8 as *mut c_void
                } else {
                    null_mut()
                };
                let rv = call!(self, C_Finalize(p));
                if rv == CKR_OK {
                    self.initialized = false;
                }
            }
            2 => {
                let mut info = Guarded::<CK_INFO>::new();
                let p = if u.ratio(1, 8)? {
                    null_mut()
                } else {
                    &mut info.value as *mut CK_INFO
                };
                call!(self, C_GetInfo(p));
                info.check("C_GetInfo");
            }
            3 => {
                let present = u.int_in_range(0..=2)?;
                let len = Self::out_len(u)?.map(|n| n % 12);
                self.list(u, len, |h, p, c| call!(h, C_GetSlotList(present, p, c)))?;
            }
            4 => {
                let mut info = Guarded::<CK_SLOT_INFO>::new();
                let slot = Self::slot(u)?;
                let p = if u.ratio(1, 8)? {
                    null_mut()
                } else {
                    &mut info.value as *mut _
                };
                call!(self, C_GetSlotInfo(slot, p));
                info.check("C_GetSlotInfo");
            }
            5 => {
                let mut info = Guarded::<CK_TOKEN_INFO>::new();
                let slot = Self::slot(u)?;
                let p = if u.ratio(1, 8)? {
                    null_mut()
                } else {
                    &mut info.value as *mut _
                };
                call!(self, C_GetTokenInfo(slot, p));
                info.check("C_GetTokenInfo");
            }
            6 => {
                let slot = Self::slot(u)?;
                let len = Self::out_len(u)?.map(|n| n % 40);
                self.list(u, len, |h, p, c| call!(h, C_GetMechanismList(slot, p, c)))?;
            }
            7 => {
                let mut info = Guarded::<CK_MECHANISM_INFO>::new();
                let slot = Self::slot(u)?;
                let m = if u.ratio(1, 8)? {
                    u.arbitrary()?
                } else {
                    *u.choose(MECHS)?
                };
                let p = if u.ratio(1, 8)? {
                    null_mut()
                } else {
                    &mut info.value as *mut _
                };
                call!(self, C_GetMechanismInfo(slot, m, p));
                info.check("C_GetMechanismInfo");
            }
            8 | 9 => {
                let slot = Self::slot(u)?;
                let flags = match u.int_in_range(0..=5)? {
                    0 => 0,
                    1 => u.arbitrary()?,
                    2 => CKF_RW_SESSION,
                    3 => CKF_SERIAL_SESSION,
                    _ => CKF_SERIAL_SESSION | CKF_RW_SESSION,
                };
                let mut s = Guarded::<CK_SESSION_HANDLE>::new();
                let p = if u.ratio(1, 16)? {
                    null_mut()
                } else {
                    &mut s.value as *mut _
                };
                let rv = call!(self, C_OpenSession(slot, flags, null_mut(), None, p));
                s.check("C_OpenSession");
                if rv == CKR_OK {
                    self.sessions.push(s.value);
                }
            }
            10 => {
                let s = self.session(u)?;
                call!(self, C_CloseSession(s));
            }
            11 => {
                let slot = Self::slot(u)?;
                call!(self, C_CloseAllSessions(slot));
            }
            12 => {
                let s = self.session(u)?;
                let mut info = Guarded::<CK_SESSION_INFO>::new();
                let p = if u.ratio(1, 8)? {
                    null_mut()
                } else {
                    &mut info.value as *mut _
                };
                call!(self, C_GetSessionInfo(s, p));
                info.check("C_GetSessionInfo");
            }
            13 => {
                let s = self.session(u)?;
                let user = match u.int_in_range(0..=4)? {
                    0 => u.arbitrary()?,
                    n => (n - 1) as CK_USER_TYPE,
                };
                let (pin, len) = self.input(u)?;
                let mut pin = pin;
                let p = pin.as_mut().map_or(null_mut(), |v| v.as_mut_ptr());
                call!(self, C_Login(s, user, p, len));
            }
            14 => {
                let s = self.session(u)?;
                call!(self, C_Logout(s));
            }
            15 => {
                let (s, o) = self.session_object(u)?;
                let mut size = Guarded::<CK_ULONG>::new();
                let p = if u.ratio(1, 8)? {
                    null_mut()
                } else {
                    &mut size.value as *mut _
                };
                call!(self, C_GetObjectSize(s, o, p));
                size.check("C_GetObjectSize");
            }
            16 | 17 => self.get_attributes(u)?,
            18 => {
                let (s, o) = self.session_object(u)?;
                let mut t = self.template(u, false)?;
                let p = t.ptr();
                call!(self, C_SetAttributeValue(s, o, p, t.count));
                t.check("C_SetAttributeValue");
            }
            19 | 20 => {
                let s = self.session(u)?;
                let mut t = self.template(u, false)?;
                let p = t.ptr();
                call!(self, C_FindObjectsInit(s, p, t.count));
                t.check("C_FindObjectsInit");
            }
            21 | 22 => self.find(u)?,
            23 => {
                let s = self.session(u)?;
                call!(self, C_FindObjectsFinal(s));
            }
            24..=27 => {
                let kind = *u.choose(&[
                    Kind::Sign,
                    Kind::Verify,
                    Kind::VerifyRecover,
                    Kind::Encrypt,
                    Kind::Decrypt,
                ])?;
                let private = matches!(kind, Kind::Sign | Kind::Decrypt);
                let (s, o) = if private && !self.private.is_empty() && u.ratio(1, 2)? {
                    *u.choose(&self.private)?
                } else {
                    self.session_object(u)?
                };
                let mut m = Self::mechanism(u)?;
                if u.ratio(1, 2)? {
                    // A mechanism made for this operation.
                    m.m.mechanism = match kind {
                        Kind::Encrypt | Kind::Decrypt => {
                            *u.choose(&[CKM_RSA_PKCS, CKM_RSA_X_509, CKM_RSA_PKCS_OAEP])?
                        }
                        Kind::VerifyRecover => *u.choose(&[CKM_RSA_PKCS, CKM_RSA_X_509])?,
                        _ => *u.choose(&MECHS[..14])?,
                    };
                }
                let p = if u.ratio(1, 16)? {
                    null_mut()
                } else {
                    &mut m.m as *mut _
                };
                match kind {
                    Kind::Sign => call!(self, C_SignInit(s, p, o)),
                    Kind::Verify => call!(self, C_VerifyInit(s, p, o)),
                    Kind::VerifyRecover => call!(self, C_VerifyRecoverInit(s, p, o)),
                    Kind::Encrypt => call!(self, C_EncryptInit(s, p, o)),
                    Kind::Decrypt => call!(self, C_DecryptInit(s, p, o)),
                };
            }
            28 | 29 => {
                let kind = *u.choose(&[
                    Kind::Sign,
                    Kind::VerifyRecover,
                    Kind::Encrypt,
                    Kind::Decrypt,
                ])?;
                let final_ = kind == Kind::Sign && u.ratio(1, 3)?;
                self.produce(u, kind, final_)?;
            }
            30 => {
                let s = self.session(u)?;
                let (mut d, len) = self.input(u)?;
                let p = d.as_mut().map_or(null_mut(), |v| v.as_mut_ptr());
                if u.ratio(1, 2)? {
                    call!(self, C_SignUpdate(s, p, len));
                } else {
                    call!(self, C_VerifyUpdate(s, p, len));
                }
            }
            31 | 32 => {
                let s = self.session(u)?;
                let (mut sig, slen) = self.input(u)?;
                let sp = sig.as_mut().map_or(null_mut(), |v| v.as_mut_ptr());
                if u.ratio(1, 3)? {
                    call!(self, C_VerifyFinal(s, sp, slen));
                } else {
                    let (mut d, len) = self.input(u)?;
                    let p = d.as_mut().map_or(null_mut(), |v| v.as_mut_ptr());
                    call!(self, C_Verify(s, p, len, sp, slen));
                }
            }
            33 => {
                let s = self.session(u)?;
                let mut m = Self::mechanism(u)?;
                let p = if u.ratio(1, 16)? {
                    null_mut()
                } else {
                    &mut m.m as *mut _
                };
                call!(self, C_DigestInit(s, p));
            }
            34 => {
                let s = self.session(u)?;
                let (mut d, len) = self.input(u)?;
                let p = d.as_mut().map_or(null_mut(), |v| v.as_mut_ptr());
                call!(self, C_DigestUpdate(s, p, len));
            }
            35 => self.digest(u)?,
            36 => {
                let s = self.session(u)?;
                let len = Self::out_len(u)?;
                let mut b = OutBuf::new(len);
                let p = b.ptr();
                let claim = len.map_or_else(|| u.int_in_range(0..=64), |n| Ok(n as CK_ULONG))?;
                call!(self, C_GenerateRandom(s, p, claim));
                b.check("C_GenerateRandom");
            }
            37 => {
                let s = self.session(u)?;
                let (mut d, len) = self.input(u)?;
                let p = d.as_mut().map_or(null_mut(), |v| v.as_mut_ptr());
                call!(self, C_SeedRandom(s, p, len));
            }
            38 | 39 => {
                let s = self.session(u)?;
                let mut t = self.template(u, false)?;
                let mut o = Guarded::<CK_OBJECT_HANDLE>::new();
                let op = if u.ratio(1, 16)? {
                    null_mut()
                } else {
                    &mut o.value as *mut _
                };
                let p = t.ptr();
                let rv = call!(self, C_CreateObject(s, p, t.count, op));
                t.check("C_CreateObject");
                o.check("C_CreateObject");
                if rv == CKR_OK {
                    self.objects.push(o.value);
                    self.pairs.push((s, o.value));
                }
            }
            40 => {
                let s = self.session(u)?;
                let mut m = Self::mechanism(u)?;
                if u.ratio(3, 4)? {
                    m.m.mechanism = CKM_RSA_PKCS_KEY_PAIR_GEN;
                }
                let mp = &mut m.m as *mut CK_MECHANISM;
                let mut pt = self.template(u, false)?;
                let mut st = self.template(u, false)?;
                let mut po = Guarded::<CK_OBJECT_HANDLE>::new();
                let mut so = Guarded::<CK_OBJECT_HANDLE>::new();
                let (pp, sp) = (pt.ptr(), st.ptr());
                let (pop, sop) = (&mut po.value as *mut _, &mut so.value as *mut _);
                let rv = call!(
                    self,
                    C_GenerateKeyPair(s, mp, pp, pt.count, sp, st.count, pop, sop)
                );
                pt.check("C_GenerateKeyPair");
                st.check("C_GenerateKeyPair");
                po.check("C_GenerateKeyPair");
                so.check("C_GenerateKeyPair");
                if rv == CKR_OK {
                    self.objects.extend([po.value, so.value]);
                }
            }
            41 => {
                let (s, o) = self.session_object(u)?;
                call!(self, C_DestroyObject(s, o));
            }
            42 => self.unsupported(u)?,
            43 => {
                let rv = call!(self, C_GetFunctionList(null_mut()));
                assert_eq!(rv, CKR_ARGUMENTS_BAD, "C_GetFunctionList(NULL)");
                let mut p: *mut CK_FUNCTION_LIST = null_mut();
                let rv = call!(self, C_GetFunctionList(&mut p));
                assert_eq!(rv, CKR_OK);
                assert!(std::ptr::eq(p, self.fl), "C_GetFunctionList: another list");
            }
            44 => {
                // Drop every handle learnt so far: the next ones are made up.
                self.sessions.clear();
                self.objects.clear();
                self.pairs.clear();
                self.private.clear();
                self.keypairs.clear();
            }
            48..=51 => self.sign_verify(u)?,
            52..=55 => self.encrypt_decrypt(u)?,
            _ => self.discover(u)?,
        }
        Ok(())
    }

    /// What every client does first: a session, and every object of its
    /// token. Four calls in one step, so that the deep paths (signing,
    /// attributes of real keys) are a step away rather than four.
    fn discover(&mut self, u: &mut Unstructured) -> AResult<()> {
        let slot = u.int_in_range(0..=5)?;
        let mut h = Guarded::<CK_SESSION_HANDLE>::new();
        let flags = CKF_SERIAL_SESSION | CKF_RW_SESSION;
        let rv = call!(
            self,
            C_OpenSession(slot, flags, null_mut(), None, &mut h.value)
        );
        h.check("C_OpenSession");
        if rv != CKR_OK {
            return Ok(());
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
        self.objects.extend_from_slice(&found[..n as usize]);
        self.pairs
            .extend(found[..n as usize].iter().map(|o| (h, *o)));
        let mut keys = Vec::new();
        for &o in &found[..n as usize] {
            let mut class = Guarded::<CK_OBJECT_CLASS>::new();
            let mut t = CK_ATTRIBUTE {
                type_: CKA_CLASS,
                pValue: &mut class.value as *mut CK_OBJECT_CLASS as *mut c_void,
                ulValueLen: std::mem::size_of::<CK_OBJECT_CLASS>() as CK_ULONG,
            };
            let rv = call!(self, C_GetAttributeValue(h, o, &mut t, 1));
            class.check("C_GetAttributeValue");
            assert_eq!(rv, CKR_OK, "CKA_CLASS of a found object");
            if class.value == CKO_PRIVATE_KEY {
                self.private.push((h, o));
            }
            if matches!(class.value, CKO_PRIVATE_KEY | CKO_PUBLIC_KEY) {
                keys.push((class.value, o, self.modulus(h, o)));
            }
        }
        self.pair_keys(h, &keys);
        let rv = call!(self, C_FindObjectsFinal(h));
        assert_eq!(rv, CKR_OK, "C_FindObjectsFinal");
        Ok(())
    }

    fn initialize(&mut self, u: &mut Unstructured) -> AResult<()> {
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
        let mut args = CK_C_INITIALIZE_ARGS {
            CreateMutex: None,
            DestroyMutex: None,
            LockMutex: None,
            UnlockMutex: None,
            flags: *u.choose(&[0, CKF_OS_LOCKING_OK, CKF_LIBRARY_CANT_CREATE_OS_THREADS])?,
            pReserved: if u.ratio(1, 8)? {
                &mut reserved as *mut u64 as *mut c_void
            } else {
                null_mut()
            },
        };
        let callbacks: u8 = u.int_in_range(0..=15)?;
        if callbacks & 1 != 0 {
            args.CreateMutex = Some(create);
        }
        if callbacks & 2 != 0 {
            args.DestroyMutex = Some(other);
        }
        if callbacks & 4 != 0 {
            args.LockMutex = Some(other);
        }
        if callbacks & 8 != 0 {
            args.UnlockMutex = Some(other);
        }
        let p = if u.ratio(1, 3)? {
            null_mut()
        } else {
            &mut args as *mut _ as *mut c_void
        };
        let rv = call!(self, C_Initialize(p));
        // The four callbacks come all or none (PKCS#11 2.40 §5.4).
        let bad = !p.is_null() && callbacks != 0 && callbacks != 15;
        let expected = match (bad, self.initialized) {
            (true, _) => &[CKR_ARGUMENTS_BAD][..],
            (false, true) => &[CKR_CRYPTOKI_ALREADY_INITIALIZED][..],
            (false, false) => &[CKR_OK][..],
        };
        // Both problems at once: either answer will do.
        let either = [CKR_ARGUMENTS_BAD, CKR_CRYPTOKI_ALREADY_INITIALIZED];
        assert!(
            expected.contains(&rv) || (bad && self.initialized && either.contains(&rv)),
            "C_Initialize: {rv:#x} (callbacks {callbacks:#b}, initialised {})",
            self.initialized
        );
        if rv == CKR_OK {
            self.initialized = true;
        }
        Ok(())
    }

    /// C_GetSlotList and C_GetMechanismList: `len` elements of room (None:
    /// NULL), the count claimed accordingly.
    fn list(
        &mut self,
        u: &mut Unstructured,
        len: Option<usize>,
        f: impl FnOnce(&Self, *mut CK_ULONG, *mut CK_ULONG) -> CK_RV,
    ) -> AResult<()> {
        let n = len.unwrap_or(0);
        let mut mem = vec![CK_ULONG::from_ne_bytes([FILL_BYTE; 8]); n + 4];
        mem[n..].fill(CK_ULONG::from_ne_bytes([GUARD_BYTE; 8]));
        let mut count = Guarded::<CK_ULONG>::new();
        count.value = if len.is_some() {
            n as CK_ULONG
        } else {
            u.arbitrary()?
        };
        let p = if len.is_some() {
            mem.as_mut_ptr()
        } else {
            null_mut()
        };
        let cp = if u.ratio(1, 16)? {
            null_mut()
        } else {
            &mut count.value as *mut _
        };
        let rv = f(self, p, cp);
        assert!(
            mem[n..]
                .iter()
                .all(|w| *w == CK_ULONG::from_ne_bytes([GUARD_BYTE; 8])),
            "list: written past {n} elements"
        );
        count.check("list count");
        if rv == CKR_OK && len.is_some() {
            assert!(
                count.value as usize <= n,
                "list: {} elements in room for {n}",
                count.value
            );
        }
        if rv == CKR_BUFFER_TOO_SMALL {
            assert!(
                count.value as usize > n,
                "list: CKR_BUFFER_TOO_SMALL yet {} fit",
                count.value
            );
        }
        Ok(())
    }

    fn get_attributes(&mut self, u: &mut Unstructured) -> AResult<()> {
        let (s, o) = self.session_object(u)?;
        let mut t = self.template(u, true)?;
        let before: Vec<CK_ATTRIBUTE> = t.attrs.clone();
        let room: Vec<Option<usize>> = t.bufs.iter().map(|b| b.len).collect();
        let p = t.ptr();
        let rv = call!(self, C_GetAttributeValue(s, o, p, t.count));
        t.check("C_GetAttributeValue");
        let used = if t.null_array { 0 } else { t.count as usize };
        for (i, (a, b)) in t.attrs.iter().zip(&before).enumerate() {
            assert_eq!(
                (a.type_, a.pValue),
                (b.type_, b.pValue),
                "C_GetAttributeValue changed a type or pointer"
            );
            if i >= used {
                assert_eq!(
                    a.ulValueLen, b.ulValueLen,
                    "C_GetAttributeValue: beyond the count"
                );
                continue;
            }
            if rv == CKR_OK {
                assert_ne!(
                    a.ulValueLen, CK_UNAVAILABLE_INFORMATION,
                    "C_GetAttributeValue: CKR_OK yet unavailable"
                );
            }
            if let Some(n) = room[i] {
                assert!(
                    a.ulValueLen == CK_UNAVAILABLE_INFORMATION || a.ulValueLen as usize <= n,
                    "C_GetAttributeValue: {} bytes in a {n}-byte buffer",
                    a.ulValueLen
                );
            }
        }
        Ok(())
    }

    fn find(&mut self, u: &mut Unstructured) -> AResult<()> {
        let s = self.session(u)?;
        let max = Self::out_len(u)?.map(|n| n % 20);
        let n = max.unwrap_or(0);
        let mut mem = vec![CK_OBJECT_HANDLE::MAX; n + 4];
        let p = if max.is_some() {
            mem.as_mut_ptr()
        } else {
            null_mut()
        };
        let claim = if max.is_some() {
            n as CK_ULONG
        } else {
            u.int_in_range(0..=4)?
        };
        let mut count = Guarded::<CK_ULONG>::new();
        let cp = if u.ratio(1, 16)? {
            null_mut()
        } else {
            &mut count.value as *mut _
        };
        let rv = call!(self, C_FindObjects(s, p, claim, cp));
        assert!(
            mem[n..].iter().all(|w| *w == CK_OBJECT_HANDLE::MAX),
            "C_FindObjects: past {n}"
        );
        count.check("C_FindObjects");
        if rv == CKR_OK {
            let c = count.value as usize;
            assert!(c <= n, "C_FindObjects: {c} objects in room for {n}");
            self.objects.extend_from_slice(&mem[..c]);
            self.pairs.extend(mem[..c].iter().map(|o| (s, *o)));
            self.objects.sort_unstable();
            self.objects.dedup();
        }
        Ok(())
    }

    fn digest(&mut self, u: &mut Unstructured) -> AResult<()> {
        let s = self.session(u)?;
        let single = u.ratio(1, 2)?;
        let (mut d, dlen) = self.input(u)?;
        let dp = d.as_mut().map_or(null_mut(), |v| v.as_mut_ptr());
        let len = Self::out_len(u)?;
        let mut out = OutBuf::new(len);
        let mut plen = Guarded::<CK_ULONG>::new();
        plen.value = len.map_or_else(|| u.arbitrary(), |n| Ok(n as CK_ULONG))?;
        let lp = if u.ratio(1, 16)? {
            null_mut()
        } else {
            &mut plen.value as *mut _
        };
        let op = out.ptr();
        let rv = if single {
            call!(self, C_Digest(s, dp, dlen, op, lp))
        } else {
            call!(self, C_DigestFinal(s, op, lp))
        };
        out.check("C_Digest");
        plen.check("C_Digest length");
        self.check_len("C_Digest", rv, len, plen.value);
        Ok(())
    }

    fn check_len(&self, name: &str, rv: CK_RV, len: Option<usize>, got: CK_ULONG) {
        match (rv, len) {
            (CKR_OK, Some(n)) => assert!(
                got as usize <= n,
                "{name}: {got} bytes in a {n}-byte buffer"
            ),
            (CKR_BUFFER_TOO_SMALL, Some(n)) => {
                assert!(
                    got as usize > n,
                    "{name}: CKR_BUFFER_TOO_SMALL but {got} bytes fit in {n}"
                )
            }
            (CKR_BUFFER_TOO_SMALL, None) => panic!("{name}: CKR_BUFFER_TOO_SMALL to a size query"),
            _ => {}
        }
    }

    /// C_Sign, C_SignFinal, C_VerifyRecover, C_Encrypt and C_Decrypt, with
    /// the two-call convention's promises checked.
    fn produce(&mut self, u: &mut Unstructured, kind: Kind, final_: bool) -> AResult<()> {
        let s = self.session(u)?;
        let (mut d, dlen) = self.input(u)?;
        let len = Self::out_len(u)?;
        let null_len = u.ratio(1, 32)?;
        let dp = d.as_mut().map_or(null_mut(), |v| v.as_mut_ptr());
        let name = match (kind, final_) {
            (Kind::Sign, true) => "C_SignFinal",
            (Kind::Sign, false) => "C_Sign",
            (Kind::VerifyRecover, _) => "C_VerifyRecover",
            (Kind::Encrypt, _) => "C_Encrypt",
            _ => "C_Decrypt",
        };
        let run = |h: &Self, out: *mut u8, plen: *mut CK_ULONG| match (kind, final_) {
            (Kind::Sign, true) => call!(h, C_SignFinal(s, out, plen)),
            (Kind::Sign, false) => call!(h, C_Sign(s, dp, dlen, out, plen)),
            (Kind::VerifyRecover, _) => call!(h, C_VerifyRecover(s, dp, dlen, out, plen)),
            (Kind::Encrypt, _) => call!(h, C_Encrypt(s, dp, dlen, out, plen)),
            _ => call!(h, C_Decrypt(s, dp, dlen, out, plen)),
        };
        let mut out = OutBuf::new(len);
        let mut plen = Guarded::<CK_ULONG>::new();
        plen.value = len.map_or_else(|| u.arbitrary(), |n| Ok(n as CK_ULONG))?;
        let lp = if null_len {
            null_mut()
        } else {
            &mut plen.value as *mut _
        };
        let ops = self.private_ops();
        let rv = run(self, out.ptr(), lp);
        out.check(name);
        plen.check(name);
        self.check_len(name, rv, len, plen.value);
        let exact = matches!(kind, Kind::Sign | Kind::Encrypt);
        let no_work = len.is_none() || (exact && rv == CKR_BUFFER_TOO_SMALL);
        if no_work {
            assert_eq!(
                self.private_ops(),
                ops,
                "{name}: a size query used the private key"
            );
        }
        if rv == CKR_BUFFER_TOO_SMALL || (rv == CKR_OK && len.is_none()) {
            // The operation must still be there: ask for the size again.
            let ops = self.private_ops();
            let mut again = Guarded::<CK_ULONG>::new();
            let rv2 = run(self, null_mut(), &mut again.value);
            assert_eq!(rv2, CKR_OK, "{name}: the operation ended after rv {rv:#x}");
            again.check(name);
            assert_eq!(
                self.private_ops(),
                ops,
                "{name}: a size query used the private key"
            );
        }
        if rv == CKR_OK && len.is_some() {
            self.last = out.bytes(plen.value as usize).to_vec();
            // Done: the operation is over.
            let mut again = Guarded::<CK_ULONG>::new();
            let rv2 = run(self, null_mut(), &mut again.value);
            assert_eq!(
                rv2, CKR_OPERATION_NOT_INITIALIZED,
                "{name}: still active after success"
            );
        }
        Ok(())
    }

    fn unsupported(&mut self, u: &mut Unstructured) -> AResult<()> {
        let s = self.session(u)?;
        let o = self.object(u)?;
        let mut buf = OutBuf::new(Some(64));
        let mut len: CK_ULONG = 64;
        let mut m = Self::mechanism(u)?;
        let (b, mp, lp) = (
            buf.ptr(),
            &mut m.m as *mut CK_MECHANISM,
            &mut len as *mut CK_ULONG,
        );
        let mut handle: CK_OBJECT_HANDLE = 0;
        let hp = &mut handle as *mut CK_OBJECT_HANDLE;
        let t = null_mut::<CK_ATTRIBUTE>();
        let rv = match u.int_in_range(0..=24)? {
            0 => call!(self, C_InitToken(0, b, 8, b)),
            1 => call!(self, C_InitPIN(s, b, 8)),
            2 => call!(self, C_SetPIN(s, b, 8, b, 8)),
            3 => call!(self, C_GetOperationState(s, b, lp)),
            4 => call!(self, C_SetOperationState(s, b, 64, o, o)),
            5 => call!(self, C_CopyObject(s, o, t, 0, hp)),
            6 => call!(self, C_EncryptUpdate(s, b, 8, b, lp)),
            7 => call!(self, C_EncryptFinal(s, b, lp)),
            8 => call!(self, C_DecryptUpdate(s, b, 8, b, lp)),
            9 => call!(self, C_DecryptFinal(s, b, lp)),
            10 => call!(self, C_DigestKey(s, o)),
            11 => call!(self, C_SignRecoverInit(s, mp, o)),
            12 => call!(self, C_SignRecover(s, b, 8, b, lp)),
            13 => call!(self, C_DigestEncryptUpdate(s, b, 8, b, lp)),
            14 => call!(self, C_DecryptDigestUpdate(s, b, 8, b, lp)),
            15 => call!(self, C_SignEncryptUpdate(s, b, 8, b, lp)),
            16 => call!(self, C_DecryptVerifyUpdate(s, b, 8, b, lp)),
            17 => call!(self, C_GenerateKey(s, mp, t, 0, hp)),
            18 => call!(self, C_WrapKey(s, mp, o, o, b, lp)),
            19 => call!(self, C_UnwrapKey(s, mp, o, b, 8, t, 0, hp)),
            20 => call!(self, C_DeriveKey(s, mp, o, t, 0, hp)),
            21 => call!(self, C_GetFunctionStatus(s)),
            22 => call!(self, C_CancelFunction(s)),
            _ => {
                let mut slot: CK_SLOT_ID = 0;
                call!(
                    self,
                    C_WaitForSlotEvent(CKF_DONT_BLOCK, &mut slot, null_mut())
                )
            }
        };
        buf.check("an unsupported function");
        let _ = rv;
        Ok(())
    }
}

/// The bytes of a parameter structure, to place anywhere in memory.
fn bytes_of<T>(v: &T) -> Vec<u8> {
    // SAFETY: T is a plain repr(C) parameter structure, read as bytes.
    unsafe { std::slice::from_raw_parts(v as *const T as *const u8, std::mem::size_of::<T>()) }
        .to_vec()
}

// After `call!`, which it uses.
mod scenario;
