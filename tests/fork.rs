//! fork(): a child of an initialised process is not initialised until it
//! calls `C_Initialize` (every other call answers
//! `CKR_CRYPTOKI_NOT_INITIALIZED`, never hangs), its `C_Initialize` works even
//! when the parent had other threads inside the module at the moment of the
//! fork, and its process token is its own. A forking server: four workers
//! re-initialise and sign concurrently with a kernel-held key; the parent
//! verifies every signature.
//!
//! `harness = false` (see Cargo.toml): forking from libtest's multithreaded
//! process would be a test of libtest. Each test runs in its own process
//! (see `common::harness`).

mod common;

use common::harness::{self, KERNEL, Test, fork_child, wait_child};
use common::{SHA256_RSA_PKCS, client, key_der, public_of, slot_of, verifies};
use cryptoki_sys::*;
use keyring_pkcs11::kernel::keyctl;
use keyring_pkcs11_testkit::{Client, Module, Rv, os_locking_args, rv};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

fn main() {
    harness::main(&[
        Test {
            name: "child_is_not_initialized_until_it_initializes",
            ignore: None,
            timeout: Duration::from_secs(120),
            run: child_is_not_initialized_until_it_initializes,
        },
        Test {
            name: "fork_while_other_threads_are_inside_the_module",
            ignore: None,
            timeout: Duration::from_secs(300),
            run: fork_while_other_threads_are_inside_the_module,
        },
        Test {
            name: "fork_after_the_module_is_unloaded",
            ignore: None,
            timeout: Duration::from_secs(60),
            run: fork_after_the_module_is_unloaded,
        },
        Test {
            name: "forking_server_signs_in_four_workers",
            ignore: KERNEL,
            timeout: Duration::from_secs(600),
            run: forking_server_signs_in_four_workers,
        },
    ]);
}

fn expect(what: &str, got: CK_RV, want: CK_RV) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!(
            "{what}: {} (want {})",
            rv::describe(got),
            rv::describe(want)
        ))
    }
}

/// In a child, before `C_Initialize`: every call is refused as not
/// initialised, the parent's session handle included, and `C_Finalize` too.
fn refused_before_init(
    p: Client,
    parent_session: CK_SESSION_HANDLE,
    slot: CK_SLOT_ID,
) -> Result<(), String> {
    const NI: CK_RV = CKR_CRYPTOKI_NOT_INITIALIZED;
    expect("C_GetInfo before C_Initialize", p.info().rv(), NI)?;
    expect("C_GetSlotList before C_Initialize", p.slots().rv(), NI)?;
    expect("C_OpenSession before C_Initialize", p.open(slot).rv(), NI)?;
    expect(
        "C_GetSessionInfo(parent's session) before C_Initialize",
        p.session_info(parent_session).rv(),
        NI,
    )?;
    expect(
        "C_FindObjectsInit(parent's session) before C_Initialize",
        p.find_labelled(parent_session, CKO_PRIVATE_KEY, "x").rv(),
        NI,
    )?;
    expect(
        "C_CloseSession(parent's session) before C_Initialize",
        p.close(parent_session).rv(),
        NI,
    )?;
    expect(
        "C_CloseAllSessions before C_Initialize",
        p.close_all(slot).rv(),
        NI,
    )?;
    expect("C_Finalize before C_Initialize", p.finalize().rv(), NI)?;
    Ok(())
}

