//! Raw `keyctl(2)` calls that `linux-keyutils` does not offer: the asymmetric-key
//! operations (`KEYCTL_PKEY_*`), and keyring reads/describes that must cope with
//! any size (the crate's versions use fixed buffers).
//!
//! This module and `src/ffi/` are the only places with `unsafe`; any new
//! kernel-facing call belongs here. Every function
//! here hands the kernel buffers it owns for the duration of the call and never
//! keeps a pointer afterwards.

use std::ffi::CString;

/// A kernel key serial number (`key_serial_t`).
pub type Serial = i32;

/// Special keyring ids (`KEY_SPEC_*`).
pub const KEY_SPEC_THREAD_KEYRING: Serial = -1;
pub const KEY_SPEC_PROCESS_KEYRING: Serial = -2;
pub const KEY_SPEC_SESSION_KEYRING: Serial = -3;
pub const KEY_SPEC_USER_KEYRING: Serial = -4;

const KEYCTL_GET_KEYRING_ID: libc::c_long = 0;
const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
const KEYCTL_SETPERM: libc::c_long = 5;
const KEYCTL_DESCRIBE: libc::c_long = 6;
const KEYCTL_CLEAR: libc::c_long = 7;
const KEYCTL_LINK: libc::c_long = 8;
const KEYCTL_UNLINK: libc::c_long = 9;
const KEYCTL_SEARCH: libc::c_long = 10;
const KEYCTL_GET_PERSISTENT: libc::c_long = 22;
const KEYCTL_READ: libc::c_long = 11;
const KEYCTL_PKEY_QUERY: libc::c_long = 24;
const KEYCTL_PKEY_ENCRYPT: libc::c_long = 25;
const KEYCTL_PKEY_DECRYPT: libc::c_long = 26;
const KEYCTL_PKEY_SIGN: libc::c_long = 27;
const KEYCTL_PKEY_VERIFY: libc::c_long = 28;

pub const KEYCTL_SUPPORTS_ENCRYPT: u32 = 0x01;
pub const KEYCTL_SUPPORTS_DECRYPT: u32 = 0x02;
pub const KEYCTL_SUPPORTS_SIGN: u32 = 0x04;
pub const KEYCTL_SUPPORTS_VERIFY: u32 = 0x08;

/// An errno from the kernel. Kept raw so each caller can decide what it means
/// in its own context (ENOKEY during a sign is a vanished key; during a
/// keyring lookup it is an absent token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    fn last() -> Self {
        Errno(
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO),
        )
    }

    /// The key is gone or unusable for good: revoked, expired, invalidated or
    /// garbage-collected after its last link went away.
    pub fn is_key_gone(self) -> bool {
        matches!(
            self.0,
            libc::ENOKEY | libc::EKEYREVOKED | libc::EKEYEXPIRED | libc::EKEYREJECTED
        )
    }

    /// The errno's symbolic name, for messages that a person will search for.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            libc::EDQUOT => "EDQUOT",
            libc::EBADMSG => "EBADMSG",
            libc::ENOPKG => "ENOPKG",
            libc::EACCES => "EACCES",
            libc::EPERM => "EPERM",
            libc::ENOKEY => "ENOKEY",
            libc::EKEYREVOKED => "EKEYREVOKED",
            libc::EKEYEXPIRED => "EKEYEXPIRED",
            libc::EKEYREJECTED => "EKEYREJECTED",
            libc::ENOMEM => "ENOMEM",
            libc::EINVAL => "EINVAL",
            libc::EOPNOTSUPP => "EOPNOTSUPP",
            libc::ENOENT => "ENOENT",
            libc::EEXIST => "EEXIST",
            libc::ENOTDIR => "ENOTDIR",
            libc::EFAULT => "EFAULT",
            libc::ENFILE => "ENFILE",
            libc::ENXIO => "ENXIO",
            libc::ENOSYS => "ENOSYS",
            libc::EOVERFLOW => "EOVERFLOW",
            libc::EMSGSIZE => "EMSGSIZE",
            libc::EILSEQ => "EILSEQ",
            _ => return None,
        })
    }
}

