//! The C ABI itself, over the in-memory store: what only shows at the
//! boundary — pointers, lengths, buffers that overlap, the two function
//! lists. PKCS#11 state is per process, so these tests take turns
//! (`Abi::new` holds a lock until the test's module is finalised).

use super::crypto::*;
use super::general::*;
use super::object::*;
use super::session::*;
use super::slot::*;
use super::unsupported::*;
use crate::kernel::mock::{MockStore, install_factory};
use crate::kernel::store::{KeyStore, TokenKind};
use cryptoki_sys::*;
use rsa::RsaPrivateKey;
use rsa::traits::PublicKeyParts;
use std::ptr::null_mut;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

static TURN: Mutex<()> = Mutex::new(());
static STORE: Mutex<Option<Arc<MockStore>>> = Mutex::new(None);

fn store() -> Arc<dyn KeyStore> {
    STORE
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
        .expect("a test installs its store before C_Initialize")
}

pub(super) fn rsa_key() -> &'static RsaPrivateKey {
    static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1024).unwrap())
}

/// The `user` token's slot.
pub(super) const USER: CK_SLOT_ID = 1;

/// An initialised C ABI over a fresh in-memory store holding one RSA key
/// in the user keyring; finalised when dropped.
pub(super) struct Abi {
    pub(super) store: Arc<MockStore>,
    _turn: MutexGuard<'static, ()>,
}

impl Abi {
    pub(super) fn new() -> Abi {
        let turn = TURN.lock().unwrap_or_else(PoisonError::into_inner);
        let s = Arc::new(MockStore::default());
        for kind in [TokenKind::Session, TokenKind::User, TokenKind::Process] {
            s.add_keyring(&kind);
        }
        s.add_key(&TokenKind::User, "asymmetric", "k", Some(rsa_key().clone()));
        *STORE.lock().unwrap_or_else(PoisonError::into_inner) = Some(s.clone());
        install_factory(store);
        assert_eq!(unsafe { C_Initialize(null_mut()) }, CKR_OK);
        Abi {
            store: s,
            _turn: turn,
        }
    }

    pub(super) fn session(&self) -> CK_SESSION_HANDLE {
        let mut h = 0;
        let rv = unsafe {
            C_OpenSession(
                USER,
                CKF_SERIAL_SESSION | CKF_RW_SESSION,
                null_mut(),
                None,
                &mut h,
            )
        };
        assert_eq!(rv, CKR_OK);
        h
    }

    /// The key's object of class `class`.
    pub(super) fn key(&self, h: CK_SESSION_HANDLE, class: CK_OBJECT_CLASS) -> CK_OBJECT_HANDLE {
        let mut c = class;
        let mut t = [CK_ATTRIBUTE {
            type_: CKA_CLASS,
            pValue: &mut c as *mut CK_OBJECT_CLASS as *mut std::ffi::c_void,
            ulValueLen: std::mem::size_of::<CK_OBJECT_CLASS>() as CK_ULONG,
        }];
        let (mut o, mut n) = (0, 0);
        unsafe {
            assert_eq!(C_FindObjectsInit(h, t.as_mut_ptr(), 1), CKR_OK);
            assert_eq!(C_FindObjects(h, &mut o, 1, &mut n), CKR_OK);
            assert_eq!(C_FindObjectsFinal(h), CKR_OK);
        }
        assert_eq!(n, 1, "one key of class {class}");
        o
    }
}

impl Drop for Abi {
    fn drop(&mut self) {
        let rv = unsafe { C_Finalize(null_mut()) };
        if !std::thread::panicking() {
            assert_eq!(rv, CKR_OK);
        }
    }
}

pub(super) fn mech(ty: CK_MECHANISM_TYPE) -> CK_MECHANISM {
    CK_MECHANISM {
        mechanism: ty,
        pParameter: null_mut(),
        ulParameterLen: 0,
    }
}

#[test]
fn the_harness_signs_and_verifies_over_the_mock_store() {
    let abi = Abi::new();
    let h = abi.session();
    let (private, public) = (abi.key(h, CKO_PRIVATE_KEY), abi.key(h, CKO_PUBLIC_KEY));
    let mut m = mech(CKM_SHA256_RSA_PKCS);
    let mut data = *b"abc";
    let mut sig = vec![0u8; rsa_key().size()];
    let mut len = sig.len() as CK_ULONG;
    unsafe {
        assert_eq!(C_SignInit(h, &mut m, private), CKR_OK);
        assert_eq!(
            C_Sign(h, data.as_mut_ptr(), 3, sig.as_mut_ptr(), &mut len),
            CKR_OK
        );
        assert_eq!(C_VerifyInit(h, &mut m, public), CKR_OK);
        assert_eq!(
            C_Verify(h, data.as_mut_ptr(), 3, sig.as_mut_ptr(), len),
            CKR_OK
        );
    }
    assert_eq!(abi.store.all_links().len(), 1);
}

