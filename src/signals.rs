//! SIGINT and SIGTERM: the first asks the running loop to stop cleanly, a
//! second ends the process at once with 128 + the signal's number.
//!
//! signal-hook runs the handlers; ours are only its flag actions, which run
//! in registration order: first "exit at once if a signal came before", then
//! "a signal came", then "stop". The "a signal came" flag is our own, not the
//! stop flag, because the program also sets the stop flag itself (a server
//! loop that ends stops the others), and that must not turn the user's first
//! signal into an abrupt exit.

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::flag;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};

static STOP: OnceLock<Arc<AtomicBool>> = OnceLock::new();
static SIGNALLED: AtomicBool = AtomicBool::new(false);

/// Installs the handlers (once per process); the returned flag turns true at
/// the first signal.
pub fn install() -> Arc<AtomicBool> {
    let stop = STOP.get_or_init(|| {
        let stop = Arc::new(AtomicBool::new(false));
        for signal in [SIGINT, SIGTERM] {
            let installed = flag::register_conditional_shutdown(signal, 128 + signal, &SIGNALLED)
                .and_then(|_| flag::register(signal, &SIGNALLED))
                .and_then(|_| flag::register(signal, Arc::clone(&stop)));
            if let Err(e) = installed {
                crate::warn!("cannot handle signal {signal}: {e}");
            }
        }
        stop
    });
    Arc::clone(stop)
}
