//! A small test runner for test targets declared with `harness = false`:
//! tests that fork, or call `C_Finalize`/`C_Initialize` on a module that is
//! process-wide state, cannot share libtest's multithreaded process. Each
//! test runs in a fresh re-execution of the test binary, under a timeout, and
//! the runner prints libtest's lines (`test NAME ... ok`, `test result: ...`)
//! so `cargo test` and `tests/lab/guest.sh` count it like any other.
//!
//! Arguments understood: `--include-ignored`, `--ignored`, and substring
//! filters; anything else libtest takes (`--nocapture`, `--test-threads=N`)
//! is accepted and ignored.
//!
//! A test that needs code of its own in another process (run as another
//! user, or to see what a process that has not seen a key yet sees) runs a
//! [`Helper`] of the same binary ([`helper`]): a helper is not a test, is
//! never listed and never counted, so a count of passed tests is a count of
//! real tests.

use std::process::Command;
use std::time::{Duration, Instant};

pub struct Test {
    pub name: &'static str,
    /// Why it is ignored on an ordinary host (it needs a kernel able to hold
    /// private keys); `None` for host-safe tests.
    pub ignore: Option<&'static str>,
    /// Killed (and failed) past this.
    pub timeout: Duration,
    pub run: fn(),
}

pub const KERNEL: Option<&str> =
    Some("needs a kernel that holds PKCS#8 private keys: run lab/test");

/// Code a test runs in a process of its own (see [`helper`]). It fails by
/// panicking; on success the process prints `helper NAME: done` and exits 0.
pub struct Helper {
    pub name: &'static str,
    pub run: fn(),
}

const CHILD_ENV: &str = "KP11_HARNESS_TEST";
const HELPER_ENV: &str = "KP11_HARNESS_HELPER";

/// The `main` of a harness-less test target.
pub fn main(tests: &[Test]) {
    main_with_helpers(tests, &[]);
}

/// The `main` of a harness-less test target whose tests run helpers.
pub fn main_with_helpers(tests: &[Test], helpers: &[Helper]) {
    // Before the test's own child mode: a helper started by a test inherits
    // that test's environment.
    if let Ok(name) = std::env::var(HELPER_ENV) {
        let h = helpers
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no helper {name}"));
        (h.run)();
        println!("helper {name}: done");
        return;
    }
    if let Ok(name) = std::env::var(CHILD_ENV) {
        let t = tests
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("no test {name}"));
        (t.run)();
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let include_ignored = args.iter().any(|a| a == "--include-ignored");
    let only_ignored = args.iter().any(|a| a == "--ignored");
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let start = Instant::now();
    let (mut passed, mut failed, mut ignored, mut filtered) = (0, 0, 0, 0);
    let mut failures = Vec::new();
    let selected: Vec<&Test> = tests
        .iter()
        .filter(|t| {
            let keep = filters.is_empty() || filters.iter().any(|f| t.name.contains(f.as_str()));
            if !keep {
                filtered += 1;
            }
            keep
        })
        .collect();
    println!("\nrunning {} tests", selected.len());
    for t in selected {
        let run = match t.ignore {
            Some(_) => include_ignored || only_ignored,
            None => !only_ignored,
        };
        if !run {
            match t.ignore {
                Some(why) => println!("test {} ... ignored, {why}", t.name),
                None => println!("test {} ... ignored", t.name),
            }
            ignored += 1;
            continue;
        }
        println!("test {} ... started", t.name);
        let t0 = Instant::now();
        match run_one(t) {
            Ok(()) => {
                println!(
                    "test {} ... ok ({:.1} s)",
                    t.name,
                    t0.elapsed().as_secs_f64()
                );
                passed += 1;
            }
            Err(e) => {
                println!("test {} ... FAILED ({e})", t.name);
                failures.push(t.name);
                failed += 1;
            }
        }
    }
    if !failures.is_empty() {
        println!("\nfailures:");
        for f in &failures {
            println!("    {f}");
        }
    }
    println!(
        "\ntest result: {}. {passed} passed; {failed} failed; {ignored} ignored; 0 measured; {filtered} filtered out; finished in {:.2}s\n",
        if failed == 0 { "ok" } else { "FAILED" },
        start.elapsed().as_secs_f64()
    );
    if failed != 0 {
        std::process::exit(101);
    }
}

/// A command that runs this binary's helper `name` in a new process.
pub fn helper(name: &str) -> Command {
    let mut c = Command::new(std::env::current_exe().expect("current_exe"));
    c.env(HELPER_ENV, name).env_remove(CHILD_ENV);
    c
}

/// `VAR=VALUE` selecting helper `name`, for a command line that starts this
/// binary through another program (`runuser ... env VAR=VALUE exe`).
pub fn helper_env(name: &str) -> String {
    format!("{HELPER_ENV}={name}")
}

/// Whether a helper's output says it finished (see [`Helper`]).
pub fn helper_done(name: &str, stdout: &[u8]) -> bool {
    String::from_utf8_lossy(stdout)
        .lines()
        .any(|l| l == format!("helper {name}: done"))
}

/// Runs one test in a re-execution of this binary; its output goes straight
/// to ours.
fn run_one(t: &Test) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut child = Command::new(exe)
        .env(CHILD_ENV, t.name)
        .env_remove(HELPER_ENV)
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    let deadline = Instant::now() + t.timeout;
    loop {
        match child.try_wait().map_err(|e| format!("wait: {e}"))? {
            Some(st) if st.success() => return Ok(()),
            Some(st) => return Err(format!("exit {st}")),
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "did not finish within {} s: deadlock? killed",
                    t.timeout.as_secs()
                ));
            }
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Forks; the child runs `f` and `_exit`s with 0 if it returned `Ok`, or
/// prints the error and exits with 1 (and 2 on a panic). No destructor or
/// exit handler of the parent's runs in the child. `alarm_secs` bounds the
/// child: a deadlocked child dies of SIGALRM.
pub fn fork_child(alarm_secs: u32, f: impl FnOnce() -> Result<(), String>) -> libc::pid_t {
    // SAFETY (test code): the child only runs `f` and then _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        unsafe { libc::alarm(alarm_secs) };
        let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            Ok(Ok(())) => 0,
            Ok(Err(e)) => {
                eprintln!("child {}: {e}", std::process::id());
                1
            }
            Err(_) => 2,
        };
        unsafe { libc::_exit(code) };
    }
    pid
}

/// Waits for a child made by [`fork_child`]; describes how it ended.
pub fn wait_child(pid: libc::pid_t) -> Result<(), String> {
    let mut st = 0;
    let r = unsafe { libc::waitpid(pid, &mut st, 0) };
    if r != pid {
        return Err(format!(
            "waitpid({pid}): {}",
            std::io::Error::last_os_error()
        ));
    }
    if libc::WIFEXITED(st) {
        match libc::WEXITSTATUS(st) {
            0 => Ok(()),
            1 => Err(format!("child {pid} failed (see its message above)")),
            2 => Err(format!("child {pid} panicked")),
            c => Err(format!("child {pid} exited {c}")),
        }
    } else if libc::WIFSIGNALED(st) && libc::WTERMSIG(st) == libc::SIGALRM {
        Err(format!("child {pid} hung until its alarm: a deadlock"))
    } else {
        Err(format!("child {pid} died of signal {}", libc::WTERMSIG(st)))
    }
}
