//! Memory handed to the module, and the promises about it: nothing is
//! written past a buffer (guard bytes follow every output), and a returned
//! length fits the buffer on success and exceeds it on `CKR_BUFFER_TOO_SMALL`.

use cryptoki_sys::*;
use std::ptr::null_mut;

pub const GUARD: usize = 24;
pub const GUARD_BYTE: u8 = 0xa5;
pub const FILL_BYTE: u8 = 0x5a;

/// A byte buffer whose memory is exactly as long as claimed, followed by
/// guard bytes that the module must not touch. NULL when `len` is None.
pub struct OutBuf {
    mem: Box<[u8]>,
    len: Option<usize>,
    /// Bytes before the buffer: 1 puts it off every alignment, as nothing
    /// in C promises a `void *` value or a byte buffer one.
    at: usize,
}

impl OutBuf {
    pub fn new(len: Option<usize>) -> OutBuf {
        OutBuf::new_at(len, false)
    }

    /// The same, one byte off alignment if `misaligned`.
    pub fn new_at(len: Option<usize>, misaligned: bool) -> OutBuf {
        let at = usize::from(misaligned);
        let n = len.unwrap_or(0);
        let mut mem = vec![FILL_BYTE; at + n + GUARD];
        mem[at + n..].fill(GUARD_BYTE);
        OutBuf {
            mem: mem.into(),
            len,
            at,
        }
    }

    /// An input value: no guard, so reading past it is an ASan error.
    pub fn input(v: Vec<u8>) -> OutBuf {
        OutBuf::input_at(v, false)
    }

    /// The same, one byte off alignment if `misaligned`.
    pub fn input_at(v: Vec<u8>, misaligned: bool) -> OutBuf {
        let at = usize::from(misaligned);
        let len = Some(v.len());
        let mut mem = vec![FILL_BYTE; at];
        mem.extend(v);
        OutBuf {
            mem: mem.into(),
            len,
            at,
        }
    }

    pub fn ptr(&mut self) -> *mut u8 {
        match self.len {
            Some(_) => self.mem[self.at..].as_mut_ptr(),
            None => null_mut(),
        }
    }

    pub fn room(&self) -> Option<usize> {
        self.len
    }

    /// The guard bytes are intact (an input has none).
    pub fn check(&self, what: &str) {
        let n = self.at + self.len.unwrap_or(0);
        assert!(
            self.mem[n..].iter().all(|b| *b == GUARD_BYTE),
            "{what}: written past the end of a {n}-byte buffer"
        );
    }

    pub fn bytes(&self, n: usize) -> &[u8] {
        &self.mem[self.at..self.at + n.min(self.len.unwrap_or(0))]
    }
}

/// Lengths no buffer can have, passed beside a real buffer: what a failed
/// `C_GetAttributeValue` leaves in a template the caller reuses
/// (`CK_UNAVAILABLE_INFORMATION`), and sizes at and past `isize::MAX`, which
/// `slice::from_raw_parts` must never see. The module must refuse them
/// without reading (or writing) past the real buffer.
pub const HUGE: [CK_ULONG; 4] = [
    CK_UNAVAILABLE_INFORMATION,
    isize::MAX as CK_ULONG,
    isize::MAX as CK_ULONG + 1,
    CK_ULONG::MAX - 7,
];

/// `HUGE[i]`, wrapping.
pub fn huge(i: u8) -> CK_ULONG {
    HUGE[usize::from(i) % HUGE.len()]
}

/// A value followed by guard bytes, for the `CK_*_INFO` and `CK_ULONG`
/// outputs.
#[repr(C)]
pub struct Guarded<T> {
    pub value: T,
    guard: [u8; GUARD],
}

impl<T> Guarded<T> {
    pub fn new() -> Box<Guarded<T>> {
        // SAFETY: every CK_*_INFO and CK_ULONG is plain old data, for which
        // any bit pattern (here all FILL_BYTE) is a value.
        let mut b: Box<Guarded<T>> = Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: as above; the whole struct is bytes.
        unsafe {
            std::ptr::write_bytes(
                &mut *b as *mut Guarded<T> as *mut u8,
                FILL_BYTE,
                std::mem::size_of::<Guarded<T>>(),
            )
        };
        b.guard = [GUARD_BYTE; GUARD];
        b
    }

    /// The value's address, or NULL when `null`.
    pub fn ptr(&mut self, null: bool) -> *mut T {
        if null { null_mut() } else { &mut self.value }
    }

    pub fn check(&self, what: &str) {
        assert!(
            self.guard.iter().all(|b| *b == GUARD_BYTE),
            "{what}: written past the structure"
        );
    }
}

/// An array of `room` `CK_ULONG`s (slot IDs, mechanisms, object handles)
/// followed by guard words; NULL when `room` is None.
pub struct Words {
    mem: Vec<CK_ULONG>,
    room: Option<usize>,
}

const GUARD_WORD: CK_ULONG = CK_ULONG::from_ne_bytes([GUARD_BYTE; 8]);

impl Words {
    pub fn new(room: Option<usize>) -> Words {
        let n = room.unwrap_or(0);
        let mut mem = vec![CK_ULONG::from_ne_bytes([FILL_BYTE; 8]); n + 4];
        mem[n..].fill(GUARD_WORD);
        Words { mem, room }
    }

    pub fn ptr(&mut self) -> *mut CK_ULONG {
        match self.room {
            Some(_) => self.mem.as_mut_ptr(),
            None => null_mut(),
        }
    }

    pub fn check(&self, what: &str) {
        let n = self.room.unwrap_or(0);
        assert!(
            self.mem[n..].iter().all(|w| *w == GUARD_WORD),
            "{what}: written past {n} elements"
        );
    }

    pub fn first(&self, n: usize) -> &[CK_ULONG] {
        &self.mem[..n.min(self.room.unwrap_or(0))]
    }
}

/// The two-call convention's length promises, for an output of `room`
/// bytes (None: NULL, a size query) of which the module reported `got`.
pub fn check_len(name: &str, rv: CK_RV, room: Option<usize>, got: CK_ULONG) {
    match (rv, room) {
        (CKR_OK, Some(n)) => assert!(
            got as usize <= n,
            "{name}: {got} bytes in a {n}-byte buffer"
        ),
        (CKR_BUFFER_TOO_SMALL, Some(n)) => assert!(
            got as usize > n,
            "{name}: CKR_BUFFER_TOO_SMALL but {got} bytes fit in {n}"
        ),
        (CKR_BUFFER_TOO_SMALL, None) => panic!("{name}: CKR_BUFFER_TOO_SMALL to a size query"),
        _ => {}
    }
}

/// The bytes of a parameter structure, to place anywhere in memory.
pub fn bytes_of<T>(v: &T) -> Vec<u8> {
    // SAFETY: T is a plain repr(C) parameter structure, read as bytes.
    unsafe { std::slice::from_raw_parts(v as *const T as *const u8, std::mem::size_of::<T>()) }
        .to_vec()
}
