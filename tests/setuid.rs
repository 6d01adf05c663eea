//! The module inside a setuid-root program (as pam_p11 puts it inside `su`,
//! `sudo` or `login`): the caller chose the environment and reads stderr, so
//! `KEYRING_PKCS11_CONFIG`, `KEYRING_PKCS11_LOG`, `KEYRING_PKCS11_KEYRINGS`
//! and home-directory configuration must be ignored (`AT_SECURE`), and a
//! configuration file that root does not own alone is refused.
//!
//! The test binary runs as root in the lab. It copies itself to /tmp twice —
//! one copy setuid root, one plain — and runs each as an ordinary user with
//! `KEYRING_PKCS11_CONFIG=/etc/shadow KEYRING_PKCS11_LOG=debug
//! KEYRING_PKCS11_KEYRINGS=kp11envring`; the copies' `child` test loads the
//! module through `cryptoki`, lists the slots and provokes one debug-level
//! log line. Needs root: run by `lab/test` in the lab.
//!
//! Before the fix the setuid copy printed /etc/shadow, line by line, as
//! "ignoring unknown line" warnings, listed a `kp11envring` slot and logged
//! at debug level; all three assertions below failed (seen in the 6.12 lab).

mod common;

use common::module_path;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::slot::Slot;
use keyring_pkcs11::kernel::keyctl;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const USER: &str = "kp11suid";
const ETC_CONF: &str = "/etc/keyring-pkcs11.conf";

/// What the copies run: not a test of its own outside a child.
#[test]
fn child() {
    if std::env::var_os("KP11_SETUID").is_none() {
        return;
    }
    println!("AT_SECURE={}", u8::from(keyctl::secure_execution()));
    let p = Pkcs11::new(module_path()).expect("load module");
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .expect("C_Initialize");
    for s in p.get_all_slots().expect("C_GetSlotList") {
        let info = p.get_slot_info(s).expect("C_GetSlotInfo");
        println!("SLOT {}", info.slot_description());
    }
    // An error the module logs at debug level only.
    let bogus = Slot::try_from(424_242u64).unwrap();
    assert!(p.get_token_info(bogus).is_err());
    p.finalize().unwrap();
}

fn ensure_user(name: &str) {
    let known = Command::new("id").arg(name).output().expect("id");
    if !known.status.success() {
        let st = Command::new("useradd")
            .args(["-M", "-s", "/bin/sh", name])
            .status()
            .expect("useradd");
        assert!(st.success(), "useradd {name}");
    }
}

