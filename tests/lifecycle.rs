//! Key lifecycle on a real kernel: keys in the process token die with the
//! process (normal exit and SIGKILL), a template whose halves disagree is
//! refused without leaving a key behind, and what one process creates or
//! destroys another sees at once. Run by `lab/test` inside the lab.
//!
//! `harness = false`: the other processes are helpers of this binary
//! (`common::harness::Helper`), which are not tests and are not counted.

mod common;

use common::harness::{self, Helper, KERNEL, Test};
use common::*;
use cryptoki_sys::*;
use keyring_pkcs11::keyctl;
use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::ptr::null_mut;
use std::time::{Duration, Instant};

fn main() {
    let minutes = |m: u64| Duration::from_secs(60 * m);
    harness::main_with_helpers(
        &[
            Test {
                name: "process_token_keys_die_with_the_process",
                ignore: KERNEL,
                timeout: minutes(10),
                run: process_token_keys_die_with_the_process,
            },
            Test {
                name: "mismatched_templates_leave_no_key_behind",
                ignore: KERNEL,
                timeout: minutes(10),
                run: mismatched_templates_leave_no_key_behind,
            },
            Test {
                name: "another_process_sees_creation_and_destruction_at_once",
                ignore: KERNEL,
                timeout: minutes(10),
                run: another_process_sees_creation_and_destruction_at_once,
            },
        ],
        &[
            Helper {
                name: "process-key-exit",
                run: || process_token_key(false),
            },
            Helper {
                name: "process-key-hold",
                run: || process_token_key(true),
            },
            Helper {
                name: "create-user",
                run: create_user,
            },
            Helper {
                name: "destroy-user",
                run: destroy_user,
            },
        ],
    );
}

/// Imports the 2048-bit test key as PKCS#8 (CKA_VALUE) into a token.
fn import(h: CK_SESSION_HANDLE, label: &str, der: &[u8]) -> CK_RV {
    let class = CKO_PRIVATE_KEY.to_ne_bytes();
    let kt = CKK_RSA.to_ne_bytes();
    let mut t = [
        attr(CKA_CLASS, &class),
        attr(CKA_KEY_TYPE, &kt),
        attr(CKA_LABEL, label.as_bytes()),
        attr(CKA_VALUE, der),
    ];
    let mut o = 0;
    unsafe { raw().C_CreateObject.unwrap()(h, t.as_mut_ptr(), t.len() as CK_ULONG, &mut o) }
}

/// Helper of `process_token_keys_die_with_the_process`: imports a key into
/// the process token, reports its serial, then exits or waits to be killed.
fn process_token_key(hold: bool) {
    let label = format!("kp11-proc-{}", std::process::id());
    let h = raw_rw_session("process");
    assert_eq!(import(h, &label, &key_der(2048)), CKR_OK);
    let serial =
        keyctl::search(keyctl::KEY_SPEC_PROCESS_KEYRING, "asymmetric", &label).expect("key in @p");
    println!("SERIAL {serial}");
    std::io::stdout().flush().unwrap();
    if hold {
        std::thread::sleep(Duration::from_secs(600));
    }
}

/// The label a helper works on.
fn helper_label() -> String {
    std::env::var("KP11_LABEL").expect("KP11_LABEL")
}

/// Helper: imports the 2048-bit test key into the user token.
fn create_user() {
    assert_eq!(
        import(raw_rw_session("user"), &helper_label(), &key_der(2048)),
        CKR_OK
    );
}

/// Helper: destroys the private key labelled KP11_LABEL in the user token.
fn destroy_user() {
    use cryptoki::object::{Attribute, ObjectClass};
    let s = user_session();
    let found = s
        .find_objects(&[
            Attribute::Label(helper_label().into_bytes()),
            Attribute::Class(ObjectClass::PRIVATE_KEY),
        ])
        .unwrap();
    assert_eq!(found.len(), 1);
    s.destroy_object(found[0]).unwrap();
}

fn gone_within(serial: keyctl::Serial, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        match keyctl::describe(serial) {
            Err(e) if e.0 == libc::ENOKEY => return true,
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    false
}

fn process_token_keys_die_with_the_process() {
    for mode in ["exit", "hold"] {
        let mut child = harness::helper(&format!("process-key-{mode}"))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut serial = None;
        let mut seen = Vec::new();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(s) = line.strip_prefix("SERIAL ") {
                serial = Some(s.parse::<keyctl::Serial>().unwrap());
                break;
            }
            seen.push(line);
        }
        // Let an exiting child finish writing, and see that it finished.
        let rest: Vec<u8> = if mode == "exit" {
            lines
                .map_while(Result::ok)
                .flat_map(|l| (l + "\n").into_bytes())
                .collect()
        } else {
            Vec::new()
        };
        let serial =
            serial.unwrap_or_else(|| panic!("the child reported no key; it said: {seen:?}"));
        if mode == "hold" {
            // Alive: the key exists (our uid may view it, it is not possessed).
            assert!(
                keyctl::describe(serial).is_ok(),
                "key missing while its process lives"
            );
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        }
        let status = child.wait().unwrap();
        assert_eq!(status.success(), mode == "exit", "{mode}: {status:?}");
        if mode == "exit" {
            assert!(
                harness::helper_done("process-key-exit", &rest),
                "exit: the helper did not finish"
            );
        }
        assert!(
            gone_within(serial, Duration::from_secs(10)),
            "{mode}: key {serial} outlived its process"
        );
    }
}

