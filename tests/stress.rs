//! Threads racing: 8 threads sign with a kernel-held key while others open
//! and close sessions (their own, and the signers': a guessed handle), close
//! all sessions of the token, read slot and token info, and one finalises and
//! re-initialises the module in a loop. Nothing may crash or hang (a
//! watchdog aborts the process when no call has returned for 60 s), every
//! signature returned must verify, and every error must be one of those a
//! race explains (see `ALLOWED`).
//!
//! Three ways of initialising: `CKF_OS_LOCKING_OK`, the four mutex callbacks
//! without that flag, and NULL arguments. `KP11_STRESS_SECS` (default 30)
//! is the duration of the first; the other two take a third of it each.
//!
//! What the test names must have happened, however slow the machine: at
//! least `MIN_CYCLES` C_Finalize/C_Initialize cycles and `MIN_SIGNED`
//! verified signatures, a signer running into a C_Finalize, and a signer
//! having its session closed under it. When the time is up and one of these
//! has not happened yet, the run goes on until it has, for at most `EXTRA`
//! (then the test fails and says which); the time it took is printed.
//!
//! `harness = false`: `C_Finalize` is process-wide, so each variant runs in a
//! process of its own (see `common::harness`).

mod common;

use common::harness::{self, KERNEL, Test};
use common::{KernelKey, SHA256_RSA_PKCS, client, slot_of, verifies};
use cryptoki_sys::*;
use keyring_pkcs11_testkit::{Client, Fail, Rv, os_locking_args, rv};
use parking_lot::lock_api::RawMutex as _;
use std::collections::BTreeMap;
use std::ffi::c_void;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const SIGNERS: usize = 8;
const WATCHDOG: Duration = Duration::from_secs(60);
/// The finalizer cycles about 4 times a second, the signers sign hundreds
/// of times in 10 s even in the emulated lab: these floors leave an order of
/// magnitude of headroom, and the extension below covers a stalled machine.
const MIN_CYCLES: u64 = 10;
const MIN_SIGNED: u64 = 50;
/// How long the run may go on past its time for the above to happen.
const EXTRA: Duration = Duration::from_secs(120);

/// Which errors a call may return while other threads close its session or
/// finalise the module under it. Anything else fails the test.
/// - CKR_CRYPTOKI_NOT_INITIALIZED: any call between C_Finalize and the next
///   C_Initialize.
/// - CKR_SESSION_HANDLE_INVALID: the session was closed (C_CloseSession by
///   another thread, C_CloseAllSessions, C_Finalize); handles are never
///   reused, so a stale one is only ever invalid.
/// - CKR_SESSION_CLOSED: the spec's name for a session closed during the
///   call; allowed where the session is used.
/// - CKR_KEY_HANDLE_INVALID: C_SignInit with a key handle found before a
///   C_Finalize/C_Initialize cycle (object handles do not survive it).
///
/// C_Initialize and C_Finalize (one thread only) must always succeed.
/// C_Sign must not answer CKR_OPERATION_NOT_INITIALIZED: a signer's
/// operation lives in its own session, which only closes as a whole.
const ALLOWED: &[(&str, &[CK_RV])] = &[
    ("C_GetInfo", &[CKR_CRYPTOKI_NOT_INITIALIZED]),
    ("C_GetSlotList", &[CKR_CRYPTOKI_NOT_INITIALIZED]),
    ("C_GetTokenInfo", &[CKR_CRYPTOKI_NOT_INITIALIZED]),
    ("C_OpenSession", &[CKR_CRYPTOKI_NOT_INITIALIZED]),
    ("C_CloseAllSessions", &[CKR_CRYPTOKI_NOT_INITIALIZED]),
    (
        "C_CloseSession",
        &[CKR_CRYPTOKI_NOT_INITIALIZED, CKR_SESSION_HANDLE_INVALID],
    ),
    (
        "C_FindObjectsInit",
        &[
            CKR_CRYPTOKI_NOT_INITIALIZED,
            CKR_SESSION_HANDLE_INVALID,
            CKR_SESSION_CLOSED,
        ],
    ),
    (
        "C_FindObjects",
        &[
            CKR_CRYPTOKI_NOT_INITIALIZED,
            CKR_SESSION_HANDLE_INVALID,
            CKR_SESSION_CLOSED,
        ],
    ),
    (
        "C_FindObjectsFinal",
        &[
            CKR_CRYPTOKI_NOT_INITIALIZED,
            CKR_SESSION_HANDLE_INVALID,
            CKR_SESSION_CLOSED,
        ],
    ),
    (
        "C_SignInit",
        &[
            CKR_CRYPTOKI_NOT_INITIALIZED,
            CKR_SESSION_HANDLE_INVALID,
            CKR_SESSION_CLOSED,
            CKR_KEY_HANDLE_INVALID,
        ],
    ),
    (
        "C_Sign",
        &[
            CKR_CRYPTOKI_NOT_INITIALIZED,
            CKR_SESSION_HANDLE_INVALID,
            CKR_SESSION_CLOSED,
        ],
    ),
    ("C_Initialize", &[]),
    ("C_Finalize", &[]),
];

