//! keyring-pkcs11: a PKCS#11 module whose RSA private keys live in the Linux
//! kernel's key retention service. The module never sees private key
//! material: it asks the kernel to sign (`KEYCTL_PKEY_SIGN`) with keys that
//! the kernel holds and guards with its own permissions and lifetimes.
//!
//! Layout: `ffi` (the C ABI, the only `unsafe` besides `keyctl`) → `module`
//! (tokens, sessions, objects, operations) → `store` (the kernel, behind a
//! trait) → `keyctl` (raw system calls).

#![deny(unsafe_op_in_unsafe_fn)]

pub mod config;
pub mod crypto;
pub mod error;
mod ffi;
mod idhash;
pub mod import;
pub mod keyctl;
pub mod lifecycle;
pub mod log;
pub mod mechanism;
pub mod module;
pub mod object;
pub mod padding;
pub mod pubkey;
pub mod random;
pub mod store;
mod sync;
