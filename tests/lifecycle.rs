//! Key lifecycle on a real kernel: keys in the process token die with the
//! process (normal exit and SIGKILL), a template whose halves disagree is
//! refused without leaving a key behind, what one process creates or
//! destroys another sees at once, a key without search permission is not
//! listed, and a keyring without write permission is a write-protected
//! token. Run by `lab/test` inside the lab.
//!
//! `harness = false`: the other processes are helpers of this binary
//! (`common::harness::Helper`), which are not tests and are not counted.

mod common;

use common::harness::{self, Helper, KERNEL, Test};
use common::*;
use cryptoki_sys::*;
use keyring_pkcs11::kernel::keyctl;
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
            Test {
                name: "keys_we_may_not_use_are_not_listed",
                ignore: KERNEL,
                timeout: minutes(10),
                run: keys_we_may_not_use_are_not_listed,
            },
            Test {
                name: "a_keyring_without_write_permission_is_write_protected",
                ignore: KERNEL,
                timeout: minutes(10),
                run: a_keyring_without_write_permission_is_write_protected,
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
            Helper {
                name: "list-user",
                run: list_user,
            },
            Helper {
                name: "write-protected",
                run: write_protected,
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
        attr(CKA_TOKEN, &[CK_TRUE]),
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
        attr(CKA_TOKEN, &[CK_TRUE]),
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

/// A key the caller may not search (no pkey operation either) is not listed
/// by a process that sees it for the first time; the same key with the
/// permission is, and so is another key next to it in the same listing.
fn keys_we_may_not_use_are_not_listed() {
    use cryptoki::object::ObjectClass;
    use linux_keyutils::{Key, KeyPermissions, KeySerialId};
    let control = KernelKey::load(3072, "perm-control");
    let key = KernelKey::load(2048, "noperm");
    let before = listed_by_a_new_process(&[]);
    for k in [&control, &key] {
        assert!(
            before.contains(&k.label),
            "with its permissions {} must be listed: {before:?}",
            k.label
        );
    }
    // This process lists it too before the change.
    let s = user_session();
    let o = key.find(&s, ObjectClass::PRIVATE_KEY);
    // View only, for everyone: no search bit, so no pkey operation.
    Key::from_id(KeySerialId::new(key.serial))
        .set_perms(KeyPermissions::from_u32(0x0101_0000))
        .unwrap();
    let after = listed_by_a_new_process(&[]);
    assert!(
        after.contains(&control.label),
        "the other key must still be listed, or the listing proves nothing: {after:?}"
    );
    assert!(
        !after.contains(&key.label),
        "a key without the search permission must not be listed: {after:?}"
    );
    // A process that had listed it keeps its objects (listing is not a
    // kernel call per key) and learns at C_SignInit that it may not use it.
    let again = s
        .find_objects(&[cryptoki::object::Attribute::Label(
            key.label.clone().into_bytes(),
        )])
        .unwrap();
    assert_eq!(again.len(), 2, "listed here before, still listed here");
    match s.sign(&cryptoki::mechanism::Mechanism::Sha256RsaPkcs, o, b"x") {
        Err(cryptoki::error::Error::Pkcs11(
            cryptoki::error::RvError::KeyFunctionNotPermitted,
            _,
        )) => {}
        other => panic!("signing with a key that lost its search permission: {other:?}"),
    }
}

/// Two named keyrings in `@u`, tokens through `KEYRING_PKCS11_KEYRINGS`:
/// one writable, one whose permissions lack write (for possessor and user
/// alike; root is no exception for keys). The read-only one still lists and
/// signs with the key it holds, and refuses what would change it.
fn a_keyring_without_write_permission_is_write_protected() {
    use linux_keyutils::{Key, KeyPermissions, KeySerialId};
    let pid = std::process::id();
    let (rw_name, ro_name) = (format!("kp11-rw-{pid}"), format!("kp11-ro-{pid}"));
    let user = keyctl::KEY_SPEC_USER_KEYRING;
    let rw = keyctl::add_key("keyring", &rw_name, &[], user).unwrap();
    let ro = keyctl::add_key("keyring", &ro_name, &[], user).unwrap();
    let inside = keyctl::add_key("asymmetric", "kp11-ro-inside", &key_der(2048), ro).unwrap();
    // Possessor: all but write; user: view, read, search.
    Key::from_id(KeySerialId::new(ro))
        .set_perms(KeyPermissions::from_u32(0x3b0b_0000))
        .unwrap();
    let o = harness::helper("write-protected")
        .env("KEYRING_PKCS11_KEYRINGS", format!("{rw_name},{ro_name}"))
        .env("KP11_RW", &rw_name)
        .env("KP11_RO", &ro_name)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let left = keyctl::keyring_links(ro);
    for k in [rw, ro] {
        let _ = keyctl::unlink(k, user);
    }
    assert!(
        o.status.success() && harness::helper_done("write-protected", &o.stdout),
        "helper write-protected failed ({})",
        o.status
    );
    assert_eq!(
        left.unwrap(),
        vec![inside],
        "the read-only keyring holds exactly what it held"
    );
}

/// Helper of `a_keyring_without_write_permission_is_write_protected`.
fn write_protected() {
    use cryptoki::mechanism::Mechanism;
    use cryptoki::object::{Attribute, ObjectClass};
    let (rw, ro) = (
        std::env::var("KP11_RW").unwrap(),
        std::env::var("KP11_RO").unwrap(),
    );
    let (hw, hr) = (raw_rw_session(&rw), raw_rw_session(&ro));
    // The writable token takes an import and a generated key.
    assert_eq!(
        import_pkcs8(hw, "kp11-rw-imported", &key_der(2048), None),
        CKR_OK
    );
    assert_eq!(generate_rsa(hw, "kp11-rw-generated"), CKR_OK);
    // The read-only one refuses both, and the destruction of its key.
    // Another key than the one inside: the same key would be refused as
    // already in the token before the kernel is asked to write.
    assert_eq!(
        import_pkcs8(hr, "kp11-ro-imported", &key_der(3072), None),
        CKR_TOKEN_WRITE_PROTECTED,
        "C_CreateObject in a keyring without write permission"
    );
    assert_eq!(
        generate_rsa(hr, "kp11-ro-generated"),
        CKR_TOKEN_WRITE_PROTECTED,
        "C_GenerateKeyPair in a keyring without write permission"
    );
    let s = ctx().open_rw_session(slot_labelled(&ro)).unwrap();
    let found = s
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(b"kp11-ro-inside".to_vec()),
        ])
        .unwrap();
    assert_eq!(found.len(), 1, "the read-only token lists its key");
    let sig = s
        .sign(&Mechanism::Sha256RsaPkcs, found[0], b"read-only")
        .unwrap();
    assert!(common::verifies(
        &public_of(&key_der(2048)),
        b"read-only",
        &sig
    ));
    match s.destroy_object(found[0]) {
        Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::TokenWriteProtected, _)) => {}
        other => panic!("C_DestroyObject in a keyring without write permission: {other:?}"),
    }
}
