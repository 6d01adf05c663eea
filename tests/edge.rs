//! Kernel edge cases that need other users: a non-root user's full key quota
//! (EDQUOT) and keys in another user's keyrings. The test binary runs as root
//! in the lab; each case runs the user's side as a helper of this same binary
//! (`common::harness::Helper`, not a test) under `runuser`, in a fresh
//! session keyring with `@u` linked, as `pam_keyinit` sets up a login. Needs
//! root (it adds users and changes the `kernel.keys` sysctls, restoring
//! them): run by `lab/test` in the lab.
//!
//! `harness = false`: the tests run one at a time, each in a process of its
//! own (they change global sysctls and users' keyrings).

mod common;

use common::harness::{self, Helper, Test};
use common::*;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki_sys::*;
use keyring_pkcs11::kernel::keyctl;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const ROOT_AND_KERNEL: Option<&str> =
    Some("needs root and a kernel that holds PKCS#8 private keys: run lab/test");

fn main() {
    harness::main_with_helpers(
        &[
            Test {
                name: "a_full_key_quota_is_device_memory_names_the_sysctl_and_leaves_nothing",
                ignore: ROOT_AND_KERNEL,
                timeout: Duration::from_secs(600),
                run: a_full_key_quota_is_device_memory_names_the_sysctl_and_leaves_nothing,
            },
            Test {
                name: "another_users_keys_and_keyrings_stay_out_of_our_tokens",
                ignore: ROOT_AND_KERNEL,
                timeout: Duration::from_secs(600),
                run: another_users_keys_and_keyrings_stay_out_of_our_tokens,
            },
        ],
        &[
            Helper {
                name: "quota-keys",
                run: || quota_child("quota-keys"),
            },
            Helper {
                name: "quota-bytes",
                run: || quota_child("quota-bytes"),
            },
            Helper {
                name: "owner",
                run: owner_child,
            },
            Helper {
                name: "other",
                run: other_child,
            },
        ],
    );
}

const MAXKEYS: &str = "/proc/sys/kernel/keys/maxkeys";
const MAXBYTES: &str = "/proc/sys/kernel/keys/maxbytes";

fn need_root() {
    assert_eq!(
        keyctl::uid(),
        0,
        "these tests add users and change kernel.keys sysctls: run them as root in the lab (lab/test)"
    );
}

fn ensure_user(name: &str) -> u32 {
    if let Ok(o) = Command::new("id").args(["-u", name]).output() {
        if o.status.success() {
            return String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
        }
    }
    let st = Command::new("useradd")
        .args(["-M", "-s", "/bin/sh", name])
        .status()
        .expect("useradd");
    assert!(st.success(), "useradd {name}");
    ensure_user(name)
}

/// Copies of the test keys the other users can read (the originals are 0600).
struct SharedKeys(PathBuf);

