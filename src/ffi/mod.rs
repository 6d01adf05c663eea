//! The C ABI. Every `C_*` function is defined through [`cryptoki_fn!`], which
//! exports it unmangled, runs its body under `catch_unwind` (a panic must
//! never unwind into ssh or a TLS server; it becomes `CKR_GENERAL_ERROR`), and
//! turns the body's `Result` into a `CK_RV`. Bodies check every pointer they
//! use with the helpers below (NULL → `CKR_ARGUMENTS_BAD`) and hand safe
//! values to `module`, which holds the logic.
//!
//! With `src/kernel/keyctl.rs`, this is the only place with `unsafe`.

use crate::error::{Error, Result};
use crate::mechanism::{MechParams, Padding};
use cryptoki_sys::*;
use std::panic::{AssertUnwindSafe, catch_unwind};

// The entry points by PKCS#11 chapter.
mod crypto;
mod general;
mod keys;
mod object;
mod session;
mod slot;
// The function lists, and what is present but not supported.
mod global;
mod list;
mod unsupported;
mod v3;

#[cfg(test)]
mod abi_tests;

use global::module;

/// Defines one exported PKCS#11 entry point.
macro_rules! cryptoki_fn {
    // An entry point reached only through a function list, never by symbol
    // (the 3.0 list's `C_GetInfo`, which must not shadow the 2.40 one).
    (unexported $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        #[allow(non_snake_case)]
        pub(super) unsafe extern "C" fn $name($($arg: $ty),*) -> CK_RV {
            $crate::ffi::guard(stringify!($name), move || -> $crate::error::Result<()> {
                #[allow(unused_unsafe)]
                unsafe { $body }
            })
        }
    };
    ($name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        #[unsafe(no_mangle)]
        #[allow(non_snake_case, clippy::missing_safety_doc)]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> CK_RV {
            $crate::ffi::guard(stringify!($name), move || -> $crate::error::Result<()> {
                #[allow(unused_unsafe)]
                unsafe { $body }
            })
        }
    };
}
pub(crate) use cryptoki_fn;

pub(crate) fn guard(name: &str, f: impl FnOnce() -> Result<()>) -> CK_RV {
    #[cfg(debug_assertions)]
    borrowed::clear();
    let r = catch_unwind(AssertUnwindSafe(f));
    #[cfg(debug_assertions)]
    borrowed::clear();
    match r {
        Ok(Ok(())) => CKR_OK,
        Ok(Err(e)) => {
            e.log(name);
            e.rv
        }
        Err(_) => {
            crate::log::error(format_args!(
                "internal error (panic) in {name}; returning CKR_GENERAL_ERROR"
            ));
            CKR_GENERAL_ERROR
        }
    }
}

/// A caller-provided output location.
unsafe fn out<'a, T>(p: *mut T) -> Result<&'a mut T> {
    if !p.is_aligned() {
        return Err(Error::new(CKR_ARGUMENTS_BAD));
    }
    unsafe { p.as_mut() }.ok_or(Error::new(CKR_ARGUMENTS_BAD))
}

/// `n` elements of `T` as a slice length, if a buffer of that many could
/// exist: its size in bytes must not overflow or reach `isize::MAX`, nor the
/// buffer wrap around the address space (what `slice::from_raw_parts`
/// requires). A caller's length is checked here before any slice is built:
/// `CK_UNAVAILABLE_INFORMATION`, which a failed `C_GetAttributeValue` leaves
/// in a template that the caller then reuses, is such a length.
fn slice_len<T>(p: *const T, n: CK_ULONG) -> Result<usize> {
    usize::try_from(n)
        .ok()
        .and_then(|n| {
            n.checked_mul(std::mem::size_of::<T>())
                .map(|bytes| (n, bytes))
        })
        .filter(|(_, bytes)| {
            // Not even isize::MAX itself: no allocation is that large,
            // and a caller who passes it means "unknown", not a buffer.
            isize::try_from(*bytes).is_ok_and(|b| b < isize::MAX)
                && (p as usize).checked_add(*bytes).is_some()
        })
        .map(|(n, _)| n)
        .ok_or(Error::new(CKR_ARGUMENTS_BAD))
}

