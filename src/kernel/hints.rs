//! What a kernel refusal means, in one place: the `CK_RV` a PKCS#11 caller
//! gets for it and what an administrator reading the log, or a user of the
//! `keyring-pkcs11` tool, should do about it.
//!
//! The same errno means different things from different calls (EBADMSG from
//! `add_key` of a private key is a kernel without the PKCS#8 parser; ENOKEY
//! during a signature is a key that went away), so both tables are keyed by
//! the call as well as the errno.

use super::keyctl::{Errno, uid};
use cryptoki_sys::*;

/// Which kind of kernel call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelOp {
    /// Looking up a token's keyring.
    FindKeyring,
    /// Listing the keys linked in a keyring.
    ReadKeyring,
    /// Describing, querying or operating with one key (sign, decrypt, the
    /// raw operations, reading a record of ours).
    UseKey,
    /// `add_key` of an RSA private key (PKCS#8).
    AddKey,
    /// `add_key` of one of our `user` records, or of a keyring.
    AddRecord,
    /// Unlinking a key or record from a keyring.
    Unlink,
}

/// The `CK_RV` for a refusal of `op` with `errno`.
pub fn rv(op: KernelOp, errno: Errno) -> CK_RV {
    use KernelOp::*;
    let e = errno.0;
    match op {
        AddKey | AddRecord | Unlink => match e {
            libc::EBADMSG if op == AddKey => CKR_FUNCTION_FAILED,
            libc::EDQUOT => CKR_DEVICE_MEMORY,
            libc::EACCES | libc::EPERM => CKR_TOKEN_WRITE_PROTECTED,
            libc::ENOPKG => CKR_KEY_TYPE_INCONSISTENT,
            libc::ENOMEM => CKR_HOST_MEMORY,
            _ if op == Unlink && (errno.is_key_gone() || e == libc::ENOENT) => {
                CKR_OBJECT_HANDLE_INVALID
            }
            _ => CKR_DEVICE_ERROR,
        },
        UseKey => match e {
            _ if errno.is_key_gone() => CKR_KEY_HANDLE_INVALID,
            libc::EACCES | libc::EPERM => CKR_KEY_FUNCTION_NOT_PERMITTED,
            libc::ENOMEM => CKR_HOST_MEMORY,
            libc::EDQUOT => CKR_DEVICE_MEMORY,
            libc::EOVERFLOW | libc::EMSGSIZE => CKR_DATA_LEN_RANGE,
            _ => CKR_DEVICE_ERROR,
        },
        FindKeyring => CKR_TOKEN_NOT_PRESENT,
        ReadKeyring => CKR_DEVICE_ERROR,
    }
}

/// What to do about a refusal of `op` with `errno`: the kernel module to
/// load, the quota and the sysctl that raises it, the permission missing.
pub fn hints(op: KernelOp, errno: Errno) -> Vec<String> {
    use KernelOp::*;
    let writing = matches!(op, AddKey | AddRecord | Unlink);
    let s = |v: &[&str]| v.iter().map(|h| h.to_string()).collect();
    match errno.0 {
        libc::EDQUOT => {
            let mut h = vec!["the key quota is full".to_string()];
            h.extend(quota_hints());
            h
        }
        libc::EBADMSG if op == AddKey => s(&[
            "this kernel cannot parse PKCS#8 private keys: its pkcs8_key_parser module is not loaded",
            "load it: sudo modprobe pkcs8_key_parser",
            "and at every boot: echo pkcs8_key_parser | sudo tee /etc/modules-load.d/pkcs8.conf",
        ]),
        libc::ENOPKG => s(&[
            "the kernel cannot hold this key type (RSA needs CONFIG_CRYPTO_RSA and CONFIG_PKCS8_PRIVATE_KEY_PARSER; EC private keys are not supported)",
        ]),
        libc::EACCES | libc::EPERM if writing => s(&[
            "no write permission on the token's keyring",
            "see its owner and permissions: keyctl describe KEYRING (keyring-pkcs11 tokens shows which)",
            "a user keyring (@u) is writable only through possession: the session keyring must link it (keyctl link @u @s, as a login's pam_keyinit does; su does not)",
        ]),
        libc::EACCES | libc::EPERM => s(&[
            "the kernel will not let this process use the key: it needs search permission, e.g. by possessing it through the session keyring (a login links @u into @s)",
        ]),
        _ if errno.is_key_gone() => {
            s(&["the keyring or the key is gone (revoked, expired or unlinked)"])
        }
        libc::ENOMEM => s(&["the kernel is out of memory"]),
        _ => Vec::new(),
    }
}

/// Why an `add_key` hit EDQUOT and how to get out of it: which of the
/// caller's two key quotas is full (from `/proc/key-users`) and the sysctl
/// that raises it.
pub fn quota_hints() -> Vec<String> {
    let text = std::fs::read_to_string("/proc/key-users").unwrap_or_default();
    quota_hints_for(uid(), &text)
}