/// A copy of this test binary in `dir`, owned by root, with `mode`.
fn copy_of_self(dir: &Path, name: &str, mode: u32) -> PathBuf {
    let p = dir.join(name);
    std::fs::copy(std::env::current_exe().unwrap(), &p).unwrap();
    std::os::unix::fs::chown(&p, Some(0), Some(0)).unwrap();
    // chown clears the setuid bit: set the mode after it.
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

/// Runs a copy's `child` test as the ordinary user, in a session keyring
/// of its own, with the environment an attacker would choose.
fn run_as_user(exe: &Path, config: &str) -> (String, String) {
    let o: Output = Command::new("runuser")
        .args(["-u", USER, "--", "env"])
        .arg("KP11_SETUID=child")
        .arg(format!("KEYRING_PKCS11_MODULE={}", module_path().display()))
        .arg(format!("KEYRING_PKCS11_CONFIG={config}"))
        .arg("KEYRING_PKCS11_LOG=debug")
        .arg("KEYRING_PKCS11_KEYRINGS=kp11envring")
        .arg("XDG_CONFIG_HOME=/nonexistent")
        .args(["keyctl", "session", "-"])
        .arg(exe)
        .args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .output()
        .expect("runuser");
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(
        o.status.success() && out.contains("test result: ok. 1 passed"),
        "{} failed ({}):\n{out}\n{err}",
        exe.display(),
        o.status
    );
    (out, err)
}

fn slots(out: &str) -> Vec<&str> {
    out.lines()
        .filter_map(|l| l.strip_prefix("SLOT "))
        .map(str::trim)
        .collect()
}

/// Removes what the test put in /etc and /tmp, even on failure.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(ETC_CONF);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
#[ignore = "needs root (makes a setuid copy, adds a user, writes /etc/keyring-pkcs11.conf): run lab/test"]
fn a_setuid_program_ignores_the_callers_environment_and_refuses_loose_config_files() {
    assert_eq!(keyctl::uid(), 0, "run as root in the lab (lab/test)");
    assert!(
        !Path::new(ETC_CONF).exists(),
        "{ETC_CONF} exists already; this test would replace it"
    );
    ensure_user(USER);
    let dir = std::env::temp_dir().join(format!("kp11-setuid-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = Cleanup(dir.clone());
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let setuid = copy_of_self(&dir, "setuid", 0o4755);
    let plain = copy_of_self(&dir, "plain", 0o755);
    let shadow = std::fs::read_to_string("/etc/shadow").expect("/etc/shadow");
    // What of /etc/shadow must never show: every line, and every field
    // long enough to be recognisable (user names, hashes).
    let secrets: Vec<&str> = shadow
        .lines()
        .filter(|l| !l.is_empty())
        .chain(
            shadow
                .lines()
                .flat_map(|l| l.split(':'))
                .filter(|f| f.len() >= 4),
        )
        .collect();
    assert!(!secrets.is_empty());

    // setuid root, run by the user: nothing of the environment is taken.
    let (out, err) = run_as_user(&setuid, "/etc/shadow");
    assert!(out.contains("AT_SECURE=1"), "{out}");
    for s in &secrets {
        assert!(!err.contains(s), "/etc/shadow content on stderr:\n{err}");
    }
    assert!(!err.contains("/etc/shadow"), "{err}");
    let s = slots(&out);
    assert!(!s.iter().any(|d| d.contains("kp11envring")), "{s:?}");
    assert!(
        !err.contains("debug:"),
        "KEYRING_PKCS11_LOG=debug was obeyed:\n{err}"
    );

    // The control: the same binary without the setuid bit takes the
    // environment (its KEYRING_PKCS11_CONFIG is a file of the user's own, with
    // a line it will complain about, by number and without its content).
    let user_conf = dir.join("user.conf");
    std::fs::write(&user_conf, "keyring = kp11userring\nsecret-canary-line\n").unwrap();
    let uid: u32 = String::from_utf8(
        Command::new("id")
            .args(["-u", USER])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap();
    std::os::unix::fs::chown(&user_conf, Some(uid), None).unwrap();
    let (out, err) = run_as_user(&plain, user_conf.to_str().unwrap());
    assert!(out.contains("AT_SECURE=0"), "{out}");
    let s = slots(&out);
    assert!(s.iter().any(|d| d.contains("kp11envring")), "{s:?}");
    assert!(s.iter().any(|d| d.contains("kp11userring")), "{s:?}");
    assert!(
        err.contains("debug:"),
        "no debug log without AT_SECURE:\n{err}"
    );
    assert!(
        err.contains("user.conf:2"),
        "the bad line is not reported:\n{err}"
    );
    assert!(
        !err.contains("secret-canary"),
        "a config line's content was logged:\n{err}"
    );

    // /etc/keyring-pkcs11.conf still counts in a setuid program, if root
    // owns it and only root can write it.
    std::fs::write(ETC_CONF, "keyring = kp11etcring\n").unwrap();
    std::fs::set_permissions(ETC_CONF, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (out, _) = run_as_user(&setuid, "/etc/shadow");
    assert!(
        slots(&out).iter().any(|d| d.contains("kp11etcring")),
        "{out}"
    );
    for (mode, why) in [(0o664, "group"), (0o646, "others")] {
        std::fs::set_permissions(ETC_CONF, std::fs::Permissions::from_mode(mode)).unwrap();
        let (out, err) = run_as_user(&setuid, "/etc/shadow");
        assert!(
            !slots(&out).iter().any(|d| d.contains("kp11etcring")),
            "a config file writable by {why} was read: {out}"
        );
        assert!(err.contains(ETC_CONF) && err.contains("writable"), "{err}");
    }
    // Owned by the ordinary user: refused too (a setuid program's caller
    // must not choose its configuration).
    std::fs::set_permissions(ETC_CONF, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::os::unix::fs::chown(ETC_CONF, Some(uid), None).unwrap();
    let (out, err) = run_as_user(&setuid, "/etc/shadow");
    assert!(
        !slots(&out).iter().any(|d| d.contains("kp11etcring")),
        "{out}"
    );
    assert!(err.contains(ETC_CONF) && err.contains("owned"), "{err}");
}