/// A caller-provided input buffer; NULL is allowed only when empty.
unsafe fn bytes<'a>(p: *const u8, len: CK_ULONG) -> Result<&'a [u8]> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(Error::new(CKR_ARGUMENTS_BAD));
    }
    let len = slice_len(p, len)?;
    #[cfg(debug_assertions)]
    borrowed::input(p as usize, len);
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// A single-part input that the caller may also have given, whole or in
/// part, as the output buffer: C callers encrypt and decrypt in place. A
/// `&[u8]` and a `&mut [u8]` over the same bytes are undefined behaviour, so
/// an input that overlaps the output (`out`, `*out_len` bytes) is copied
/// first, into a buffer wiped when dropped (it may be a plaintext), and the
/// caller's memory is then only the output.
unsafe fn input<'a>(
    p: *const u8,
    len: CK_ULONG,
    out: *const u8,
    out_len: *const CK_ULONG,
) -> Result<Input<'a>> {
    let n = if len == 0 || p.is_null() {
        0
    } else {
        slice_len(p, len)?
    };
    // A bad output length pointer is two_call's to report.
    let room = if out.is_null() || out_len.is_null() || !out_len.is_aligned() {
        0
    } else {
        usize::try_from(unsafe { *out_len }).unwrap_or(usize::MAX)
    };
    let (a, b) = (p as usize, out as usize);
    if n > 0 && room > 0 && a < b.saturating_add(room) && b < a + n {
        let mut copy = zeroize::Zeroizing::new(vec![0u8; n]);
        // SAFETY: `p` is valid for `n` bytes (the caller's promise, its
        // size checked by slice_len); `copy` is ours and does not overlap.
        unsafe { std::ptr::copy_nonoverlapping(p, copy.as_mut_ptr(), n) };
        return Ok(Input::Copied(copy));
    }
    Ok(Input::Borrowed(unsafe { bytes(p, len)? }))
}

/// See [`input`].
enum Input<'a> {
    Borrowed(&'a [u8]),
    Copied(zeroize::Zeroizing<Vec<u8>>),
}

impl std::ops::Deref for Input<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Input::Borrowed(b) => b,
            Input::Copied(c) => c,
        }
    }
}

/// Debug builds remember the caller memory that the current call has
/// borrowed as input, and `two_call` asserts that the output it is about to
/// borrow mutably is none of it. Aliasing references are undefined
/// behaviour that usually works by luck, so no test would see it otherwise
/// (Miri, which would, cannot run a C caller); this makes the in-place tests
/// fail loudly (a panic, CKR_GENERAL_ERROR) if an input and an output ever
/// alias again.
#[cfg(debug_assertions)]
mod borrowed {
    use std::cell::Cell;

    /// The last few inputs of this call: enough for every entry point that
    /// also writes bytes (one input each). Plain `Cell`s of `Copy` data: a
    /// thread-local that needs dropping would register a destructor that
    /// keeps the library from ever being unloaded (`dlclose`).
    const N: usize = 8;
    thread_local! {
        static INPUTS: Cell<[(usize, usize); N]> = const { Cell::new([(0, 0); N]) };
        static COUNT: Cell<usize> = const { Cell::new(0) };
    }

    pub(super) fn clear() {
        COUNT.with(|c| c.set(0));
    }

    pub(super) fn input(p: usize, n: usize) {
        let i = COUNT.with(|c| {
            let i = c.get();
            c.set(i + 1);
            i
        });
        INPUTS.with(|v| {
            let mut a = v.get();
            a[i % N] = (p, p.saturating_add(n));
            v.set(a);
        });
    }

    pub(super) fn output(p: usize, n: usize) {
        let end = p.saturating_add(n);
        let count = COUNT.with(Cell::get).min(N);
        for &(a, b) in &INPUTS.with(Cell::get)[..count] {
            assert!(
                n == 0 || end <= a || b <= p,
                "an output buffer overlaps an input borrowed in the same call"
            );
        }
    }
}

/// A caller-provided array of `n` elements.
unsafe fn array<'a, T>(p: *mut T, n: CK_ULONG) -> Result<&'a mut [T]> {
    if n == 0 {
        return Ok(&mut []);
    }
    if p.is_null() || !p.is_aligned() {
        return Err(Error::new(CKR_ARGUMENTS_BAD));
    }
    let n = slice_len(p, n)?;
    Ok(unsafe { std::slice::from_raw_parts_mut(p, n) })
}

