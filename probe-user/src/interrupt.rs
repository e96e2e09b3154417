//! A record of SIGINT, SIGTERM and SIGHUP for the long synchronous steps
//! (loading and attaching hundreds of programs) that cannot wait on the
//! async runtime's signal streams. Those streams still see the signals:
//! the registry runs every handler registered for a signal.

use std::sync::atomic::{AtomicI32, Ordering};

/// The last stop signal received, 0 before any.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

/// Starts recording stop signals. Calling it again adds nothing.
pub fn watch() {
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    REGISTERED.call_once(|| {
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            // SAFETY: the handler only stores to an atomic, which is
            // async-signal-safe.
            let result = unsafe { signal_hook_registry::register(signal, move || RECEIVED.store(signal, Ordering::Relaxed)) };
            if let Err(err) = result {
                log::warn!("cannot watch signal {signal}: {err}");
            }
        }
    });
}

/// Returns the name of the stop signal received since [`watch`], if any.
pub fn received() -> Option<&'static str> {
    match RECEIVED.load(Ordering::Relaxed) {
        libc::SIGINT => Some("SIGINT"),
        libc::SIGTERM => Some("SIGTERM"),
        libc::SIGHUP => Some("SIGHUP"),
        _ => None,
    }
}