impl Abi {
    /// The lock alone, the module not initialised.
    pub(super) fn uninitialised() -> MutexGuard<'static, ()> {
        TURN.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

// ---- Issue 12 item 10: lengths that no buffer can have ----------------------
//
// Before the fix, each of these built a slice of that length: undefined
// behaviour, which a debug build reports by aborting the whole process
// ("unsafe precondition(s) violated: slice::from_raw_parts…"), as seen when
// these tests were first run.

/// Lengths no caller's buffer can have: `CK_UNAVAILABLE_INFORMATION` (left in
/// a reused template by a failed `C_GetAttributeValue`), `isize::MAX`
/// itself (which `slice::from_raw_parts` would take, though no allocation
/// can be that large) and just above it.
const HUGE: [CK_ULONG; 3] = [
    CK_UNAVAILABLE_INFORMATION,
    isize::MAX as CK_ULONG,
    isize::MAX as CK_ULONG + 1,
];

#[test]
fn input_lengths_beyond_isize_max_are_arguments_bad() {
    let abi = Abi::new();
    let h = abi.session();
    let private = abi.key(h, CKO_PRIVATE_KEY);
    let mut buf = vec![0u8; 256];
    for len in HUGE {
        let mut m = mech(CKM_RSA_PKCS);
        let mut out_len = buf.len() as CK_ULONG;
        unsafe {
            assert_eq!(C_SignInit(h, &mut m, private), CKR_OK);
            assert_eq!(
                C_Sign(
                    h,
                    buf.as_mut_ptr(),
                    len,
                    buf.as_mut_ptr().add(128),
                    &mut out_len
                ),
                CKR_ARGUMENTS_BAD
            );
            assert_eq!(C_SignUpdate(h, buf.as_mut_ptr(), len), CKR_ARGUMENTS_BAD);
            assert_eq!(cancel_all(h), CKR_OK);
            let mut d = mech(CKM_SHA256);
            assert_eq!(C_DigestInit(h, &mut d), CKR_OK);
            assert_eq!(C_DigestUpdate(h, buf.as_mut_ptr(), len), CKR_ARGUMENTS_BAD);
            assert_eq!(
                C_GenerateRandom(h, buf.as_mut_ptr(), len),
                CKR_ARGUMENTS_BAD
            );
        }
    }
}

/// Ends every operation of a session, whatever the test left running.
unsafe fn cancel_all(h: CK_SESSION_HANDLE) -> CK_RV {
    unsafe {
        super::v3::C_SessionCancel(
            h,
            CKF_SIGN | CKF_VERIFY | CKF_ENCRYPT | CKF_DECRYPT | CKF_DIGEST | CKF_FIND_OBJECTS,
        )
    }
}

#[test]
fn output_lengths_beyond_isize_max_are_arguments_bad() {
    let abi = Abi::new();
    let h = abi.session();
    let private = abi.key(h, CKO_PRIVATE_KEY);
    let mut data = [1u8; 20];
    let mut out = vec![0u8; 256];
    for len in HUGE {
        let mut m = mech(CKM_RSA_PKCS);
        let mut out_len = len;
        unsafe {
            assert_eq!(C_SignInit(h, &mut m, private), CKR_OK);
            assert_eq!(
                C_Sign(h, data.as_mut_ptr(), 20, out.as_mut_ptr(), &mut out_len),
                CKR_ARGUMENTS_BAD
            );
            assert_eq!(cancel_all(h), CKR_OK);
            let mut found = [0 as CK_OBJECT_HANDLE; 4];
            let mut n = 0;
            assert_eq!(C_FindObjectsInit(h, null_mut(), 0), CKR_OK);
            assert_eq!(
                C_FindObjects(h, found.as_mut_ptr(), len, &mut n),
                CKR_ARGUMENTS_BAD
            );
            // A misaligned array is no array of CK_OBJECT_HANDLE either.
            let odd = (found.as_mut_ptr() as *mut u8).add(1) as *mut CK_OBJECT_HANDLE;
            assert_eq!(C_FindObjects(h, odd, 2, &mut n), CKR_ARGUMENTS_BAD);
            assert_eq!(C_FindObjectsFinal(h), CKR_OK);
        }
    }
}

#[test]
fn template_and_attribute_lengths_beyond_isize_max() {
    let abi = Abi::new();
    let h = abi.session();
    let public = abi.key(h, CKO_PUBLIC_KEY);
    let mut buf = vec![0xaau8; 512];
    for len in HUGE {
        let mut t = [CK_ATTRIBUTE {
            type_: CKA_LABEL,
            pValue: buf.as_mut_ptr() as *mut std::ffi::c_void,
            ulValueLen: len,
        }];
        let mut o = 0;
        unsafe {
            assert_eq!(C_FindObjectsInit(h, t.as_mut_ptr(), 1), CKR_ARGUMENTS_BAD);
            assert_eq!(
                C_CreateObject(h, t.as_mut_ptr(), 1, &mut o),
                CKR_ARGUMENTS_BAD
            );
            assert_eq!(
                C_SetAttributeValue(h, public, t.as_mut_ptr(), 1),
                CKR_ARGUMENTS_BAD
            );
            // An array whose byte size overflows, or exceeds isize::MAX.
            let n = len / std::mem::size_of::<CK_ATTRIBUTE>() as CK_ULONG + 1;
            assert_eq!(
                C_GetAttributeValue(h, public, t.as_mut_ptr(), n),
                CKR_ARGUMENTS_BAD
            );
            assert_eq!(C_FindObjectsInit(h, t.as_mut_ptr(), n), CKR_ARGUMENTS_BAD);
        }
        // C_GetAttributeValue never builds a slice from ulValueLen, but a
        // reused template's CK_UNAVAILABLE_INFORMATION is no buffer size:
        // before the fix the modulus was written over whatever pValue
        // pointed to. That attribute is too small; the others are answered.
        let mut bits: CK_ULONG = 0;
        let mut t = [
            CK_ATTRIBUTE {
                type_: CKA_MODULUS,
                pValue: buf.as_mut_ptr() as *mut std::ffi::c_void,
                ulValueLen: len,
            },
            CK_ATTRIBUTE {
                type_: CKA_MODULUS_BITS,
                pValue: &mut bits as *mut CK_ULONG as *mut std::ffi::c_void,
                ulValueLen: std::mem::size_of::<CK_ULONG>() as CK_ULONG,
            },
        ];
        let rv = unsafe { C_GetAttributeValue(h, public, t.as_mut_ptr(), 2) };
        assert_eq!(rv, CKR_BUFFER_TOO_SMALL);
        assert_eq!(t[0].ulValueLen, CK_UNAVAILABLE_INFORMATION);
        assert!(buf.iter().all(|b| *b == 0xaa), "the buffer was written");
        assert_eq!(bits, 1024);
    }
}

#[test]
fn mechanism_parameter_lengths_beyond_isize_max_are_arguments_bad() {
    let abi = Abi::new();
    let h = abi.session();
    let public = abi.key(h, CKO_PUBLIC_KEY);
    let label = [0u8; 8];
    for len in HUGE {
        let mut p = CK_RSA_PKCS_OAEP_PARAMS {
            hashAlg: CKM_SHA256,
            mgf: CKG_MGF1_SHA256,
            source: CKZ_DATA_SPECIFIED,
            pSourceData: label.as_ptr() as *mut std::ffi::c_void,
            ulSourceDataLen: len,
        };
        let mut m = CK_MECHANISM {
            mechanism: CKM_RSA_PKCS_OAEP,
            pParameter: &mut p as *mut CK_RSA_PKCS_OAEP_PARAMS as *mut std::ffi::c_void,
            ulParameterLen: std::mem::size_of::<CK_RSA_PKCS_OAEP_PARAMS>() as CK_ULONG,
        };
        assert_eq!(
            unsafe { C_EncryptInit(h, &mut m, public) },
            CKR_ARGUMENTS_BAD
        );
    }
}

// ---- Issue 12 item 12: smaller conformance gaps -----------------------------

/// Every entry point that is present but does nothing, called with harmless
/// arguments. Seen failing before the fix: all answered
/// CKR_FUNCTION_NOT_SUPPORTED (or CKR_FUNCTION_NOT_PARALLEL) before
/// C_Initialize.
fn unsupported_calls() -> Vec<(&'static str, CK_RV)> {
    use super::v3::*;
    let (h, o, n, p) = (1, 1, 0, null_mut());
    let m = null_mut();
    unsafe {
        vec![
            ("C_InitToken", C_InitToken(0, p, n, p)),
            ("C_InitPIN", C_InitPIN(h, p, n)),
            ("C_SetPIN", C_SetPIN(h, p, n, p, n)),
            ("C_GetOperationState", C_GetOperationState(h, p, null_mut())),
            ("C_SetOperationState", C_SetOperationState(h, p, n, o, o)),
            (
                "C_CopyObject",
                C_CopyObject(h, o, null_mut(), n, null_mut()),
            ),
            ("C_EncryptUpdate", C_EncryptUpdate(h, p, n, p, null_mut())),
            ("C_EncryptFinal", C_EncryptFinal(h, p, null_mut())),
            ("C_DecryptUpdate", C_DecryptUpdate(h, p, n, p, null_mut())),
            ("C_DecryptFinal", C_DecryptFinal(h, p, null_mut())),
            ("C_DigestKey", C_DigestKey(h, o)),
            ("C_SignRecoverInit", C_SignRecoverInit(h, m, o)),
            ("C_SignRecover", C_SignRecover(h, p, n, p, null_mut())),
            (
                "C_DigestEncryptUpdate",
                C_DigestEncryptUpdate(h, p, n, p, null_mut()),
            ),
            (
                "C_DecryptDigestUpdate",
                C_DecryptDigestUpdate(h, p, n, p, null_mut()),
            ),
            (
                "C_SignEncryptUpdate",
                C_SignEncryptUpdate(h, p, n, p, null_mut()),
            ),
            (
                "C_DecryptVerifyUpdate",
                C_DecryptVerifyUpdate(h, p, n, p, null_mut()),
            ),
            (
                "C_GenerateKey",
                C_GenerateKey(h, m, null_mut(), n, null_mut()),
            ),
            ("C_WrapKey", C_WrapKey(h, m, o, o, p, null_mut())),
            (
                "C_UnwrapKey",
                C_UnwrapKey(h, m, o, p, n, null_mut(), n, null_mut()),
            ),
            (
                "C_DeriveKey",
                C_DeriveKey(h, m, o, null_mut(), n, null_mut()),
            ),
            ("C_GetFunctionStatus", C_GetFunctionStatus(h)),
            ("C_CancelFunction", C_CancelFunction(h)),
            (
                "C_WaitForSlotEvent",
                C_WaitForSlotEvent(0, null_mut(), null_mut()),
            ),
            ("C_MessageEncryptInit", C_MessageEncryptInit(h, m, o)),
            (
                "C_EncryptMessage",
                C_EncryptMessage(h, null_mut(), n, p, n, p, n, p, null_mut()),
            ),
            (
                "C_EncryptMessageBegin",
                C_EncryptMessageBegin(h, null_mut(), n, p, n),
            ),
            (
                "C_EncryptMessageNext",
                C_EncryptMessageNext(h, null_mut(), n, p, n, p, null_mut(), 0),
            ),
            ("C_MessageEncryptFinal", C_MessageEncryptFinal(h)),
            ("C_MessageDecryptInit", C_MessageDecryptInit(h, m, o)),
            (
                "C_DecryptMessage",
                C_DecryptMessage(h, null_mut(), n, p, n, p, n, p, null_mut()),
            ),
            (
                "C_DecryptMessageBegin",
                C_DecryptMessageBegin(h, null_mut(), n, p, n),
            ),
            (
                "C_DecryptMessageNext",
                C_DecryptMessageNext(h, null_mut(), n, p, n, p, null_mut(), 0),
            ),
            ("C_MessageDecryptFinal", C_MessageDecryptFinal(h)),
            ("C_MessageSignInit", C_MessageSignInit(h, m, o)),
            (
                "C_SignMessage",
                C_SignMessage(h, null_mut(), n, p, n, p, null_mut()),
            ),
            ("C_SignMessageBegin", C_SignMessageBegin(h, null_mut(), n)),
            (
                "C_SignMessageNext",
                C_SignMessageNext(h, null_mut(), n, p, n, p, null_mut()),
            ),
            ("C_MessageSignFinal", C_MessageSignFinal(h)),
            ("C_MessageVerifyInit", C_MessageVerifyInit(h, m, o)),
            (
                "C_VerifyMessage",
                C_VerifyMessage(h, null_mut(), n, p, n, p, n),
            ),
            (
                "C_VerifyMessageBegin",
                C_VerifyMessageBegin(h, null_mut(), n),
            ),
            (
                "C_VerifyMessageNext",
                C_VerifyMessageNext(h, null_mut(), n, p, n, p, n),
            ),
            ("C_MessageVerifyFinal", C_MessageVerifyFinal(h)),
        ]
    }
}

#[test]
fn unsupported_functions_say_not_initialized_first() {
    {
        let _turn = Abi::uninitialised();
        for (name, rv) in unsupported_calls() {
            assert_eq!(
                rv, CKR_CRYPTOKI_NOT_INITIALIZED,
                "{name} before C_Initialize"
            );
        }
    }
    let _abi = Abi::new();
    for (name, rv) in unsupported_calls() {
        let want = match name {
            "C_GetFunctionStatus" | "C_CancelFunction" => CKR_FUNCTION_NOT_PARALLEL,
            _ => CKR_FUNCTION_NOT_SUPPORTED,
        };
        assert_eq!(rv, want, "{name}");
    }
}

/// Seen failing before the fix: flags lacked CKF_RNG.
#[test]
fn tokens_say_they_have_a_random_number_generator() {
    let abi = Abi::new();
    let h = abi.session();
    let mut info: CK_TOKEN_INFO = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { C_GetTokenInfo(USER, &mut info) }, CKR_OK);
    assert_ne!(info.flags & CKF_RNG, 0);
    let mut r = [0u8; 32];
    assert_eq!(unsafe { C_GenerateRandom(h, r.as_mut_ptr(), 32) }, CKR_OK);
    assert_ne!(r, [0u8; 32]);
}

