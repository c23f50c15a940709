//! Crash points for tests: what a crash at one precise point of a process leaves behind, and
//! that the platform recovers from it, is proven by killing the process there.

use std::sync::OnceLock;

/// The variable naming the point at which the process kills itself.
pub const FAILPOINT_VAR: &str = "FOODAID_FAILPOINT";

/// Kills the process with SIGKILL, as `kill -9` would, when `FOODAID_FAILPOINT` names `point`.
/// Nothing runs after it: no destructor, no flush, no answer.
pub fn failpoint(point: &str) {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    if ARMED.get_or_init(|| std::env::var(FAILPOINT_VAR).ok().filter(|p| !p.is_empty())).as_deref() == Some(point) {
        eprintln!("failpoint {point} reached: killing the process");
        kill_self();
    }
}

#[allow(unsafe_code)]
fn kill_self() {
    // SAFETY: sends a signal to this very process; no memory is touched.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
}