/// `quota_hints` over a given `/proc/key-users` text.
pub fn quota_hints_for(uid: u32, key_users: &str) -> Vec<String> {
    // Root has quotas of its own, under other names.
    let (keys_sysctl, bytes_sysctl) = if uid == 0 {
        ("root_maxkeys", "root_maxbytes")
    } else {
        ("maxkeys", "maxbytes")
    };
    // "  uid: usage nkeys/nikeys qnkeys/maxkeys qnbytes/maxbytes"
    let fields: Option<Vec<(u64, u64)>> = key_users
        .lines()
        .find(|l| l.split(':').next().map(str::trim) == Some(&uid.to_string()))
        .and_then(|l| {
            l.split_once(':')?
                .1
                .split_whitespace()
                .skip(1)
                .map(|f| {
                    let (a, b) = f.split_once('/')?;
                    Some((a.parse().ok()?, b.parse().ok()?))
                })
                .collect()
        });
    let mut hints = Vec::new();
    let raise = |name: &str, now: u64| {
        format!(
            "raise it (as root): sysctl -w kernel.keys.{name}={}  (to keep it: a file in /etc/sysctl.d/)",
            (now * 2).max(1)
        )
    };
    match fields.as_deref() {
        Some([_, (qnkeys, maxkeys), (qnbytes, maxbytes)]) => {
            if qnkeys >= maxkeys {
                hints.push(format!(
                    "uid {uid} owns {qnkeys} keys and kernel.keys.{keys_sysctl} allows {maxkeys}: the number-of-keys quota is exhausted"
                ));
                hints.push(raise(keys_sysctl, *maxkeys));
            } else {
                hints.push(format!(
                    "uid {uid} uses {qnbytes} bytes for keys and kernel.keys.{bytes_sysctl} allows {maxbytes}: the key-bytes quota is exhausted"
                ));
                hints.push(raise(bytes_sysctl, *maxbytes));
            }
        }
        _ => hints.push(format!(
            "see /proc/key-users; raise kernel.keys.{keys_sysctl} or kernel.keys.{bytes_sysctl} with sysctl (as root)"
        )),
    }
    hints.push(
        "or free some: keyctl show @u lists your keys; keyctl unlink ID @u removes one".into(),
    );
    hints
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_hints_name_the_full_quota_and_its_sysctl() {
        let text = "    0:    20 19/19 19/1000000 2000/25000000\n 1001:     5 200/200 200/200 3000/20000\n 1002:     2 3/3 3/200 19990/20000\n";
        let keys = quota_hints_for(1001, text);
        assert!(
            keys[0].contains("owns 200 keys and kernel.keys.maxkeys allows 200"),
            "{keys:?}"
        );
        assert!(
            keys[1].contains("sysctl -w kernel.keys.maxkeys=400"),
            "{keys:?}"
        );
        let bytes = quota_hints_for(1002, text);
        assert!(
            bytes[0].contains("kernel.keys.maxbytes allows 20000"),
            "{bytes:?}"
        );
        assert!(
            bytes[1].contains("sysctl -w kernel.keys.maxbytes=40000"),
            "{bytes:?}"
        );
        let root = quota_hints_for(0, "    0:    20 19/19 1000000/1000000 2000/25000000\n");
        assert!(root[1].contains("kernel.keys.root_maxkeys="), "{root:?}");
        // Unreadable or unknown: both knobs are named.
        let none = quota_hints_for(1003, text);
        assert!(
            none[0].contains("kernel.keys.maxkeys or kernel.keys.maxbytes"),
            "{none:?}"
        );
    }

    #[test]
    fn one_errno_two_meanings() {
        let bad = Errno(libc::EBADMSG);
        assert_eq!(rv(KernelOp::AddKey, bad), CKR_FUNCTION_FAILED);
        assert_eq!(rv(KernelOp::AddRecord, bad), CKR_DEVICE_ERROR);
        let denied = Errno(libc::EACCES);
        assert_eq!(rv(KernelOp::AddKey, denied), CKR_TOKEN_WRITE_PROTECTED);
        assert_eq!(rv(KernelOp::UseKey, denied), CKR_KEY_FUNCTION_NOT_PERMITTED);
        assert_eq!(
            rv(KernelOp::Unlink, Errno(libc::ENOENT)),
            CKR_OBJECT_HANDLE_INVALID
        );
        assert_eq!(
            rv(KernelOp::UseKey, Errno(libc::EKEYREVOKED)),
            CKR_KEY_HANDLE_INVALID
        );
        assert!(hints(KernelOp::AddKey, Errno(libc::EDQUOT))[0].contains("quota"));
    }
}