/// A non-NULL pParameter with ulParameterLen 0 is no parameter (some
/// callers pass a pointer to an empty structure). Seen failing before the
/// fix: CKR_MECHANISM_PARAM_INVALID for each.
#[test]
fn an_empty_parameter_is_no_parameter() {
    let abi = Abi::new();
    let h = abi.session();
    let (private, public) = (abi.key(h, CKO_PRIVATE_KEY), abi.key(h, CKO_PUBLIC_KEY));
    let mut junk = [0u8; 8];
    let junk = junk.as_mut_ptr() as *mut std::ffi::c_void;
    let with_empty = |ty| CK_MECHANISM {
        mechanism: ty,
        pParameter: junk,
        ulParameterLen: 0,
    };
    unsafe {
        for ty in [CKM_RSA_PKCS, CKM_SHA256_RSA_PKCS, CKM_RSA_X_509] {
            assert_eq!(
                C_SignInit(h, &mut with_empty(ty), private),
                CKR_OK,
                "{ty:#x}"
            );
            assert_eq!(
                C_VerifyInit(h, &mut with_empty(ty), public),
                CKR_OK,
                "{ty:#x}"
            );
            assert_eq!(cancel_all(h), CKR_OK);
        }
        assert_eq!(
            C_EncryptInit(h, &mut with_empty(CKM_RSA_PKCS), public),
            CKR_OK
        );
        assert_eq!(
            C_DecryptInit(h, &mut with_empty(CKM_RSA_PKCS), private),
            CKR_OK
        );
        assert_eq!(C_DigestInit(h, &mut with_empty(CKM_SHA256)), CKR_OK);
        assert_eq!(cancel_all(h), CKR_OK);
        // Mechanisms that need their parameters still need them.
        assert_eq!(
            C_SignInit(h, &mut with_empty(CKM_RSA_PKCS_PSS), private),
            CKR_MECHANISM_PARAM_INVALID
        );
        assert_eq!(
            C_EncryptInit(h, &mut with_empty(CKM_RSA_PKCS_OAEP), public),
            CKR_MECHANISM_PARAM_INVALID
        );
    }
}

