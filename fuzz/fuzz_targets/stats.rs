//! What a run reached: calls and `CKR_OK`s per function, printed when the
//! fuzzer exits. `fuzz/run` reads the totals and fails the run if a function
//! of [`MUST_REACH`] never succeeded: reach is checked, not hoped for.

use cryptoki_sys::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

pub static CALLS: AtomicU64 = AtomicU64::new(0);
pub static INPUTS: AtomicU64 = AtomicU64::new(0);
/// Calls and successes per function.
static STATS: Mutex<BTreeMap<&'static str, (u64, u64)>> = Mutex::new(BTreeMap::new());

/// The functions whose success paths (the deep ones: key material in and
/// out of tokens, every operation past its init) a run must reach. Each has
/// a seed in `fuzz/corpus/ffi` that makes it succeed, so a run that misses
/// one has lost a path, not luck.
pub const MUST_REACH: &[&str] = &[
    "C_Initialize",
    "C_Finalize",
    "C_GetInfo",
    "C_GetSlotList",
    "C_GetSlotInfo",
    "C_GetTokenInfo",
    "C_GetMechanismList",
    "C_GetMechanismInfo",
    "C_OpenSession",
    "C_CloseSession",
    "C_CloseAllSessions",
    "C_GetSessionInfo",
    "C_Login",
    "C_Logout",
    "C_CreateObject",
    "C_DestroyObject",
    "C_GetObjectSize",
    "C_GetAttributeValue",
    "C_SetAttributeValue",
    "C_FindObjectsInit",
    "C_FindObjects",
    "C_FindObjectsFinal",
    "C_EncryptInit",
    "C_Encrypt",
    "C_DecryptInit",
    "C_Decrypt",
    "C_DigestInit",
    "C_Digest",
    "C_DigestUpdate",
    "C_DigestFinal",
    "C_SignInit",
    "C_Sign",
    "C_SignUpdate",
    "C_SignFinal",
    "C_VerifyInit",
    "C_Verify",
    "C_VerifyUpdate",
    "C_VerifyFinal",
    "C_VerifyRecoverInit",
    "C_VerifyRecover",
    "C_GenerateKeyPair",
    "C_GenerateRandom",
];

/// The functions that returned CKR_OK in the current input, for
/// `FUZZ_REACH=1` (see `fuzz/reseed`).
static INPUT_OK: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());

pub fn count(name: &'static str, rv: CK_RV) {
    CALLS.fetch_add(1, Ordering::Relaxed);
    let mut stats = STATS.lock().unwrap();
    let entry = stats.entry(name).or_default();
    entry.0 += 1;
    entry.1 += u64::from(rv == CKR_OK);
    if rv == CKR_OK {
        INPUT_OK.lock().unwrap().insert(name);
    }
}

/// At the end of an input: with `FUZZ_REACH=1`, which functions it made
/// succeed, on one line.
pub fn input_done() {
    let mut ok = INPUT_OK.lock().unwrap();
    if std::env::var_os("FUZZ_REACH").is_some() {
        let names: Vec<&str> = ok.iter().copied().collect();
        eprintln!("fuzz-ffi: input reached: {}", names.join(" "));
    }
    ok.clear();
}

/// libFuzzer ends with `exit()`, so the totals are printed from an atexit
/// handler; `fuzz/run` reads the last two lines.
pub extern "C" fn report() {
    let Ok(stats) = STATS.lock() else { return };
    eprintln!("fuzz-ffi: CKR_OK / calls per function (* must reach CKR_OK):");
    for (name, (n, ok)) in stats.iter() {
        let must = if MUST_REACH.contains(name) { "*" } else { " " };
        eprintln!("fuzz-ffi: {must} {name:<24} {ok:>9} / {n}");
    }
    let missed: Vec<&str> = MUST_REACH
        .iter()
        .copied()
        .filter(|f| stats.get(f).is_none_or(|(_, ok)| *ok == 0))
        .collect();
    if missed.is_empty() {
        eprintln!(
            "fuzz-ffi: every one of the {} must-reach functions returned CKR_OK",
            MUST_REACH.len()
        );
    } else {
        eprintln!("fuzz-ffi: never CKR_OK: {}", missed.join(", "));
    }
    eprintln!(
        "fuzz-ffi: {} C_* calls in {} inputs",
        CALLS.load(Ordering::Relaxed),
        INPUTS.load(Ordering::Relaxed)
    );
}