/// "Disk quota exceeded (EDQUOT)", or "… (errno N)" for one without a name here.
impl std::fmt::Display for Errno {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = std::io::Error::from_raw_os_error(self.0).to_string();
        let text = text
            .rsplit_once(" (os error")
            .map_or(text.as_str(), |(t, _)| t);
        match self.name() {
            Some(name) => write!(f, "{text} ({name})"),
            None => write!(f, "{text} (errno {})", self.0),
        }
    }
}

/// `struct keyctl_pkey_query` from `<linux/keyctl.h>`.
#[repr(C)]
#[derive(Default)]
struct RawPkeyQuery {
    supported_ops: u32,
    key_size: u32,
    max_data_size: u16,
    max_sig_size: u16,
    max_enc_size: u16,
    max_dec_size: u16,
    spare: [u32; 10],
}

/// `struct keyctl_pkey_params` from `<linux/keyctl.h>` (40 bytes).
#[repr(C)]
struct RawPkeyParams {
    key_id: i32,
    in_len: u32,
    out_or_in2_len: u32,
    spare: [u32; 7],
}

const _: () = assert!(std::mem::size_of::<RawPkeyParams>() == 40);
const _: () = assert!(std::mem::size_of::<RawPkeyQuery>() == 56);

/// What `KEYCTL_PKEY_QUERY` tells about a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PkeyQuery {
    pub supported_ops: u32,
    pub key_size: u32,
    pub max_data_size: u16,
    pub max_sig_size: u16,
    pub max_enc_size: u16,
    pub max_dec_size: u16,
}

fn keyctl(
    op: libc::c_long,
    a2: libc::c_ulong,
    a3: libc::c_ulong,
    a4: libc::c_ulong,
    a5: libc::c_ulong,
) -> Result<libc::c_long, Errno> {
    // SAFETY: keyctl takes up to four integer-or-pointer arguments; every
    // pointer passed by the callers below points into a live buffer whose
    // length is passed alongside it.
    let r = unsafe { libc::syscall(libc::SYS_keyctl, op, a2, a3, a4, a5) };
    if r < 0 { Err(Errno::last()) } else { Ok(r) }
}

fn cstring(s: &str) -> Result<CString, Errno> {
    CString::new(s).map_err(|_| Errno(libc::EINVAL))
}

/// The caller's real uid (token serial numbers are per user).
pub fn uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// Whether this process runs with privileges its caller lacks: a setuid or
/// setgid program (e.g. `su`, `sudo`, `login` loading the module through
/// pam_p11), or one given file capabilities. The kernel says so with
/// `AT_SECURE` in the auxiliary vector, which is what glibc's
/// `secure_getenv` looks at: the caller chose the environment and can read
/// stderr, so neither may steer what the process reads or prints.
pub fn secure_execution() -> bool {
    // SAFETY: getauxval has no preconditions; 0 also means "not present".
    unsafe { libc::getauxval(libc::AT_SECURE) != 0 }
}

/// Resolves a special keyring id (`KEY_SPEC_*`) to its serial, optionally
/// creating it (only the thread and process keyrings are ever created by us).
pub fn keyring_id(special: Serial, create: bool) -> Result<Serial, Errno> {
    keyctl(
        KEYCTL_GET_KEYRING_ID,
        special as libc::c_ulong,
        create as libc::c_ulong,
        0,
        0,
    )
    .map(|r| r as Serial)
}

/// `KEYCTL_GET_PERSISTENT` for the calling user, linking the persistent
/// keyring into `link_into` (the kernel requires a destination). Returns
/// EOPNOTSUPP on kernels built without `CONFIG_PERSISTENT_KEYRINGS`.
pub fn persistent_keyring(link_into: Serial) -> Result<Serial, Errno> {
    keyctl(
        KEYCTL_GET_PERSISTENT,
        u32::MAX as libc::c_ulong,
        link_into as libc::c_ulong,
        0,
        0,
    )
    .map(|r| r as Serial)
}

/// Reads a variable-length answer: asks for the size, then reads until the
/// buffer was large enough (the keyring may grow between the two calls).
fn read_var(op: libc::c_long, id: Serial) -> Result<Vec<u8>, Errno> {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let want = keyctl(
            op,
            id as libc::c_ulong,
            buf.as_mut_ptr() as libc::c_ulong,
            buf.len() as libc::c_ulong,
            0,
        )? as usize;
        if want <= buf.len() {
            buf.truncate(want);
            return Ok(buf);
        }
        // Keyring reads want a multiple of 4 bytes (one serial each); other
        // payloads take any size.
        buf = vec![0u8; (want + want / 4 + 16).next_multiple_of(4)];
    }
}