/// Counts the bytes this thread allocates, for tests that an input is not
/// copied. The test binary's allocator: test code, in `ffi` because
/// implementing an allocator takes `unsafe`.
mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static BYTES: Cell<usize> = const { Cell::new(0) };
    }

    struct Counting;

    fn count(n: usize) {
        let _ = BYTES.try_with(|b| b.set(b.get() + n));
    }

    // SAFETY: every call is passed on to the system allocator unchanged.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, l: Layout) -> *mut u8 {
            count(l.size());
            unsafe { System.alloc(l) }
        }
        unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
            count(l.size());
            unsafe { System.alloc_zeroed(l) }
        }
        unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
            unsafe { System.dealloc(p, l) }
        }
        unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
            count(new);
            unsafe { System.realloc(p, l, new) }
        }
    }

    #[global_allocator]
    static A: Counting = Counting;

    /// What `f` returns, and how many bytes this thread allocated meanwhile.
    pub(super) fn allocated<T>(f: impl FnOnce() -> T) -> (T, usize) {
        let before = BYTES.with(Cell::get);
        let r = f();
        (r, BYTES.with(Cell::get) - before)
    }
}

/// A single-part input far beyond any RSA length is refused without being
/// copied: before the fix, `Acc::payload` copied the whole input (here 4 MiB)
/// into a new buffer before any length check, which this test saw as ≥ 4 MiB
/// allocated during each call.
#[test]
fn oversized_single_part_inputs_are_refused_without_a_copy() {
    let abi = Abi::new();
    let h = abi.session();
    let (private, public) = (abi.key(h, CKO_PRIVATE_KEY), abi.key(h, CKO_PUBLIC_KEY));
    const BIG: usize = 4 << 20;
    let mut big = vec![7u8; BIG];
    let mut out = vec![0u8; 128];
    let big_len = BIG as CK_ULONG;
    let cases: [(&str, CK_MECHANISM_TYPE, CK_OBJECT_HANDLE, CK_RV); 6] = [
        ("C_Sign", CKM_RSA_PKCS, private, CKR_DATA_LEN_RANGE),
        ("C_Sign", CKM_RSA_X_509, private, CKR_DATA_LEN_RANGE),
        ("C_Verify", CKM_RSA_X_509, public, CKR_DATA_LEN_RANGE),
        ("C_Encrypt", CKM_RSA_PKCS, public, CKR_DATA_LEN_RANGE),
        (
            "C_Decrypt",
            CKM_RSA_PKCS,
            private,
            CKR_ENCRYPTED_DATA_LEN_RANGE,
        ),
        (
            "C_VerifyRecover",
            CKM_RSA_X_509,
            public,
            CKR_SIGNATURE_LEN_RANGE,
        ),
    ];
    for (f, ty, key, want) in cases {
        let mut m = mech(ty);
        let mut out_len = out.len() as CK_ULONG;
        let (p, o) = (big.as_mut_ptr(), out.as_mut_ptr());
        let (rv, bytes) = counting::allocated(|| unsafe {
            match f {
                "C_Sign" => {
                    assert_eq!(C_SignInit(h, &mut m, key), CKR_OK);
                    C_Sign(h, p, big_len, o, &mut out_len)
                }
                "C_Verify" => {
                    assert_eq!(C_VerifyInit(h, &mut m, key), CKR_OK);
                    C_Verify(h, p, big_len, o, 128)
                }
                "C_Encrypt" => {
                    assert_eq!(C_EncryptInit(h, &mut m, key), CKR_OK);
                    C_Encrypt(h, p, big_len, o, &mut out_len)
                }
                "C_Decrypt" => {
                    assert_eq!(C_DecryptInit(h, &mut m, key), CKR_OK);
                    C_Decrypt(h, p, big_len, o, &mut out_len)
                }
                _ => {
                    assert_eq!(C_VerifyRecoverInit(h, &mut m, key), CKR_OK);
                    C_VerifyRecover(h, p, big_len, o, &mut out_len)
                }
            }
        });
        assert_eq!(rv, want, "{f} {ty:#x}");
        // Well under the input's size, not near zero: the first operation on
        // a key may learn its public key (discovery is lazy), ~100 KB here.
        assert!(bytes < BIG / 4, "{f} {ty:#x}: {bytes} bytes allocated");
    }
}

