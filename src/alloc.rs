//! The module's heap: every block it frees is wiped first.
//!
//! Key material enters this process only while a key is imported or
//! generated, in buffers that are `Zeroizing`; but the crates that check,
//! encode and generate it (RustCrypto's bignum arithmetic, the DER encoders)
//! make temporaries we cannot reach, and p − 1 is p to within its last byte.
//! Wiping on free covers them all. It governs only the Rust allocations of
//! this library (a cdylib's allocator is its own; the host program's malloc
//! is untouched), and costs a memset per free, nothing next to a kernel RSA
//! operation. The tool's memory scrape (tests/lab/cli-memory.sh; the tool
//! gets this allocator through this crate) found fragments of both primes
//! in freed memory without it. The module's own (tests/memory.rs) finds no
//! 32-byte piece of an imported key even without it — import takes the
//! values apart without arithmetic — but key generation's temporaries (the
//! `rsa` crate's p − 1, q − 1 and CRT values) cannot be looked for, since
//! the test cannot know the generated primes; this covers them.
//!
//! Not in unit tests: one of them counts allocations with its own allocator.

#[cfg(not(test))]
#[global_allocator]
static ALLOC: zeroizing_alloc::ZeroAlloc<std::alloc::System> =
    zeroizing_alloc::ZeroAlloc(std::alloc::System);