fn mismatched_templates_leave_no_key_behind() {
    use rsa::pkcs8::DecodePrivateKey;
    use rsa::traits::{PrivateKeyParts, PublicKeyParts};
    let a = rsa::RsaPrivateKey::from_pkcs8_der(&key_der(2048)).unwrap();
    let b = rsa::RsaPrivateKey::from_pkcs8_der(&key_der(3072)).unwrap();
    let h = raw_rw_session("user");
    // The modulus and public exponent of one key, the private parts of another.
    let (n, e, d) = (
        b.n().to_bytes_be(),
        a.e().to_bytes_be(),
        a.d().to_bytes_be(),
    );
    let (p, q) = (a.primes()[0].to_bytes_be(), a.primes()[1].to_bytes_be());
    let (dp, dq) = (a.dp().unwrap().to_bytes_be(), a.dq().unwrap().to_bytes_be());
    let qi = a.qinv().unwrap().to_biguint().unwrap().to_bytes_be();
    let class = CKO_PRIVATE_KEY.to_ne_bytes();
    let kt = CKK_RSA.to_ne_bytes();
    let mut t = [
        attr(CKA_CLASS, &class),
        attr(CKA_KEY_TYPE, &kt),
        attr(CKA_LABEL, b"kp11-mismatch"),
        attr(CKA_MODULUS, &n),
        attr(CKA_PUBLIC_EXPONENT, &e),
        attr(CKA_PRIVATE_EXPONENT, &d),
        attr(CKA_PRIME_1, &p),
        attr(CKA_PRIME_2, &q),
        attr(CKA_EXPONENT_1, &dp),
        attr(CKA_EXPONENT_2, &dq),
        attr(CKA_COEFFICIENT, &qi),
    ];
    let mut o = 0;
    let rv =
        unsafe { raw().C_CreateObject.unwrap()(h, t.as_mut_ptr(), t.len() as CK_ULONG, &mut o) };
    assert_eq!(rv, CKR_TEMPLATE_INCONSISTENT);
    // Other tests add keys to @u concurrently: look for this one by name.
    let left = keyctl::search(keyctl::KEY_SPEC_USER_KEYRING, "asymmetric", "kp11-mismatch");
    assert_eq!(
        left.err().map(|e| e.0),
        Some(libc::ENOKEY),
        "a refused key must not stay in the keyring"
    );
    // A read-only session may not create at all.
    let mut ro = 0;
    let slot = slot_labelled("user").id();
    unsafe { raw().C_OpenSession.unwrap()(slot, CKF_SERIAL_SESSION, null_mut(), None, &mut ro) };
    assert_eq!(import(ro, "kp11-ro", &key_der(2048)), CKR_SESSION_READ_ONLY);
    // Quota, parser and permission errors have their own codes (see module.rs
    // write_error); a correct import into the user token works.
    assert_eq!(import(h, "kp11-import-ok", &key_der(2048)), CKR_OK);
    let s = keyctl::search(
        keyctl::KEY_SPEC_USER_KEYRING,
        "asymmetric",
        "kp11-import-ok",
    )
    .unwrap();
    keyctl::unlink(s, keyctl::KEY_SPEC_USER_KEYRING).unwrap();
}

/// Runs a helper on `label` in another process; it must finish.
fn run_child(helper: &str, label: &str) {
    let o = harness::helper(helper)
        .env("KP11_LABEL", label)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(
        o.status.success() && harness::helper_done(helper, &o.stdout),
        "helper {helper} failed ({})",
        o.status
    );
}

/// SoftHSMv2's users find that objects created by one process stay invisible
/// to another until it re-initialises; here the kernel holds the state.
fn another_process_sees_creation_and_destruction_at_once() {
    use cryptoki::mechanism::Mechanism;
    use cryptoki::object::{Attribute, ObjectClass};
    let label = format!("kp11-shared-{}", std::process::id());
    let s = user_session();
    let find = || {
        s.find_objects(&[
            Attribute::Label(label.clone().into_bytes()),
            Attribute::Class(ObjectClass::PRIVATE_KEY),
        ])
        .unwrap()
    };
    assert!(find().is_empty());
    run_child("create-user", &label);
    let found = find();
    assert_eq!(
        found.len(),
        1,
        "created by another process, visible to this one's next C_FindObjects"
    );
    s.sign(&Mechanism::Sha256RsaPkcs, found[0], b"shared")
        .unwrap();
    run_child("destroy-user", &label);
    assert!(
        find().is_empty(),
        "destroyed by another process, gone from this one's next C_FindObjects"
    );
    assert!(matches!(
        s.sign(&Mechanism::Sha256RsaPkcs, found[0], b"shared"),
        Err(cryptoki::error::Error::Pkcs11(
            cryptoki::error::RvError::KeyHandleInvalid,
            _
        ))
    ));
}