// ---- Issue 12 item 4: input and output in the same buffer -------------------
//
// Each call below gives the same memory as input and output, as C callers do.
// Before the fix the module held a `&[u8]` and a `&mut [u8]` over those bytes:
// undefined behaviour that happened to give the right answer, so these
// results alone cannot show it (Miri, which could, is not installed here and
// cannot run a C caller anyway). What shows it is the debug-build check in
// `ffi::borrowed`: with it and without the fix, every call here panicked
// ("an output buffer overlaps an input borrowed in the same call") and
// answered CKR_GENERAL_ERROR.

#[test]
fn encrypt_and_decrypt_in_place() {
    use rsa::Pkcs1v15Encrypt;
    let abi = Abi::new();
    let h = abi.session();
    let (private, public) = (abi.key(h, CKO_PRIVATE_KEY), abi.key(h, CKO_PUBLIC_KEY));
    let k = rsa_key().size();
    // The same pointer, and an input inside a larger output.
    for at in [0, 10] {
        let mut buf = vec![0u8; 2 * k];
        buf[at..at + 5].copy_from_slice(b"hello");
        let mut len = buf.len() as CK_ULONG;
        let mut m = mech(CKM_RSA_PKCS);
        let p = buf.as_mut_ptr();
        unsafe {
            assert_eq!(C_EncryptInit(h, &mut m, public), CKR_OK);
            assert_eq!(C_Encrypt(h, p.add(at), 5, p, &mut len), CKR_OK, "at {at}");
        }
        assert_eq!(len as usize, k);
        let plain = rsa_key().decrypt(Pkcs1v15Encrypt, &buf[..k]).unwrap();
        assert_eq!(plain, b"hello");
    }
    let mut buf = rsa_key()
        .to_public_key()
        .encrypt(&mut rsa::rand_core::OsRng, Pkcs1v15Encrypt, b"secret")
        .unwrap();
    let mut len = k as CK_ULONG;
    let mut m = mech(CKM_RSA_PKCS);
    let p = buf.as_mut_ptr();
    unsafe {
        assert_eq!(C_DecryptInit(h, &mut m, private), CKR_OK);
        assert_eq!(C_Decrypt(h, p, k as CK_ULONG, p, &mut len), CKR_OK);
    }
    assert_eq!(&buf[..len as usize], b"secret");
}