fn child_is_not_initialized_until_it_initializes() {
    let p = client();
    p.initialize(Some(&os_locking_args())).unwrap();
    let slot = slot_of(p, "user").unwrap();
    let h = p.open(slot).unwrap();
    let pid = fork_child(60, || {
        refused_before_init(p, h, slot)?;
        expect("C_Initialize in the child", p.initialize(None).rv(), CKR_OK)?;
        expect(
            "second C_Initialize in the child",
            p.initialize(None).rv(),
            CKR_CRYPTOKI_ALREADY_INITIALIZED,
        )?;
        expect("C_GetInfo after C_Initialize", p.info().rv(), CKR_OK)?;
        // Handles are the child's own: the parent's session is not one.
        expect(
            "C_GetSessionInfo(parent's session) after C_Initialize",
            p.session_info(h).rv(),
            CKR_SESSION_HANDLE_INVALID,
        )?;
        let mine = p.open(slot).map_err(|f| f.to_string())?;
        expect(
            "C_GetSessionInfo(own session)",
            p.session_info(mine).rv(),
            CKR_OK,
        )?;
        expect("C_Finalize in the child", p.finalize().rv(), CKR_OK)?;
        expect(
            "C_GetInfo after C_Finalize",
            p.info().rv(),
            CKR_CRYPTOKI_NOT_INITIALIZED,
        )?;
        Ok(())
    });
    wait_child(pid).unwrap();
    // The child's C_Initialize/C_Finalize changed nothing here.
    assert_eq!(
        p.session_info(h).rv(),
        CKR_OK,
        "parent's session after the child"
    );
    p.close(h).unwrap();
    p.finalize().unwrap();
}