fn secs() -> u64 {
    std::env::var("KP11_STRESS_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30)
}

fn main() {
    let full = secs();
    let third = full.div_ceil(3);
    let budget = |s: u64| Duration::from_secs(s + 180) + EXTRA;
    harness::main(&[
        Test {
            name: "stress_os_locking",
            ignore: KERNEL,
            timeout: budget(full),
            run: || stress(Variant::OsLocking, secs()),
        },
        Test {
            name: "stress_mutex_callbacks",
            ignore: KERNEL,
            timeout: budget(third),
            run: || stress(Variant::Callbacks, secs().div_ceil(3)),
        },
        Test {
            name: "stress_null_init_args",
            ignore: KERNEL,
            timeout: budget(third),
            run: || stress(Variant::NullArgs, secs().div_ceil(3)),
        },
    ]);
}

#[derive(Clone, Copy, Debug)]
enum Variant {
    OsLocking,
    Callbacks,
    NullArgs,
}

static MUTEX_CALLS: AtomicU64 = AtomicU64::new(0);

type Raw = parking_lot::RawMutex;

unsafe extern "C" fn create_mutex(pp: *mut *mut c_void) -> CK_RV {
    MUTEX_CALLS.fetch_add(1, Ordering::Relaxed);
    if pp.is_null() {
        return CKR_ARGUMENTS_BAD;
    }
    unsafe { *pp = Box::into_raw(Box::new(Raw::INIT)) as *mut c_void };
    CKR_OK
}

unsafe extern "C" fn destroy_mutex(p: *mut c_void) -> CK_RV {
    MUTEX_CALLS.fetch_add(1, Ordering::Relaxed);
    drop(unsafe { Box::from_raw(p as *mut Raw) });
    CKR_OK
}

unsafe extern "C" fn lock_mutex(p: *mut c_void) -> CK_RV {
    MUTEX_CALLS.fetch_add(1, Ordering::Relaxed);
    unsafe { &*(p as *const Raw) }.lock();
    CKR_OK
}

unsafe extern "C" fn unlock_mutex(p: *mut c_void) -> CK_RV {
    MUTEX_CALLS.fetch_add(1, Ordering::Relaxed);
    unsafe { (*(p as *const Raw)).unlock() };
    CKR_OK
}

fn init_args(v: Variant) -> Option<CK_C_INITIALIZE_ARGS> {
    match v {
        Variant::OsLocking => Some(os_locking_args()),
        Variant::Callbacks => Some(CK_C_INITIALIZE_ARGS {
            CreateMutex: Some(create_mutex),
            DestroyMutex: Some(destroy_mutex),
            LockMutex: Some(lock_mutex),
            UnlockMutex: Some(unlock_mutex),
            flags: 0,
            pReserved: std::ptr::null_mut(),
        }),
        Variant::NullArgs => None,
    }
}

/// What one thread saw: CKR_OK counts and errors per function.
#[derive(Default)]
struct Seen {
    calls: BTreeMap<(&'static str, CK_RV), u64>,
    signed: u64,
    bad_signatures: u64,
    key_not_found: u64,
}

impl Seen {
    fn ok(&mut self, func: &'static str) {
        *self.calls.entry((func, CKR_OK)).or_default() += 1;
    }
    fn fail(&mut self, f: Fail) {
        *self.calls.entry((f.func, f.rv)).or_default() += 1;
    }
    fn rv(&mut self, func: &'static str, rv: CK_RV) {
        *self.calls.entry((func, rv)).or_default() += 1;
    }
    fn merge(&mut self, o: Seen) {
        for (k, n) in o.calls {
            *self.calls.entry(k).or_default() += n;
        }
        self.signed += o.signed;
        self.bad_signatures += o.bad_signatures;
        self.key_not_found += o.key_not_found;
    }
    fn count(&self, func: &str, rv: CK_RV) -> u64 {
        self.calls.get(&(func, rv)).copied().unwrap_or(0)
    }
}

struct Shared {
    stop: AtomicBool,
    /// Calls returned, by every thread: what the watchdog watches.
    progress: AtomicU64,
    /// Verified signatures so far.
    signed: AtomicU64,
    /// Signers' C_SignInit/C_Sign that met a C_Finalize
    /// (CKR_CRYPTOKI_NOT_INITIALIZED) and that had their session closed
    /// under them (CKR_SESSION_HANDLE_INVALID), so far.
    hit_finalize: AtomicU64,
    lost_session: AtomicU64,
}

impl Shared {
    /// What the run still lacks, if anything.
    fn lacking(&self, cycles: u64) -> Vec<String> {
        let mut l = Vec::new();
        if cycles < MIN_CYCLES {
            l.push(format!(
                "only {cycles} C_Finalize/C_Initialize cycles (want {MIN_CYCLES})"
            ));
        }
        let signed = self.signed.load(Ordering::Relaxed);
        if signed < MIN_SIGNED {
            l.push(format!("only {signed} signatures (want {MIN_SIGNED})"));
        }
        if self.hit_finalize.load(Ordering::Relaxed) == 0 {
            l.push("no signer ever ran into a C_Finalize".into());
        }
        if self.lost_session.load(Ordering::Relaxed) == 0 {
            l.push("no signer ever had its session closed under it".into());
        }
        l
    }
}

fn stress(variant: Variant, secs: u64) {
    let key = KernelKey::load(2048, "stress");
    let p = client();
    let args = init_args(variant);
    assert_eq!(p.initialize(args.as_ref()).rv(), CKR_OK, "C_Initialize");
    // Slot IDs are positions in the token list: stable across C_Finalize.
    let slot = slot_of(p, "user").unwrap();
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        progress: AtomicU64::new(0),
        signed: AtomicU64::new(0),
        hit_finalize: AtomicU64::new(0),
        lost_session: AtomicU64::new(0),
    });
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let (shared, done) = (shared.clone(), done.clone());
        std::thread::spawn(move || {
            let (mut last, mut since) = (u64::MAX, Instant::now());
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(250));
                let now = shared.progress.load(Ordering::Relaxed);
                if now != last {
                    (last, since) = (now, Instant::now());
                } else if since.elapsed() > WATCHDOG {
                    eprintln!(
                        "watchdog: no PKCS#11 call returned for {} s ({now} calls so far): a deadlock; aborting",
                        WATCHDOG.as_secs()
                    );
                    std::process::abort();
                }
            }
        })
    };

    let mut threads = Vec::new();
    for t in 0..SIGNERS {
        let (shared, label, public) = (shared.clone(), key.label.clone(), key.public.clone());
        threads.push(std::thread::spawn(move || {
            signer(p, slot, t, &label, &public, &shared)
        }));
    }
    for t in 0..2 {
        let shared = shared.clone();
        threads.push(std::thread::spawn(move || churner(p, slot, t, &shared)));
    }
    let cycles = Arc::new(AtomicU64::new(0));
    {
        let (shared, cycles) = (shared.clone(), cycles.clone());
        threads.push(std::thread::spawn(move || {
            let args = init_args(variant);
            let mut seen = Seen::default();
            while !shared.stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                seen.rv("C_Finalize", p.finalize().rv());
                shared.progress.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
                seen.rv("C_Initialize", p.initialize(args.as_ref()).rv());
                shared.progress.fetch_add(1, Ordering::Relaxed);
                cycles.fetch_add(1, Ordering::Relaxed);
            }
            seen
        }));
    }
    std::thread::sleep(Duration::from_secs(secs));
    // Go on until everything the test names has happened (bounded).
    let over = Instant::now();
    while !shared.lacking(cycles.load(Ordering::Relaxed)).is_empty() && over.elapsed() < EXTRA {
        std::thread::sleep(Duration::from_millis(100));
    }
    let extra = over.elapsed();
    shared.stop.store(true, Ordering::Relaxed);
    let mut seen = Seen::default();
    for t in threads {
        seen.merge(t.join().expect("a test thread panicked"));
    }
    done.store(true, Ordering::Relaxed);
    watchdog.join().unwrap();

    // The module is initialised (the loop ends after C_Initialize) and works.
    let h = p.open(slot).unwrap();
    let k = p.find_labelled(h, CKO_PRIVATE_KEY, &key.label).unwrap();
    assert_eq!(k.len(), 1);
    let sig = p.sign(h, &SHA256_RSA_PKCS, k[0], b"after").unwrap();
    assert!(verifies(&key.public, b"after", &sig));
    p.finalize().unwrap();

    let cycles = cycles.load(Ordering::Relaxed);
    println!(
        "{variant:?}, {secs} s + {:.1} s until everything had happened: {} signatures, all verified: {}; {cycles} C_Finalize/C_Initialize cycles; mutex callback calls: {}",
        extra.as_secs_f64(),
        seen.signed,
        seen.bad_signatures == 0,
        MUTEX_CALLS.load(Ordering::Relaxed)
    );
    let mut unexpected = Vec::new();
    for ((func, rv), n) in &seen.calls {
        println!("  {func:<20} {:<32} {n}", rv::describe(*rv));
        let allowed = ALLOWED
            .iter()
            .find(|(f, _)| f == func)
            .map_or(&[][..], |(_, a)| a);
        if *rv != CKR_OK && !allowed.contains(rv) {
            unexpected.push(format!("{func} -> {} ({n} times)", rv::describe(*rv)));
        }
    }
    assert_eq!(seen.bad_signatures, 0, "signatures that do not verify");
    assert_eq!(
        seen.key_not_found, 0,
        "searches that found no key in an initialised module"
    );
    assert!(
        unexpected.is_empty(),
        "unexpected return values: {unexpected:#?}"
    );
    // The races did happen, and signing still got done.
    let lacking = shared.lacking(cycles);
    assert!(
        lacking.is_empty(),
        "after {secs} s and {:.0} s more: {}",
        extra.as_secs_f64(),
        lacking.join("; ")
    );
    // The live counters agree with what the threads recorded.
    assert_eq!(seen.signed, shared.signed.load(Ordering::Relaxed));
    assert!(
        seen.count("C_Sign", CKR_CRYPTOKI_NOT_INITIALIZED)
            + seen.count("C_SignInit", CKR_CRYPTOKI_NOT_INITIALIZED)
            > 0,
        "no signer ever ran into a C_Finalize"
    );
    assert!(
        seen.count("C_Sign", CKR_SESSION_HANDLE_INVALID)
            + seen.count("C_SignInit", CKR_SESSION_HANDLE_INVALID)
            > 0,
        "no signer ever had its session closed under it"
    );
    assert!(
        seen.count("C_CloseAllSessions", CKR_OK) > 0,
        "C_CloseAllSessions never ran"
    );
}