#[test]
fn sign_verify_recover_and_digest_in_place() {
    use sha2::Digest;
    let abi = Abi::new();
    let h = abi.session();
    let (private, public) = (abi.key(h, CKO_PRIVATE_KEY), abi.key(h, CKO_PUBLIC_KEY));
    let k = rsa_key().size();

    let mut buf = vec![0u8; k];
    buf[..3].copy_from_slice(b"abc");
    let mut len = k as CK_ULONG;
    let mut m = mech(CKM_SHA256_RSA_PKCS);
    let p = buf.as_mut_ptr();
    unsafe {
        assert_eq!(C_SignInit(h, &mut m, private), CKR_OK);
        assert_eq!(C_Sign(h, p, 3, p, &mut len), CKR_OK);
    }
    let digest = sha2::Sha256::digest(b"abc");
    rsa_key()
        .to_public_key()
        .verify(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), &digest, &buf)
        .expect("a signature of \"abc\"");

    let mut buf = rsa_key()
        .sign(rsa::Pkcs1v15Sign::new_unprefixed(), b"recover me")
        .unwrap();
    let mut len = k as CK_ULONG;
    let mut m = mech(CKM_RSA_PKCS);
    let p = buf.as_mut_ptr();
    unsafe {
        assert_eq!(C_VerifyRecoverInit(h, &mut m, public), CKR_OK);
        assert_eq!(C_VerifyRecover(h, p, k as CK_ULONG, p, &mut len), CKR_OK);
    }
    assert_eq!(&buf[..len as usize], b"recover me");

    let mut buf = [0u8; 32];
    buf[..3].copy_from_slice(b"abc");
    let mut len = 32;
    let mut m = mech(CKM_SHA256);
    unsafe {
        assert_eq!(C_DigestInit(h, &mut m), CKR_OK);
        assert_eq!(
            C_Digest(h, buf.as_mut_ptr(), 3, buf.as_mut_ptr(), &mut len),
            CKR_OK
        );
    }
    assert_eq!(&buf[..], &digest[..]);
}

