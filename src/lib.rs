//! keyring-pkcs11: a PKCS#11 module whose RSA private keys live in the Linux
//! kernel's key retention service. The module never sees private key
//! material: it asks the kernel to sign (`KEYCTL_PKEY_SIGN`) with keys that
//! the kernel holds and guards with its own permissions and lifetimes.
//!
//! # The layers
//!
//! ```text
//!  ffi/        the C ABI: every C_* under one macro (catch_unwind, pointer
//!     |        checks, Result -> CK_RV, errors logged once); unsafe
//!  module/     PKCS#11 logic in safe Rust: tokens, sessions, objects,
//!     |        provisioning, operations — over the KeyStore trait
//!     |-- object.rs, mechanism.rs    what objects and mechanisms look like
//!     |-- crypto/    RSA in userspace around the kernel: encodings, public
//!     |              key recovery, one operation end to end
//!     |-- material.rs, records.rs    key material on its way in; our records
//!  kernel/     the KeyStore trait, the kernel store (and the mock), the raw
//!              keyctl(2) calls (unsafe), what each kernel refusal means
//! ```
//! Leaves used everywhere: `error`, `hash`, `log`, `sync`, `idhash`,
//! `random`, `config`.
//!
//! # The lock rule
//!
//! No lock is held across a system call. `module` copies what it needs out of
//! its tables, drops the lock, calls the kernel, and looks its target up again;
//! the global state in `ffi::global` is an `Arc` taken for the length of one
//! call, so `C_Finalize` racing a `C_Sign` leaves that call a defined error.
//! Locks are std's futex mutexes, which a `fork()` cannot leave owned by a
//! thread that does not exist in the child.
//!
//! # One `C_Sign`, file by file
//!
//! 1. `ffi/crypto.rs` `C_Sign`: the macro catches panics; the input and
//!    output pointers become slices (`ffi/mod.rs`), the two-call convention
//!    is applied (`two_call`), and the module is fetched for this call
//!    (`ffi/global.rs`).
//! 2. `module/operations.rs` `Module::sign` → `produce`: the session's
//!    `CryptOp` (made and checked at `C_SignInit`) is taken out under the
//!    session's lock; a size query or short buffer is answered there, without
//!    signing.
//! 3. `crypto/operation.rs` `sign`: the mechanism's encoding (PKCS#1 v1.5 is
//!    the kernel's own; PSS is encoded here, `crypto/padding.rs`).
//! 4. `kernel/store.rs` `KernelStore::sign` (or `private_raw` for PSS and raw
//!    RSA) → `kernel/keyctl.rs` `pkey_sign`: `KEYCTL_PKEY_SIGN`, no lock held.
//! 5. Back up: a kernel refusal becomes an `Error` that keeps its errno
//!    (`error.rs`); `module` decides whether the key left the token
//!    (`module/discovery.rs` `key_error`); `ffi::guard` logs it once with the
//!    hints of `kernel/hints.rs` and returns its `CK_RV`.

#![deny(unsafe_op_in_unsafe_fn)]

// What the `keyring-pkcs11` tool, the tests, the fuzzer and softhsm-compare
// use; everything else is private to the module.
pub mod config;
pub mod error;
pub mod kernel;
pub mod log;
pub mod module;
pub mod rv;

pub use crypto::pubkey::{RsaPublic, pow_small};
pub use crypto::rejection;
pub use hash::Hash;
pub use material::GENERATE_BITS;
pub use mechanism::MechParams;
pub use object::AttrValue;
pub use records::hex;

mod alloc;
mod crypto;
mod ffi;
mod hash;
mod idhash;
mod material;
mod mechanism;
mod object;
mod random;
mod records;
mod sync;
