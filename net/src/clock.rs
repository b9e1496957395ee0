//! The wall clock, in the unit the protocol speaks: milliseconds since the Unix epoch (round
//! deadlines, ledger entries). Waiting is done on tokio's monotonic clock; this one only stamps.

/// Milliseconds since the Unix epoch (0 if the system clock is before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
