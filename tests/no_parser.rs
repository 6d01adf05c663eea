//! A kernel without `pkcs8_key_parser`: importing or generating a private key
//! gives CKR_FUNCTION_FAILED and a log line with the `modprobe` that fixes
//! it, and keys work again once it is back. Unloading the parser affects
//! every process, so this binary holds exactly one test (libtest runs the
//! tests of one binary in parallel); the parser is loaded again even if the
//! test fails. Needs root: run by `lab/test` in the lab.
//!
//! No private key may exist while the parser is out: a key it parsed keeps
//! a pointer into the module (its algorithm name), and using such a key after
//! `rmmod` oopses the kernel (seen on Debian's 6.12: `strcmp` on the
//! unloaded module's address from a PKEY_QUERY, then a panic).

mod common;

use common::*;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki_sys::*;
use keyring_pkcs11::kernel::keyctl;
use std::process::Command;

/// Loads the parser again when dropped, whatever happened.
struct Reload;

impl Drop for Reload {
    fn drop(&mut self) {
        let _ = Command::new("modprobe").arg("pkcs8_key_parser").status();
    }
}

#[test]
#[ignore = "needs root and a kernel that holds PKCS#8 private keys: run lab/test"]
fn without_pkcs8_key_parser_creation_fails_with_the_modprobe_line() {
    if std::env::var_os("KP11_NO_PARSER_CHILD").is_some() {
        // The module's side, in a child whose stderr (the module's log) the
        // parent reads.
        let h = raw_rw_session("user");
        assert_eq!(
            import_pkcs8(h, "kp11-noparser-new", &key_der(2048), None),
            CKR_FUNCTION_FAILED,
            "C_CreateObject"
        );
        assert_eq!(
            generate_rsa(h, "kp11-noparser-gen"),
            CKR_FUNCTION_FAILED,
            "C_GenerateKeyPair"
        );
        let s = user_session();
        for label in ["kp11-noparser-new", "kp11-noparser-gen"] {
            let found = s
                .find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
                .unwrap();
            assert!(found.is_empty(), "{label} left behind");
        }
        println!("CHILD OK");
        return;
    }
    assert_eq!(keyctl::uid(), 0, "unloading a kernel module needs root");
    no_asymmetric_keys_left();
    let st = Command::new("rmmod")
        .arg("pkcs8_key_parser")
        .status()
        .expect("rmmod");
    let reload = Reload;
    assert!(
        st.success(),
        "rmmod pkcs8_key_parser failed while an asymmetric key exists"
    );
    // Really gone: the kernel itself cannot parse PKCS#8 now.
    assert_eq!(
        keyctl::add_key(
            "asymmetric",
            "kp11-noparser-probe",
            &key_der(2048),
            keyctl::KEY_SPEC_SESSION_KEYRING
        )
        .unwrap_err()
        .0,
        libc::EBADMSG
    );
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "without_pkcs8_key_parser_creation_fails_with_the_modprobe_line",
            "--include-ignored",
            "--nocapture",
        ])
        .env("KP11_NO_PARSER_CHILD", "1")
        .env("KEYRING_PKCS11_LOG", "warn")
        .output()
        .unwrap();
    drop(reload);
    let (out, err) = (
        String::from_utf8_lossy(&child.stdout),
        String::from_utf8_lossy(&child.stderr),
    );
    assert!(
        child.status.success() && out.contains("CHILD OK"),
        "child failed ({}):\n{out}\n{err}",
        child.status
    );
    assert!(
        err.contains("Bad message") && err.contains("modprobe pkcs8_key_parser"),
        "the log must name EBADMSG and the modprobe line:\n{err}"
    );
    // The parser is back: keys load and sign again.
    let back = KernelKey::load(2048, "noparser-back");
    let s = user_session();
    let o = back.find(&s, ObjectClass::PRIVATE_KEY);
    let sig = s
        .sign(&Mechanism::Sha256RsaPkcs, o, b"parser back")
        .unwrap();
    assert_eq!(sig.len(), 256);
}

/// Waits for the garbage collector to take the keys earlier tests unlinked;
/// fails, naming them, if private keys remain that we can see (see the module comment).
fn no_asymmetric_keys_left() {
    let start = std::time::Instant::now();
    loop {
        let keys = std::fs::read_to_string("/proc/keys").unwrap();
        let left: Vec<&str> = keys
            .lines()
            .filter(|l| l.contains(" asymmetric "))
            .collect();
        if left.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "private keys still exist; unloading pkcs8_key_parser now could crash the kernel:\n{}",
            left.join("\n")
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