/// The serials linked in a keyring (`KEYCTL_READ` on a keyring).
pub fn keyring_links(keyring: Serial) -> Result<Vec<Serial>, Errno> {
    let raw = read_var(KEYCTL_READ, keyring)?;
    Ok(raw
        .chunks_exact(4)
        .map(|c| Serial::from_ne_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// How many links a keyring holds: `KEYCTL_READ` with no buffer answers
/// the size it would need without walking the keyring (one call, whatever
/// its size; reading the links themselves walks all of them).
pub fn keyring_link_count(keyring: Serial) -> Result<usize, Errno> {
    keyctl(KEYCTL_READ, keyring as libc::c_ulong, 0, 0, 0).map(|n| n as usize / 4)
}

/// `KEYCTL_DESCRIBE`: `"type;uid;gid;perm;description"`.
/// A description is any bytes the key's creator chose; it comes back as
/// bytes.
pub fn describe(key: Serial) -> Result<Vec<u8>, Errno> {
    let mut raw = read_var(KEYCTL_DESCRIBE, key)?;
    if raw.last() == Some(&0) {
        raw.pop();
    }
    Ok(raw)
}

/// `KEYCTL_READ` of a key's payload (`user` keys; asymmetric keys refuse).
pub fn read(key: Serial) -> Result<Vec<u8>, Errno> {
    read_var(KEYCTL_READ, key)
}

/// `KEYCTL_SEARCH` below `keyring` for a key of `key_type` named `description`.
pub fn search(keyring: Serial, key_type: &str, description: &str) -> Result<Serial, Errno> {
    let t = cstring(key_type)?;
    let d = cstring(description)?;
    keyctl(
        KEYCTL_SEARCH,
        keyring as libc::c_ulong,
        t.as_ptr() as libc::c_ulong,
        d.as_ptr() as libc::c_ulong,
        0,
    )
    .map(|r| r as Serial)
}

/// `KEYCTL_JOIN_SESSION_KEYRING` with no name: the calling process gets a
/// new, empty, anonymous session keyring, which its children (and programs
/// it `execve`s) inherit and nothing else can join. Returns its serial.
pub fn join_new_session_keyring() -> Result<Serial, Errno> {
    keyctl(KEYCTL_JOIN_SESSION_KEYRING, 0, 0, 0, 0).map(|r| r as Serial)
}

/// `KEYCTL_SETPERM`: a key's permission mask (`KEY_POS_*`, `KEY_USR_*`, …).
pub fn setperm(key: Serial, perm: u32) -> Result<(), Errno> {
    keyctl(
        KEYCTL_SETPERM,
        key as libc::c_ulong,
        libc::c_ulong::from(perm),
        0,
        0,
    )
    .map(|_| ())
}

/// `KEYCTL_CLEAR`: unlinks everything from a keyring.
pub fn clear(keyring: Serial) -> Result<(), Errno> {
    keyctl(KEYCTL_CLEAR, keyring as libc::c_ulong, 0, 0, 0).map(|_| ())
}

/// Use only, by the key's possessor: view, read and search (what signing,
/// listing a keyring and reading a record need); not write, link or setattr,
/// so no possessor can revoke the key, link it into a keyring that outlives
/// its own, or hand out permissions again. Nothing for user, group or others.
pub const PERM_POSSESSOR_USE: u32 = 0x0b00_0000;

/// `KEYCTL_LINK`.
pub fn link(key: Serial, keyring: Serial) -> Result<(), Errno> {
    keyctl(
        KEYCTL_LINK,
        key as libc::c_ulong,
        keyring as libc::c_ulong,
        0,
        0,
    )
    .map(|_| ())
}

/// `KEYCTL_UNLINK`.
pub fn unlink(key: Serial, keyring: Serial) -> Result<(), Errno> {
    keyctl(
        KEYCTL_UNLINK,
        key as libc::c_ulong,
        keyring as libc::c_ulong,
        0,
        0,
    )
    .map(|_| ())
}

/// `add_key(2)`. Used by the tests (and later the CLI) to load PKCS#8 keys;
/// the payload buffer belongs to the caller, who wipes it.
pub fn add_key(
    key_type: &str,
    description: &str,
    payload: &[u8],
    keyring: Serial,
) -> Result<Serial, Errno> {
    let t = cstring(key_type)?;
    let d = cstring(description)?;
    // SAFETY: all pointers are valid for the call; the payload length is its slice length.
    let r = unsafe {
        libc::syscall(
            libc::SYS_add_key,
            t.as_ptr(),
            d.as_ptr(),
            payload.as_ptr(),
            payload.len(),
            keyring as libc::c_long,
        )
    };
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(r as Serial)
    }
}

/// `KEYCTL_PKEY_QUERY` with the given `enc=… hash=…` info string.
pub fn pkey_query(key: Serial, info: &str) -> Result<PkeyQuery, Errno> {
    let info = cstring(info)?;
    let mut q = RawPkeyQuery::default();
    keyctl(
        KEYCTL_PKEY_QUERY,
        key as libc::c_ulong,
        0,
        info.as_ptr() as libc::c_ulong,
        &mut q as *mut RawPkeyQuery as libc::c_ulong,
    )?;
    Ok(PkeyQuery {
        supported_ops: q.supported_ops,
        key_size: q.key_size,
        max_data_size: q.max_data_size,
        max_sig_size: q.max_sig_size,
        max_enc_size: q.max_enc_size,
        max_dec_size: q.max_dec_size,
    })
}

fn pkey_op(
    op: libc::c_long,
    key: Serial,
    info: &str,
    input: &[u8],
    out: &mut [u8],
) -> Result<usize, Errno> {
    let info = cstring(info)?;
    let params = RawPkeyParams {
        key_id: key,
        in_len: u32::try_from(input.len()).map_err(|_| Errno(libc::EINVAL))?,
        out_or_in2_len: u32::try_from(out.len()).map_err(|_| Errno(libc::EINVAL))?,
        spare: [0; 7],
    };
    let n = keyctl(
        op,
        &params as *const RawPkeyParams as libc::c_ulong,
        info.as_ptr() as libc::c_ulong,
        input.as_ptr() as libc::c_ulong,
        out.as_mut_ptr() as libc::c_ulong,
    )? as usize;
    Ok(n.min(out.len()))
}

/// `KEYCTL_PKEY_SIGN`. `out` must not be larger than the key's max_sig_size
/// (the kernel answers EINVAL otherwise).
pub fn pkey_sign(key: Serial, info: &str, input: &[u8], out: &mut [u8]) -> Result<usize, Errno> {
    pkey_op(KEYCTL_PKEY_SIGN, key, info, input, out)
}

/// `KEYCTL_PKEY_ENCRYPT` (the public operation).
pub fn pkey_encrypt(key: Serial, info: &str, input: &[u8], out: &mut [u8]) -> Result<usize, Errno> {
    pkey_op(KEYCTL_PKEY_ENCRYPT, key, info, input, out)
}

/// `KEYCTL_PKEY_DECRYPT` (with `enc=raw`, the raw private operation).
pub fn pkey_decrypt(key: Serial, info: &str, input: &[u8], out: &mut [u8]) -> Result<usize, Errno> {
    pkey_op(KEYCTL_PKEY_DECRYPT, key, info, input, out)
}

/// `KEYCTL_PKEY_VERIFY`: `Ok(())` when the signature is good, `EKEYREJECTED` when not.
pub fn pkey_verify(key: Serial, info: &str, digest: &[u8], signature: &[u8]) -> Result<(), Errno> {
    let info = cstring(info)?;
    let params = RawPkeyParams {
        key_id: key,
        in_len: u32::try_from(digest.len()).map_err(|_| Errno(libc::EINVAL))?,
        out_or_in2_len: u32::try_from(signature.len()).map_err(|_| Errno(libc::EINVAL))?,
        spare: [0; 7],
    };
    keyctl(
        KEYCTL_PKEY_VERIFY,
        &params as *const RawPkeyParams as libc::c_ulong,
        info.as_ptr() as libc::c_ulong,
        digest.as_ptr() as libc::c_ulong,
        signature.as_ptr() as libc::c_ulong,
    )
    .map(|_| ())
}