impl SharedKeys {
    fn new(tag: &str) -> SharedKeys {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("kp11-edge-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        for bits in [2048, 3072] {
            let p = dir.join(format!("rsa{bits}.pk8.der"));
            std::fs::write(&p, key_der(bits)).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        SharedKeys(dir)
    }
}

impl Drop for SharedKeys {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Sets a sysctl for the duration of a test and restores it, even on panic.
struct Sysctl(&'static str, String);

impl Sysctl {
    fn set(path: &'static str, v: u64) -> Sysctl {
        let old = std::fs::read_to_string(path).unwrap().trim().to_string();
        std::fs::write(path, v.to_string()).unwrap_or_else(|e| panic!("{path}: {e}"));
        Sysctl(path, old)
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        let _ = std::fs::write(self.0, &self.1);
    }
}

/// This binary's helper `mode` as `user` (None: as root), in a new session
/// keyring, with the module log on stderr.
fn child_command(user: Option<&str>, mode: &str, keys: &Path, env: &[(&str, String)]) -> Command {
    let exe = std::env::current_exe().unwrap();
    let mut c = match user {
        Some(u) => {
            let mut c = Command::new("runuser");
            c.args(["-u", u, "--", "env"]);
            c
        }
        None => Command::new("env"),
    };
    c.arg(harness::helper_env(mode))
        .arg(format!("KEYRING_PKCS11_MODULE={}", module_path().display()))
        .arg(format!("KEYRING_PKCS11_TEST_KEYS={}", keys.display()))
        .arg("KEYRING_PKCS11_LOG=warn");
    for (k, v) in env {
        c.arg(format!("{k}={v}"));
    }
    c.args(["keyctl", "session", "-"]).arg(exe);
    c
}

/// The helper `mode` finished; its stderr (the module's log).
fn check(mode: &str, what: &str, o: &Output) -> String {
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(
        o.status.success() && harness::helper_done(mode, &o.stdout),
        "{what} failed ({}):\n{out}\n{err}",
        o.status
    );
    err
}

fn a_full_key_quota_is_device_memory_names_the_sysctl_and_leaves_nothing() {
    need_root();
    let user = "kp11quota";
    ensure_user(user);
    let keys = SharedKeys::new("quota");
    for (mode, maxkeys, maxbytes, sysctl, limit) in [
        ("quota-keys", 40, 1_000_000, "maxkeys", 40),
        ("quota-bytes", 1000, 6000, "maxbytes", 6000),
    ] {
        let _k = Sysctl::set(MAXKEYS, maxkeys);
        let _b = Sysctl::set(MAXBYTES, maxbytes);
        let o = child_command(Some(user), mode, &keys.0, &[])
            .output()
            .unwrap();
        let log = check(mode, mode, &o);
        for want in [
            "Disk quota exceeded",
            &format!("kernel.keys.{sysctl} allows {limit}"),
            &format!("sysctl -w kernel.keys.{sysctl}="),
        ] {
            assert!(log.contains(want), "{mode}: the log lacks {want:?}:\n{log}");
        }
    }
}

fn another_users_keys_and_keyrings_stay_out_of_our_tokens() {
    need_root();
    let owner_uid = ensure_user("kp11owner");
    ensure_user("kp11other");
    let keys = SharedKeys::new("other");
    // The owner puts a key in its @u and in a named keyring there, checks it
    // sees them itself, and holds them until we are done.
    let mut owner = child_command(
        Some("kp11owner"),
        "owner",
        &keys.0,
        &[("KEYRING_PKCS11_KEYRINGS", "kp11-edge-shared".into())],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(owner.stdout.take().unwrap()).lines();
    let serial = loop {
        match lines.next() {
            Some(Ok(l)) => {
                if let Some(s) = l.strip_prefix("THEIRS ") {
                    break s.to_string();
                }
            }
            _ => {
                let o = owner.wait_with_output().unwrap();
                panic!("owner gave no key: {}", String::from_utf8_lossy(&o.stderr));
            }
        }
    };
    // Another user, and root: neither sees nor reaches the owner's keys,
    // even when naming the owner's keyrings in the configuration.
    let named = format!("kp11-edge-shared,_uid.{owner_uid},_uid_ses.{owner_uid}");
    for user in [Some("kp11other"), None] {
        let o = child_command(
            user,
            "other",
            &keys.0,
            &[
                ("KEYRING_PKCS11_KEYRINGS", named.clone()),
                ("KP11_EDGE_THEIRS", serial.clone()),
            ],
        )
        .output()
        .unwrap();
        check("other", &format!("other as {user:?}"), &o);
    }
    drop(owner.stdin.take());
    let rest: Vec<u8> = lines
        .map_while(Result::ok)
        .flat_map(|l| (l + "\n").into_bytes())
        .collect();
    let o = owner.wait_with_output().unwrap();
    assert!(
        o.status.success() && harness::helper_done("owner", &rest),
        "owner ({}): {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
}

// ---- the users' side ----

/// `keyctl new_session; keyctl link @u @s`, the login `pam_keyinit` gives.
fn login_keyrings() {
    keyctl::link(
        keyctl::KEY_SPEC_USER_KEYRING,
        keyctl::KEY_SPEC_SESSION_KEYRING,
    )
    .expect("link @u into the session keyring");
}

/// This user's (keys, maxkeys, bytes, maxbytes) from /proc/key-users.
fn quota() -> (u64, u64, u64, u64) {
    let uid = keyctl::uid().to_string();
    let text = std::fs::read_to_string("/proc/key-users").unwrap();
    let line = text
        .lines()
        .find(|l| l.split(':').next().map(str::trim) == Some(uid.as_str()))
        .expect("our line in /proc/key-users");
    let f: Vec<u64> = line
        .split_once(':')
        .unwrap()
        .1
        .split_whitespace()
        .skip(2)
        .flat_map(|f| {
            f.split('/')
                .map(|n| n.parse::<u64>().unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    (f[0], f[1], f[2], f[3])
}

/// Fills the quota with small `user` keys in the session keyring (which
/// dies with this process), largest first, until the kernel says EDQUOT.
fn fill_quota(sizes: &[usize]) -> Vec<keyctl::Serial> {
    let mut fillers = Vec::new();
    for &size in sizes {
        loop {
            let desc = format!("kp11-fill-{}", fillers.len());
            match keyctl::add_key(
                "user",
                &desc,
                &vec![0x5a; size],
                keyctl::KEY_SPEC_SESSION_KEYRING,
            ) {
                Ok(s) => fillers.push(s),
                Err(e) if e.0 == libc::EDQUOT => break,
                Err(e) => panic!("filling the quota: {e}"),
            }
            assert!(fillers.len() < 100_000, "the quota never filled");
        }
    }
    fillers
}

fn user_keyring_contents() -> Vec<String> {
    keyctl::keyring_links(keyctl::KEY_SPEC_USER_KEYRING)
        .unwrap()
        .into_iter()
        .filter_map(|k| keyctl::describe(k).ok())
        .map(|d| String::from_utf8_lossy(&d).into_owned())
        .collect()
}

fn survivor_signs(s: &cryptoki::session::Session, label: &str) {
    use rsa::Pkcs1v15Sign;
    use sha2::Digest;
    let o = s
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .unwrap();
    assert_eq!(o.len(), 1, "{label} listed once");
    let sig = s.sign(&Mechanism::Sha256RsaPkcs, o[0], b"alive").unwrap();
    public_of(&key_der(2048))
        .verify(
            Pkcs1v15Sign::new::<sha2::Sha256>(),
            &sha2::Sha256::digest(b"alive"),
            &sig,
        )
        .expect("the survivor's signature verifies");
}

fn quota_child(mode: &str) {
    login_keyrings();
    for k in keyctl::keyring_links(keyctl::KEY_SPEC_USER_KEYRING).unwrap() {
        keyctl::unlink(k, keyctl::KEY_SPEC_USER_KEYRING).unwrap();
    }
    let h = raw_rw_session("user");
    assert_eq!(
        import_pkcs8(h, "kp11-edge-survivor", &key_der(2048), None),
        CKR_OK
    );
    let fillers = if mode == "quota-keys" {
        fill_quota(&[1])
    } else {
        fill_quota(&[4096, 512, 64, 8, 1])
    };
    let (nkeys, maxkeys, nbytes, maxbytes) = quota();
    eprintln!("quota full: {nkeys}/{maxkeys} keys, {nbytes}/{maxbytes} bytes");
    assert_eq!(
        import_pkcs8(h, "kp11-edge-over", &key_der(3072), None),
        CKR_DEVICE_MEMORY,
        "C_CreateObject with the quota full"
    );
    assert_eq!(
        generate_rsa(h, "kp11-edge-gen"),
        CKR_DEVICE_MEMORY,
        "C_GenerateKeyPair with the quota full"
    );
    if mode == "quota-keys" {
        // Room for one key: the key goes in, its metadata record (CKA_ID)
        // does not; the module must take the key out again.
        keyctl::unlink(*fillers.last().unwrap(), keyctl::KEY_SPEC_SESSION_KEYRING).unwrap();
        let start = Instant::now();
        while quota().0 >= maxkeys {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the freed key was never collected"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            import_pkcs8(h, "kp11-edge-half", &key_der(3072), Some(b"half")),
            CKR_DEVICE_MEMORY,
            "C_CreateObject with room for the key but not its record"
        );
    }
    let s = user_session();
    for label in ["kp11-edge-over", "kp11-edge-gen", "kp11-edge-half"] {
        let listed = s
            .find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
            .unwrap();
        assert!(listed.is_empty(), "{label}: something was left behind");
    }
    let contents = user_keyring_contents();
    assert!(
        contents.len() == 1 && contents[0].ends_with(";kp11-edge-survivor"),
        "only the survivor may be in @u: {contents:?}"
    );
    survivor_signs(&s, "kp11-edge-survivor");
    for f in fillers {
        let _ = keyctl::unlink(f, keyctl::KEY_SPEC_SESSION_KEYRING);
    }
    let o = s
        .find_objects(&[Attribute::Label(b"kp11-edge-survivor".to_vec())])
        .unwrap();
    s.destroy_object(
        o.into_iter()
            .find(|&o| {
                s.get_attributes(o, &[cryptoki::object::AttributeType::Class])
                    .unwrap()
                    == vec![Attribute::Class(ObjectClass::PRIVATE_KEY)]
            })
            .unwrap(),
    )
    .unwrap();
}

fn owner_child() {
    login_keyrings();
    let ring = keyctl::add_key(
        "keyring",
        "kp11-edge-shared",
        &[],
        keyctl::KEY_SPEC_USER_KEYRING,
    )
    .unwrap();
    let mine = keyctl::add_key(
        "asymmetric",
        "kp11-edge-theirs",
        &key_der(2048),
        keyctl::KEY_SPEC_USER_KEYRING,
    )
    .unwrap();
    let named =
        keyctl::add_key("asymmetric", "kp11-edge-theirs-named", &key_der(2048), ring).unwrap();
    // The owner itself sees both, so what the others miss is the kernel's
    // doing, not a broken setup.
    for (token, label) in [
        ("user", "kp11-edge-theirs"),
        ("kp11-edge-shared", "kp11-edge-theirs-named"),
    ] {
        let s = ctx().open_ro_session(slot_labelled(token)).unwrap();
        survivor_signs(&s, label);
    }
    println!("THEIRS {mine}");
    std::io::stdout().flush().unwrap();
    // Hold the keys until the parent closes our stdin.
    let mut sink = String::new();
    while std::io::stdin().read_line(&mut sink).unwrap_or(0) > 0 {}
    keyctl::unlink(named, ring).unwrap();
    keyctl::unlink(mine, keyctl::KEY_SPEC_USER_KEYRING).unwrap();
    keyctl::unlink(ring, keyctl::KEY_SPEC_USER_KEYRING).unwrap();
}

fn other_child() {
    use cryptoki::error::{Error, RvError};
    login_keyrings();
    let theirs: keyctl::Serial = std::env::var("KP11_EDGE_THEIRS").unwrap().parse().unwrap();
    // The kernel's own verdict: not ours to see.
    assert_eq!(keyctl::describe(theirs).unwrap_err().0, libc::EACCES);
    let c = ctx();
    let all = c.get_all_slots().unwrap();
    let present = c.get_slots_with_token().unwrap();
    // The three named keyrings (the owner's named keyring, its user and
    // user-session keyrings by their kernel names) are not reachable: slots
    // without a token, which answer CKR_TOKEN_NOT_PRESENT, never a crash.
    let absent: Vec<_> = all.iter().filter(|s| !present.contains(s)).collect();
    assert_eq!(absent.len(), 3, "{all:?} vs {present:?}");
    for slot in absent {
        assert!(!c.get_slot_info(*slot).unwrap().token_present());
        match c.get_token_info(*slot) {
            Err(Error::Pkcs11(RvError::TokenNotPresent, _)) => {}
            other => panic!("token info of an absent token: {other:?}"),
        }
        match c.open_ro_session(*slot) {
            Err(Error::Pkcs11(RvError::TokenNotPresent, _)) => {}
            other => panic!("session on an absent token: {other:?}"),
        }
    }
    // No token of ours lists the owner's keys.
    for slot in &present {
        let s = c.open_ro_session(*slot).unwrap();
        for label in ["kp11-edge-theirs", "kp11-edge-theirs-named"] {
            let found = s
                .find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
                .unwrap();
            assert!(
                found.is_empty(),
                "{label} seen in {:?}",
                c.get_token_info(*slot).unwrap().label()
            );
        }
    }
    // And our own keys work as ever.
    let h = raw_rw_session("user");
    let label = format!("kp11-edge-mine-{}", keyctl::uid());
    assert_eq!(import_pkcs8(h, &label, &key_der(2048), None), CKR_OK);
    let s = user_session();
    survivor_signs(&s, &label);
    for o in s
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(label.into_bytes()),
        ])
        .unwrap()
    {
        s.destroy_object(o).unwrap();
    }
}