// ---- Issue 12 item 7: PKCS#11 3.0's "cancel by NULL mechanism" -------------

/// The function lists as a client gets them: the 3.0 list from
/// C_GetInterface, the 2.40 list from C_GetFunctionList.
fn lists() -> (&'static CK_FUNCTION_LIST_3_0, &'static CK_FUNCTION_LIST) {
    let mut v = CK_VERSION { major: 3, minor: 0 };
    let mut i: *mut CK_INTERFACE = null_mut();
    let mut l: *mut CK_FUNCTION_LIST = null_mut();
    unsafe {
        assert_eq!(
            super::v3::C_GetInterface(null_mut(), &mut v, &mut i, 0),
            CKR_OK
        );
        assert_eq!(super::list::C_GetFunctionList(&mut l), CKR_OK);
        (&*((*i).pFunctionList as *const CK_FUNCTION_LIST_3_0), &*l)
    }
}

/// One kind of operation: its init (as the list under test has it, with
/// the mechanism pointer given) and a call that needs it to be active.
struct Kind {
    name: &'static str,
    mech: CK_MECHANISM_TYPE,
    private: bool,
}

const KINDS: [Kind; 6] = [
    Kind {
        name: "sign",
        mech: CKM_SHA256_RSA_PKCS,
        private: true,
    },
    Kind {
        name: "verify",
        mech: CKM_SHA256_RSA_PKCS,
        private: false,
    },
    Kind {
        name: "encrypt",
        mech: CKM_RSA_PKCS,
        private: false,
    },
    Kind {
        name: "decrypt",
        mech: CKM_RSA_PKCS,
        private: true,
    },
    Kind {
        name: "digest",
        mech: CKM_SHA256,
        private: false,
    },
    Kind {
        name: "verify-recover",
        mech: CKM_RSA_PKCS,
        private: false,
    },
];

/// The init functions of a list, by kind; both list types share the layout
/// of these entries.
macro_rules! init_of {
    ($l:expr, $k:expr) => {{
        let l = $l;
        move |h: CK_SESSION_HANDLE, m: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE| unsafe {
            match $k {
                "sign" => l.C_SignInit.unwrap()(h, m, key),
                "verify" => l.C_VerifyInit.unwrap()(h, m, key),
                "encrypt" => l.C_EncryptInit.unwrap()(h, m, key),
                "decrypt" => l.C_DecryptInit.unwrap()(h, m, key),
                "digest" => l.C_DigestInit.unwrap()(h, m),
                _ => l.C_VerifyRecoverInit.unwrap()(h, m, key),
            }
        }
    }};
}

