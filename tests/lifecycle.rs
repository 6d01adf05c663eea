//! Key lifecycle on a real kernel: keys in the process token die with the
//! process (normal exit and SIGKILL), and a template whose halves disagree is
//! refused without leaving a key behind. Run by `lab/test` inside the lab.

mod common;

use common::*;
use cryptoki_sys::*;
use keyring_pkcs11::kernel::keyctl;
use keyring_pkcs11_testkit::{Rv, Template};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Child side of `process_token_keys_die_with_the_process`: imports a key
/// into the process token, reports its serial, then exits or waits to be killed.
#[test]
#[ignore = "helper for process_token_keys_die_with_the_process"]
fn child_with_a_process_token_key() {
    let Ok(mode) = std::env::var("KP11_CHILD") else {
        return;
    };
    if let Some(label) = mode.strip_prefix("create-user:") {
        assert_eq!(
            import_pkcs8(raw_rw_session("user"), label, &key_der(2048), None),
            CKR_OK
        );
        return;
    }
    if let Some(label) = mode.strip_prefix("destroy-user:") {
        use cryptoki::object::{Attribute, ObjectClass};
        let s = user_session();
        let found = s
            .find_objects(&[
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Class(ObjectClass::PRIVATE_KEY),
            ])
            .unwrap();
        assert_eq!(found.len(), 1);
        s.destroy_object(found[0]).unwrap();
        return;
    }
    let label = format!("kp11-proc-{}", std::process::id());
    let h = raw_rw_session("process");
    assert_eq!(import_pkcs8(h, &label, &key_der(2048), None), CKR_OK);
    let serial =
        keyctl::search(keyctl::KEY_SPEC_PROCESS_KEYRING, "asymmetric", &label).expect("key in @p");
    println!("SERIAL {serial}");
    std::io::stdout().flush().unwrap();
    if mode == "hold" {
        std::thread::sleep(Duration::from_secs(600));
    }
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

#[test]
#[ignore = "needs a kernel that holds PKCS#8 private keys: run lab/test"]
fn process_token_keys_die_with_the_process() {
    for mode in ["exit", "hold"] {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "child_with_a_process_token_key",
                "--exact",
                "--include-ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("KP11_CHILD", mode)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut serial = None;
        let mut seen = Vec::new();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        for line in lines.by_ref() {
            let line = line.unwrap();
            // libtest prints the test's name without a newline before it runs.
            if let Some(i) = line.find("SERIAL ") {
                serial = Some(
                    line[i + 7..]
                        .split_whitespace()
                        .next()
                        .unwrap()
                        .parse::<keyctl::Serial>()
                        .unwrap(),
                );
                break;
            }
            seen.push(line);
        }
        if mode == "exit" {
            lines.for_each(drop); // let it finish writing and exit normally
        }
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
        assert!(
            gone_within(serial, Duration::from_secs(10)),
            "{mode}: key {serial} outlived its process"
        );
    }
}

#[test]
#[ignore = "needs a kernel that holds PKCS#8 private keys: run lab/test"]
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
    let mut t = Template::new()
        .ulong(CKA_CLASS, CKO_PRIVATE_KEY)
        .ulong(CKA_KEY_TYPE, CKK_RSA)
        .bytes(CKA_TOKEN, &[CK_TRUE])
        .bytes(CKA_LABEL, b"kp11-mismatch")
        .bytes(CKA_MODULUS, &n)
        .bytes(CKA_PUBLIC_EXPONENT, &e)
        .bytes(CKA_PRIVATE_EXPONENT, &d)
        .bytes(CKA_PRIME_1, &p)
        .bytes(CKA_PRIME_2, &q)
        .bytes(CKA_EXPONENT_1, &dp)
        .bytes(CKA_EXPONENT_2, &dq)
        .bytes(CKA_COEFFICIENT, &qi);
    assert_eq!(
        client().create_object(h, &mut t).rv(),
        CKR_TEMPLATE_INCONSISTENT
    );
    // Other tests add keys to @u concurrently: look for this one by name.
    let left = keyctl::search(keyctl::KEY_SPEC_USER_KEYRING, "asymmetric", "kp11-mismatch");
    assert_eq!(
        left.err().map(|e| e.0),
        Some(libc::ENOKEY),
        "a refused key must not stay in the keyring"
    );
    // A read-only session may not create at all.
    let ro = client().open_ro(slot_labelled("user").id()).unwrap();
    assert_eq!(
        import_pkcs8(ro, "kp11-ro", &key_der(2048), None),
        CKR_SESSION_READ_ONLY
    );
    // Quota, parser and permission errors have their own codes (see module.rs
    // write_error); a correct import into the user token works.
    assert_eq!(
        import_pkcs8(h, "kp11-import-ok", &key_der(2048), None),
        CKR_OK
    );
    let s = keyctl::search(
        keyctl::KEY_SPEC_USER_KEYRING,
        "asymmetric",
        "kp11-import-ok",
    )
    .unwrap();
    keyctl::unlink(s, keyctl::KEY_SPEC_USER_KEYRING).unwrap();
}

fn run_child(mode: &str) {
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "child_with_a_process_token_key",
            "--exact",
            "--include-ignored",
            "--test-threads=1",
        ])
        .env("KP11_CHILD", mode)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "child {mode} failed");
}

/// SoftHSMv2's users find that objects created by one process stay invisible
/// to another until it re-initialises; here the kernel holds the state.
#[test]
#[ignore = "needs a kernel that holds PKCS#8 private keys: run lab/test"]
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
    run_child(&format!("create-user:{label}"));
    let found = find();
    assert_eq!(
        found.len(),
        1,
        "created by another process, visible to this one's next C_FindObjects"
    );
    s.sign(&Mechanism::Sha256RsaPkcs, found[0], b"shared")
        .unwrap();
    run_child(&format!("destroy-user:{label}"));
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
