//! Fault injection for the tests that prove a failure half-way through
//! attaching leaves nothing behind.
//!
//! Setting `PROBE_INJECT_FAULT=POINT` makes `check(POINT)` fail. Only the
//! test suite sets it.

/// Environment variable naming the point at which to fail.
pub const FAULT_ENV: &str = "PROBE_INJECT_FAULT";

/// An injected failure.
#[derive(Debug, thiserror::Error)]
#[error("injected failure at `{0}` ({FAULT_ENV} is set)")]
pub struct InjectedFault(String);

/// Fails when `PROBE_INJECT_FAULT` names `point`.
pub fn check(point: &str) -> Result<(), InjectedFault> {
    match std::env::var(FAULT_ENV) {
        Ok(value) if value == point => Err(InjectedFault(point.to_owned())),
        _ => Ok(()),
    }
}