/// Opens a session and finds the key, then signs until something fails,
/// then starts again.
fn signer(
    p: Client,
    slot: CK_SLOT_ID,
    t: usize,
    label: &str,
    public: &rsa::RsaPublicKey,
    shared: &Shared,
) -> Seen {
    let mut seen = Seen::default();
    let mut current: Option<(CK_SESSION_HANDLE, CK_OBJECT_HANDLE)> = None;
    let mut n = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        let (h, key) = match current {
            Some(c) => c,
            None => {
                let r = p.open(slot);
                shared.progress.fetch_add(1, Ordering::Relaxed);
                let h = match r {
                    Ok(h) => h,
                    Err(f) => {
                        seen.fail(f);
                        std::thread::sleep(Duration::from_millis(2));
                        continue;
                    }
                };
                seen.ok("C_OpenSession");
                let r = p.find_labelled(h, CKO_PRIVATE_KEY, label);
                shared.progress.fetch_add(1, Ordering::Relaxed);
                match r {
                    Ok(k) if k.len() == 1 => {
                        seen.ok("C_FindObjects");
                        current = Some((h, k[0]));
                        (h, k[0])
                    }
                    Ok(_) => {
                        seen.key_not_found += 1;
                        seen.rv("C_CloseSession", p.close(h).rv());
                        continue;
                    }
                    Err(f) => {
                        seen.fail(f);
                        seen.rv("C_CloseSession", p.close(h).rv());
                        continue;
                    }
                }
            }
        };
        n += 1;
        let msg = format!("signer {t} message {n}");
        let r = p.sign(h, &SHA256_RSA_PKCS, key, msg.as_bytes());
        shared.progress.fetch_add(1, Ordering::Relaxed);
        match r {
            Ok(sig) => {
                seen.ok("C_Sign");
                if verifies(public, msg.as_bytes(), &sig) {
                    seen.signed += 1;
                    shared.signed.fetch_add(1, Ordering::Relaxed);
                } else {
                    seen.bad_signatures += 1;
                }
            }
            Err(f) => {
                let race = match f.rv {
                    CKR_CRYPTOKI_NOT_INITIALIZED => Some(&shared.hit_finalize),
                    CKR_SESSION_HANDLE_INVALID => Some(&shared.lost_session),
                    _ => None,
                };
                if let Some(r) = race {
                    r.fetch_add(1, Ordering::Relaxed);
                }
                seen.fail(f);
                // Whatever broke, a client starts over with a new session.
                seen.rv("C_CloseSession", p.close(h).rv());
                current = None;
            }
        }
    }
    if let Some((h, _)) = current {
        seen.rv("C_CloseSession", p.close(h).rv());
    }
    seen
}

/// Opens and closes sessions; closes the session opened just before its
/// own (usually a signer's); now and then closes every session of the
/// token; reads slot and token information.
fn churner(p: Client, slot: CK_SLOT_ID, t: usize, shared: &Shared) -> Seen {
    let mut seen = Seen::default();
    let mut i = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        i += 1;
        match p.open(slot) {
            Ok(h) => {
                seen.ok("C_OpenSession");
                if i % 4 == 0 {
                    seen.rv("C_CloseSession", p.close(h - 1 - t as CK_ULONG).rv());
                }
                seen.rv("C_CloseSession", p.close(h).rv());
            }
            Err(f) => seen.fail(f),
        }
        if i % 8 == 0 {
            seen.rv("C_CloseAllSessions", p.close_all(slot).rv());
        }
        match p.slots().and_then(|s| p.token_info(s[0])) {
            Ok(_) => seen.ok("C_GetTokenInfo"),
            Err(f) => seen.fail(f),
        }
        seen.rv("C_GetInfo", p.info().rv());
        shared.progress.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(5));
    }
    seen
}
