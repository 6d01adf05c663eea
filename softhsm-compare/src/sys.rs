//! The raw keyctl calls the module makes around every signature besides the
//! signature itself (C_SignInit searches the token's keyring for the key by
//! its label; it used to read the keyring's links and ask the kernel about
//! the key), timed alone to explain the module's overhead above the raw
//! syscall. Plain libc, not the module's code.

const KEYCTL_GET_KEYRING_ID: libc::c_long = 0;
const KEYCTL_READ: libc::c_long = 11;
const KEYCTL_SEARCH: libc::c_long = 10;
const KEYCTL_PKEY_QUERY: libc::c_long = 24;
pub const KEY_SPEC_USER_KEYRING: i32 = -4;

fn keyctl(
    op: libc::c_long,
    a: libc::c_ulong,
    b: libc::c_ulong,
    c: libc::c_ulong,
    d: libc::c_ulong,
) -> libc::c_long {
    // SAFETY: integer or pointer arguments; every pointer below is to a live buffer.
    unsafe { libc::syscall(libc::SYS_keyctl, op, a, b, c, d) }
}

pub fn keyring_id(special: i32) -> i32 {
    keyctl(KEYCTL_GET_KEYRING_ID, special as libc::c_ulong, 0, 0, 0) as i32
}

/// KEYCTL_SEARCH of `ring` for a key of this type and description: its
/// serial, or -1.
fn search(ring: i32, key_type: &std::ffi::CStr, description: &std::ffi::CStr) -> i32 {
    keyctl(
        KEYCTL_SEARCH,
        ring as libc::c_ulong,
        key_type.as_ptr() as libc::c_ulong,
        description.as_ptr() as libc::c_ulong,
        0,
    ) as i32
}

/// A keyring of that name below @u, or -1.
pub fn find_keyring(name: &str) -> i32 {
    let d = std::ffi::CString::new(name).unwrap();
    search(KEY_SPEC_USER_KEYRING, c"keyring", &d)
}

/// The asymmetric key labelled `label` in `ring`, as the module's
/// C_SignInit looks for it: its serial, or -1.
pub fn search_key(ring: i32, label: &std::ffi::CStr) -> i32 {
    search(ring, c"asymmetric", label)
}

/// KEYCTL_READ of a keyring into `buf`; the number of bytes it holds.
pub fn read(ring: i32, buf: &mut [u8]) -> i64 {
    keyctl(
        KEYCTL_READ,
        ring as libc::c_ulong,
        buf.as_mut_ptr() as libc::c_ulong,
        buf.len() as libc::c_ulong,
        0,
    ) as i64
}

/// KEYCTL_PKEY_QUERY "enc=pkcs1", as the module's C_SignInit does.
pub fn pkey_query(key: i32) -> bool {
    let info = c"enc=pkcs1";
    let mut q = [0u32; 14];
    keyctl(
        KEYCTL_PKEY_QUERY,
        key as libc::c_ulong,
        0,
        info.as_ptr() as libc::c_ulong,
        q.as_mut_ptr() as libc::c_ulong,
    ) >= 0
}