/// Whether an operation of `kind` is active: its update (or final) call
/// says CKR_OPERATION_NOT_INITIALIZED when it is not. Ends it if it was.
fn active(h: CK_SESSION_HANDLE, kind: &str) -> bool {
    let mut b = [0u8; 256];
    let mut len: CK_ULONG = 0;
    let p = b.as_mut_ptr();
    let rv = unsafe {
        match kind {
            "sign" => C_SignUpdate(h, p, 1),
            "verify" => C_VerifyUpdate(h, p, 1),
            "digest" => C_DigestUpdate(h, p, 1),
            // Single-part only: a one-byte input is refused, and ends it.
            "encrypt" => C_Encrypt(h, p, 1000, p, &mut len),
            "decrypt" => C_Decrypt(h, p, 1, p, &mut len),
            _ => C_VerifyRecover(h, p, 1, p, &mut len),
        }
    };
    unsafe { cancel_all(h) };
    rv != CKR_OPERATION_NOT_INITIALIZED
}

/// Seen failing before the fix: the 3.0 list's C_SignInit(h, NULL, 0)
/// answered CKR_ARGUMENTS_BAD (7) and left the operation active.
#[test]
fn a_null_mechanism_ends_the_operation_in_the_3_0_list_only() {
    let abi = Abi::new();
    let h = abi.session();
    let (private, public) = (abi.key(h, CKO_PRIVATE_KEY), abi.key(h, CKO_PUBLIC_KEY));
    let (v3, v2) = lists();
    for k in &KINDS {
        let key = if k.private { private } else { public };
        let mut m = mech(k.mech);
        let (init3, init2) = (init_of!(v3, k.name), init_of!(v2, k.name));

        // 3.0: ends the active operation; the next init starts afresh.
        assert_eq!(init3(h, &mut m, key), CKR_OK, "{}", k.name);
        assert_eq!(init3(h, null_mut(), key), CKR_OK, "3.0 {} NULL", k.name);
        assert!(!active(h, k.name), "3.0 {}: still active", k.name);
        assert_eq!(init3(h, &mut m, key), CKR_OK, "3.0 {} again", k.name);
        assert!(active(h, k.name));
        // With nothing active there is nothing to end: CKR_OK too (the 3.0
        // text names no other result, and CKR_OPERATION_NOT_INITIALIZED is
        // not among the init functions' return values).
        assert_eq!(init3(h, null_mut(), key), CKR_OK, "3.0 {} idle", k.name);
        // An invalid session is still one.
        assert_eq!(init3(h + 1000, null_mut(), key), CKR_SESSION_HANDLE_INVALID);

        // 2.40 (and the exported symbols): NULL is a bad argument, and the
        // operation goes on.
        assert_eq!(init2(h, &mut m, key), CKR_OK);
        assert_eq!(
            init2(h, null_mut(), key),
            CKR_ARGUMENTS_BAD,
            "2.40 {}",
            k.name
        );
        assert!(active(h, k.name), "2.40 {}: ended", k.name);
    }
    // The 2.40 list's entries are the exported symbols themselves.
    type Init =
        unsafe extern "C" fn(CK_SESSION_HANDLE, *mut CK_MECHANISM, CK_OBJECT_HANDLE) -> CK_RV;
    let sign: Init = C_SignInit;
    assert_eq!(v2.C_SignInit.map(|f| f as usize), Some(sign as usize));
    assert_ne!(v3.C_SignInit.map(|f| f as usize), Some(sign as usize));
    // No sign-recover operation ever exists: the function is unsupported,
    // whatever its arguments.
    let rv = unsafe { v3.C_SignRecoverInit.unwrap()(h, null_mut(), private) };
    assert_eq!(rv, CKR_FUNCTION_NOT_SUPPORTED);
}

#[test]
fn an_application_that_forbids_threads_gets_none() {
    // PKCS#11 2.40 5.4: with CKF_LIBRARY_CANT_CREATE_OS_THREADS the library
    // must not create threads; the module's work on many keys then stays in
    // the calling thread (`module::parallel` with one thread).
    let abi = Abi::new();
    let threads = || super::global::read().as_ref().unwrap().module.threads();
    assert_eq!(
        threads(),
        std::thread::available_parallelism().map_or(1, |n| n.get().min(crate::module::MAX_THREADS))
    );
    assert_eq!(unsafe { C_Finalize(null_mut()) }, CKR_OK);
    let mut args = CK_C_INITIALIZE_ARGS {
        CreateMutex: None,
        DestroyMutex: None,
        LockMutex: None,
        UnlockMutex: None,
        flags: CKF_LIBRARY_CANT_CREATE_OS_THREADS | CKF_OS_LOCKING_OK,
        pReserved: null_mut(),
    };
    assert_eq!(unsafe { C_Initialize((&raw mut args).cast()) }, CKR_OK);
    assert_eq!(threads(), 1);
    drop(abi);
}
