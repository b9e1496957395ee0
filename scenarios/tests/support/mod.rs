//! What the process tests share: a guard that kills the processes a test started, and a
//! bounded wait on a condition.

use std::process::Child;
use std::time::{Duration, Instant};

/// Processes a test started; killed and reaped when the test ends, whatever its outcome.
pub struct Procs(pub Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Polls `f` until it holds, failing the test after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
