//! `net::cli::shutdown_signal` registers its handlers before it returns: a SIGTERM sent at once,
//! before the runtime has run any task, cancels the token instead of killing the process (with
//! the handler registered inside the spawned task, the default action of SIGTERM ended this test
//! binary). This file is its own process, so the signal reaches no other test.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::process::Command;
use std::time::Duration;

#[test]
fn a_sigterm_right_after_the_call_is_a_clean_stop() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let token = net::cli::shutdown_signal();
        // No await between the call and the signal: on a current-thread runtime the spawned
        // listener has not run yet.
        let sent = Command::new("kill").args(["-TERM", &std::process::id().to_string()]).status().unwrap();
        assert!(sent.success());
        tokio::time::timeout(Duration::from_secs(30), token.cancelled())
            .await
            .expect("the token is cancelled by the SIGTERM");
    });
}