/// The two-call convention for a byte result: `p` NULL asks for the length;
/// a buffer smaller than `*plen` gets `CKR_BUFFER_TOO_SMALL` and the needed
/// length. `produce` receives `None` for a size query, so it can answer
/// without doing the work.
unsafe fn two_call(
    p: *mut u8,
    plen: *mut CK_ULONG,
    produce: impl FnOnce(Option<&mut [u8]>) -> Result<usize>,
) -> Result<()> {
    let len = unsafe { out(plen)? };
    let buf = if p.is_null() {
        None
    } else {
        let n = slice_len(p, *len)?;
        #[cfg(debug_assertions)]
        borrowed::output(p as usize, n);
        Some(unsafe { std::slice::from_raw_parts_mut(p, n) })
    };
    match produce(buf) {
        Ok(n) => {
            *len = n as CK_ULONG;
            Ok(())
        }
        Err(e) if e.rv == CKR_BUFFER_TOO_SMALL => {
            *len = e.needed as CK_ULONG;
            Err(e)
        }
        Err(e) => Err(e),
    }
}

/// The two-call convention for a list (`C_GetSlotList`, `C_GetMechanismList`).
unsafe fn write_list<T: Copy>(items: &[T], p: *mut T, pcount: *mut CK_ULONG) -> Result<()> {
    let count = unsafe { out(pcount)? };
    if p.is_null() {
        *count = items.len() as CK_ULONG;
        return Ok(());
    }
    if (*count as usize) < items.len() {
        *count = items.len() as CK_ULONG;
        return Err(Error::new(CKR_BUFFER_TOO_SMALL));
    }
    unsafe { std::ptr::copy_nonoverlapping(items.as_ptr(), p, items.len()) };
    *count = items.len() as CK_ULONG;
    Ok(())
}

/// A caller's template, borrowed for the duration of the call: values that
/// may be secret (a private key to import) are never copied here.
unsafe fn template<'a>(
    p: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
) -> Result<Vec<(CK_ATTRIBUTE_TYPE, &'a [u8])>> {
    unsafe { array(p, n)? }
        .iter()
        .map(|a| {
            Ok((a.type_, unsafe {
                bytes(a.pValue as *const u8, a.ulValueLen)?
            }))
        })
        .collect()
}

/// A caller's `CK_MECHANISM`, with its parameters copied out. Parameter
/// structures are read unaligned: nothing promises their alignment.
unsafe fn mechanism(p: *mut CK_MECHANISM) -> Result<(CK_MECHANISM_TYPE, MechParams)> {
    let m = unsafe { out(p)? };
    // A pointer to nothing (length 0) is no parameter: some callers pass
    // one for mechanisms that take none.
    if m.pParameter.is_null() || m.ulParameterLen == 0 {
        let params = if m.ulParameterLen == 0 {
            MechParams::None
        } else {
            MechParams::Unknown
        };
        return Ok((m.mechanism, params));
    }
    let padding = crate::mechanism::lookup(m.mechanism).map(|s| s.padding);
    let len = m.ulParameterLen as usize;
    let params = match padding {
        Some(Padding::Pss) if len == std::mem::size_of::<CK_RSA_PKCS_PSS_PARAMS>() => {
            let p =
                unsafe { std::ptr::read_unaligned(m.pParameter as *const CK_RSA_PKCS_PSS_PARAMS) };
            MechParams::Pss {
                hash_alg: p.hashAlg,
                mgf: p.mgf,
                salt_len: p.sLen,
            }
        }
        Some(Padding::Oaep) if len == std::mem::size_of::<CK_RSA_PKCS_OAEP_PARAMS>() => {
            let p =
                unsafe { std::ptr::read_unaligned(m.pParameter as *const CK_RSA_PKCS_OAEP_PARAMS) };
            let label = unsafe { bytes(p.pSourceData as *const u8, p.ulSourceDataLen)? }.to_vec();
            MechParams::Oaep {
                hash_alg: p.hashAlg,
                mgf: p.mgf,
                source: p.source,
                label,
            }
        }
        _ => MechParams::Unknown,
    };
    Ok((m.mechanism, params))
}

/// A fixed-width, blank-padded PKCS#11 string field, cut at a character
/// boundary.
fn pad<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [b' '; N];
    let mut end = s.len().min(N);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out[..end].copy_from_slice(&s.as_bytes()[..end]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pad_cuts_at_char_boundary() {
        assert_eq!(&pad::<4>("ab"), b"ab  ");
        assert_eq!(&pad::<3>("aé"), b"a\xc3\xa9");
        assert_eq!(&pad::<2>("aé"), b"a ");
    }

    #[test]
    fn panics_become_general_error() {
        assert_eq!(guard("t", || panic!("boom")), CKR_GENERAL_ERROR);
        assert_eq!(
            guard("t", || Err(Error::new(CKR_SLOT_ID_INVALID))),
            CKR_SLOT_ID_INVALID
        );
        assert_eq!(guard("t", || Ok(())), CKR_OK);
    }
}