/// Threads of the parent call into the module without pause while the main
/// thread forks: whatever lock a thread held at the instant of the fork, the
/// child (where that thread does not exist) must be able to initialise.
fn fork_while_other_threads_are_inside_the_module() {
    let p = client();
    p.initialize(Some(&os_locking_args())).unwrap();
    let slot = slot_of(p, "user").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for t in 0..3 {
        let (stop, calls) = (stop.clone(), calls.clone());
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match t {
                    0 => {
                        p.info().unwrap();
                    }
                    1 => {
                        p.slots().unwrap();
                    }
                    _ => {
                        let h = p.open(slot).unwrap();
                        p.close(h).unwrap();
                    }
                }
                calls.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let forks = 40;
    let mut failures = Vec::new();
    for _ in 0..forks {
        std::thread::sleep(Duration::from_millis(5));
        let pid = fork_child(10, || {
            expect(
                "C_GetInfo before C_Initialize",
                p.info().rv(),
                CKR_CRYPTOKI_NOT_INITIALIZED,
            )?;
            expect("C_Initialize in the child", p.initialize(None).rv(), CKR_OK)?;
            let s = slot_of(p, "user")?;
            // Threads of the child's own contend for the module's locks,
            // which must owe nothing to the parent's.
            let workers: Vec<_> = (0..3)
                .map(|_| {
                    std::thread::spawn(move || -> Result<(), String> {
                        for _ in 0..200 {
                            let h = p.open(s).map_err(|f| f.to_string())?;
                            expect("C_CloseSession", p.close(h).rv(), CKR_OK)?;
                        }
                        Ok(())
                    })
                })
                .collect();
            for w in workers {
                w.join()
                    .map_err(|_| "a child's thread panicked".to_string())??;
            }
            expect("C_Finalize in the child", p.finalize().rv(), CKR_OK)
        });
        if let Err(e) = wait_child(pid) {
            failures.push(e);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("a calling thread failed");
    }
    let n = calls.load(Ordering::Relaxed);
    println!("{forks} forks while 3 threads made {n} calls");
    assert!(n > forks, "the threads hardly ran ({n} calls)");
    assert!(
        failures.is_empty(),
        "{} of {forks} children failed: {failures:#?}",
        failures.len()
    );
    p.finalize().unwrap();
}

/// A process that used the module and unloaded it can still fork: nothing
/// of the module (fork handlers) is left behind to be called.
fn fork_after_the_module_is_unloaded() {
    let m = Module::load(common::module_path()).expect("dlopen");
    m.client().initialize(None).unwrap();
    m.client().finalize().unwrap();
    drop(m); // dlclose
    // Otherwise this test would show nothing.
    let name = common::module_path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    assert!(
        !maps.contains(&name),
        "{name} is still mapped after dlclose"
    );
    for _ in 0..3 {
        let pid = fork_child(30, || Ok(()));
        wait_child(pid).unwrap();
    }
}

/// Signatures per worker; `KP11_FORK_SIGNS` overrides (1000 by default).
fn signs_per_worker() -> usize {
    std::env::var("KP11_FORK_SIGNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

fn add_key(label: &str, der: &[u8], keyring: keyctl::Serial) -> keyctl::Serial {
    keyctl::add_key("asymmetric", label, der, keyring).unwrap_or_else(|e| {
        panic!("add_key(asymmetric, {label}) failed: {e}; this kernel cannot hold PKCS#8 keys (modprobe pkcs8_key_parser, or run inside lab/run)")
    })
}

fn count(p: Client, slot: CK_SLOT_ID, label: &str) -> Result<usize, String> {
    let h = p.open(slot).map_err(|f| f.to_string())?;
    let n = p
        .find_labelled(h, CKO_PRIVATE_KEY, label)
        .map_err(|f| f.to_string())?
        .len();
    expect("C_CloseSession", p.close(h).rv(), CKR_OK)?;
    Ok(n)
}

/// Whether the key is gone (ENOKEY) within `limit`: the kernel collects the
/// keys of a dead process's keyring shortly after it exits.
fn gone_within(serial: keyctl::Serial, limit: Duration) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        match keyctl::describe(serial) {
            Err(e) if e.0 == libc::ENOKEY => return true,
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    false
}

fn message(worker: usize, i: usize) -> Vec<u8> {
    format!("worker {worker} message {i}").into_bytes()
}

fn forking_server_signs_in_four_workers() {
    const WORKERS: usize = 4;
    let n = signs_per_worker();
    let der = key_der(2048);
    let public = public_of(&der);
    let pid = std::process::id();
    // One key in each shared keyring and one in the parent's process keyring.
    let user_label = format!("kp11-fork-user-{pid}");
    let session_label = format!("kp11-fork-session-{pid}");
    let process_label = format!("kp11-fork-process-{pid}");
    let user_key = add_key(&user_label, &der, keyctl::KEY_SPEC_USER_KEYRING);
    let session_key = add_key(&session_label, &der, keyctl::KEY_SPEC_SESSION_KEYRING);
    add_key(&process_label, &der, keyctl::KEY_SPEC_PROCESS_KEYRING);

    let p = client();
    p.initialize(Some(&os_locking_args())).unwrap();
    let user = slot_of(p, "user").unwrap();
    let session = slot_of(p, "session").unwrap();
    let process = slot_of(p, "process").unwrap();
    assert_eq!(count(p, user, &user_label), Ok(1), "parent: user token");
    assert_eq!(
        count(p, session, &session_label),
        Ok(1),
        "parent: session token"
    );
    assert_eq!(
        count(p, process, &process_label),
        Ok(1),
        "parent: process token"
    );
    let parent_h = p.open(user).unwrap();
    let parent_key = p
        .find_labelled(parent_h, CKO_PRIVATE_KEY, &user_label)
        .unwrap()[0];

    let dir = std::env::temp_dir().join(format!("kp11-fork-{pid}"));
    std::fs::create_dir_all(&dir).unwrap();
    let start = std::time::Instant::now();
    let mut children = Vec::new();
    for w in 0..WORKERS {
        let dir = dir.clone();
        let (user_label, session_label, process_label) = (
            user_label.clone(),
            session_label.clone(),
            process_label.clone(),
        );
        children.push(fork_child(500, move || {
            refused_before_init(p, parent_h, user)?;
            expect(
                "C_SignInit(parent's session and key) before C_Initialize",
                p.sign(parent_h, &SHA256_RSA_PKCS, parent_key, b"x").rv(),
                CKR_CRYPTOKI_NOT_INITIALIZED,
            )?;
            expect(
                "C_Initialize in the worker",
                p.initialize(Some(&os_locking_args())).rv(),
                CKR_OK,
            )?;
            // The keyrings shared with the parent show the same keys; the
            // process token is this process's own keyring, which starts
            // empty in a child (the kernel gives a forked process none).
            if count(p, user, &user_label)? != 1 {
                return Err("worker: the user token lacks the parent's key".into());
            }
            if count(p, session, &session_label)? != 1 {
                return Err("worker: the session token lacks the parent's key".into());
            }
            if count(p, process, &process_label)? != 0 {
                return Err(
                    "worker: the parent's process-keyring key is in the worker's process token"
                        .into(),
                );
            }
            let own_label = format!("kp11-fork-worker-{}", std::process::id());
            let own = add_key(&own_label, &key_der(2048), keyctl::KEY_SPEC_PROCESS_KEYRING);
            std::fs::write(dir.join(format!("{w}.serial")), own.to_string())
                .map_err(|e| e.to_string())?;
            if count(p, process, &own_label)? != 1 {
                return Err(
                    "worker: its own process-keyring key is not in its process token".into(),
                );
            }
            let h = p.open(user).map_err(|f| f.to_string())?;
            let keys = p
                .find_labelled(h, CKO_PRIVATE_KEY, &user_label)
                .map_err(|f| f.to_string())?;
            let key = *keys.first().ok_or("worker: no key")?;
            let mut out = Vec::with_capacity(n * 256);
            for i in 0..n {
                let sig = p
                    .sign(h, &SHA256_RSA_PKCS, key, &message(w, i))
                    .map_err(|f| format!("signature {i}: {f}"))?;
                if sig.len() != 256 {
                    return Err(format!("signature {i}: {} bytes", sig.len()));
                }
                out.extend_from_slice(&sig);
            }
            std::fs::write(dir.join(format!("{w}.sig")), out).map_err(|e| e.to_string())?;
            expect("C_Finalize in the worker", p.finalize().rv(), CKR_OK)
        }));
    }
    // The parent keeps serving with its own state while the workers run.
    let sig = p
        .sign(parent_h, &SHA256_RSA_PKCS, parent_key, b"parent")
        .unwrap();
    assert!(
        verifies(&public, b"parent", &sig),
        "parent's signature during the workers' run"
    );

    let results: Vec<_> = children.into_iter().map(wait_child).collect();
    let elapsed = start.elapsed();
    for (w, r) in results.iter().enumerate() {
        assert!(r.is_ok(), "worker {w}: {}", r.as_ref().unwrap_err());
    }
    let mut checked = 0;
    for w in 0..WORKERS {
        let all = std::fs::read(dir.join(format!("{w}.sig"))).unwrap();
        assert_eq!(
            all.len(),
            n * 256,
            "worker {w}: {} signatures",
            all.len() / 256
        );
        for (i, sig) in all.chunks(256).enumerate() {
            assert!(
                verifies(&public, &message(w, i), sig),
                "worker {w}: signature {i} does not verify"
            );
            checked += 1;
        }
    }
    println!(
        "{WORKERS} workers signed {checked} messages in {:.1} s ({:.0}/s); all {checked} verified",
        elapsed.as_secs_f64(),
        checked as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(checked, WORKERS * n);
    // The workers' own process keyrings died with them (each worker saw its
    // key in its process token above); the parent's is untouched.
    for w in 0..WORKERS {
        let serial: keyctl::Serial = std::fs::read_to_string(dir.join(format!("{w}.serial")))
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            gone_within(serial, Duration::from_secs(10)),
            "worker {w}: its process-keyring key {serial} outlived it"
        );
    }
    assert_eq!(
        count(p, process, &process_label),
        Ok(1),
        "parent: process token after the workers"
    );
    let _ = std::fs::remove_dir_all(&dir);
    p.close(parent_h).unwrap();
    p.finalize().unwrap();
    let _ = keyctl::unlink(user_key, keyctl::KEY_SPEC_USER_KEYRING);
    let _ = keyctl::unlink(session_key, keyctl::KEY_SPEC_SESSION_KEYRING);
}
