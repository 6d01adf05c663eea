//! Work on many kernel keys at once, spread over the CPUs the process may use.
//!
//! Learning a key costs the kernel's work as much as ours (a public operation
//! runs in the calling thread, on its CPU), so a client that reads every
//! key of a token (`ssh -I`, p11tool, libp11's enumeration) waits for one
//! CPU's worth of work per key unless that work is shared out.
//!
//! The helper threads are scoped and each is joined (`pthread_join`, not only
//! waited for) before the call returns, so none outlives the PKCS#11 call
//! that made it: a client may rely on being single-threaded between calls
//! (`unshare`, `setns`). They are
//! callers of the module like the client's own threads: they take its locks
//! only briefly and never across a kernel call, and a `fork()` while they run
//! leaves the child a module it must initialise afresh (`ffi::global`), as a
//! fork during any other call does. A thread the system will not make
//! (`clone` fails: `RLIMIT_NPROC`, a seccomp filter that returns an error)
//! leaves its share to the caller's thread.

use std::num::NonZeroUsize;
use std::sync::OnceLock;

/// A helper's stack: set, so that `RUST_MIN_STACK` in a client's (or a
/// setuid program's caller's) environment cannot shrink it below what
/// learning a key needs; std's default.
const STACK: usize = 2 << 20;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Beyond this many threads a key's work is no longer the bottleneck (the
/// keyring's own locks are), and a client's process should not find dozens
/// of our threads in it.
pub(crate) const MAX_THREADS: usize = 8;

/// How many threads, the caller's included, the module uses by default: the
/// CPUs this process may run on (affinity and cgroup quota included), at
/// most `MAX_THREADS`. Read at each `C_Initialize`, never cached in a static:
/// a forked worker pinned to one CPU initialises afresh and reads its own,
/// and no lock is held while the cgroup files are read.
pub(super) fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, NonZeroUsize::get)
        .min(MAX_THREADS)
}

/// `f` of every item, in the items' order, computed on up to `threads`
/// threads (the caller's one of them), with one more thread for each
/// `per_thread` items at least: small batches are not worth a thread.
pub(super) fn map<T, R>(
    items: &[T],
    threads: usize,
    per_thread: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R>
where
    T: Sync,
    R: Send + Sync,
{
    let threads = threads
        .min(items.len() / per_thread.max(1))
        .clamp(1, MAX_THREADS);
    if threads == 1 {
        return items.iter().map(f).collect();
    }
    let out: Vec<OnceLock<R>> = items.iter().map(|_| OnceLock::new()).collect();
    // Items are taken one at a time from a shared counter, not split into
    // fixed shares: one slow key (a key without a record costs several
    // kernel operations) must not leave the other threads idle.
    let next = AtomicUsize::new(0);
    let work = || {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(i) else { break };
            let _ = out[i].set(f(item));
        }
    };
    std::thread::scope(|s| {
        let mut helpers = Vec::with_capacity(threads - 1);
        for _ in 1..threads {
            match std::thread::Builder::new()
                .name("keyring-pkcs11".into())
                .stack_size(STACK)
                .spawn_scoped(s, work)
            {
                Ok(h) => helpers.push(h),
                Err(_) => break,
            }
        }
        work();
        // The scope alone waits until each closure has returned, not until
        // its thread is gone.
        for h in helpers {
            if let Err(panic) = h.join() {
                std::panic::resume_unwind(panic);
            }
        }
    });
    out.into_iter()
        .map(|r| r.into_inner().expect("every item is taken exactly once"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::Mutex;
    use std::thread::ThreadId;

    #[test]
    fn every_item_once_in_order() {
        let items: Vec<u32> = (0..1000).collect();
        let calls = AtomicUsize::new(0);
        let out = map(&items, 4, 1, |&x| {
            calls.fetch_add(1, Ordering::Relaxed);
            x * 2
        });
        assert_eq!(calls.into_inner(), 1000);
        assert_eq!(out, (0..1000).map(|x| x * 2).collect::<Vec<_>>());
    }

    fn threads_used(items: usize, threads: usize, per_thread: usize) -> usize {
        let seen = Mutex::new(HashSet::<ThreadId>::new());
        let items: Vec<usize> = (0..items).collect();
        map(&items, threads, per_thread, |_| {
            seen.lock().unwrap().insert(std::thread::current().id());
            // Long enough that one thread cannot take every item before the
            // others start.
            std::thread::sleep(std::time::Duration::from_millis(2));
        });
        seen.into_inner().unwrap().len()
    }

    #[test]
    fn the_work_is_shared_out() {
        assert_eq!(threads_used(8, 2, 1), 2);
        assert_eq!(threads_used(40, 4, 1), 4);
    }

    #[test]
    fn small_batches_and_one_thread_stay_in_the_caller() {
        assert_eq!(threads_used(8, 1, 1), 1);
        // Eight items, at least five per extra thread: one thread.
        assert_eq!(threads_used(8, 4, 5), 1);
        let caller = std::thread::current().id();
        let items = [1, 2, 3];
        let ran_in = map(&items, 1, 1, |_| std::thread::current().id());
        assert!(ran_in.iter().all(|&t| t == caller));
    }

    #[test]
    fn no_more_than_the_cap() {
        assert_eq!(threads_used(64, 100, 1), MAX_THREADS);
    }
}
