//! SIGINT and SIGTERM: the first asks the running loop to stop cleanly, a
//! second ends the process at once with 128 + the signal's number, first
//! removing the report's temporary file if one is registered
//! ([`set_temporary`]), so an impatient user leaves nothing behind.
//!
//! signal-hook runs the handlers. The first signal sets the stop flag inside
//! the handler (so a loop woken by it sees it at once). On Unix a thread
//! reads the signals from signal-hook's iterator and, at the second, removes
//! the registered file and exits: outside a signal handler, so removing a
//! file is safe. (The iterator merges signals of one kind that arrive before
//! the thread reads the first: a second Ctrl-C within microseconds counts
//! once.) Windows, which has no iterator, exits at the second signal from
//! the handler and leaves the file.

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::flag;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock};

static STOP: OnceLock<Arc<AtomicBool>> = OnceLock::new();
/// The file to remove before an abrupt exit.
static TEMPORARY: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Installs the handlers (once per process); the returned flag turns true at
/// the first signal.
pub fn install() -> Arc<AtomicBool> {
    let stop = STOP.get_or_init(|| {
        let stop = Arc::new(AtomicBool::new(false));
        let installed = [SIGINT, SIGTERM]
            .into_iter()
            .try_for_each(|signal| flag::register(signal, Arc::clone(&stop)).map(drop))
            .and_then(|()| exit_at_second_signal());
        if let Err(e) = installed {
            crate::warn!("cannot handle signals: {e}");
        }
        stop
    });
    Arc::clone(stop)
}

/// Registers (Some) or forgets (None) the file a second signal removes.
pub fn set_temporary(path: Option<PathBuf>) {
    *TEMPORARY.lock().unwrap_or_else(|e| e.into_inner()) = path;
}

#[cfg(unix)]
fn exit_at_second_signal() -> std::io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut seen = false;
            for signal in signals.forever() {
                if seen {
                    if let Some(path) = TEMPORARY.lock().unwrap_or_else(|e| e.into_inner()).take() {
                        let _ = std::fs::remove_file(path);
                    }
                    signal_hook::low_level::exit(128 + signal);
                }
                seen = true;
            }
        })
        .map(drop)
}

#[cfg(windows)]
fn exit_at_second_signal() -> std::io::Result<()> {
    static SIGNALLED: AtomicBool = AtomicBool::new(false);
    [SIGINT, SIGTERM].into_iter().try_for_each(|signal| {
        flag::register_conditional_shutdown(signal, 128 + signal, &SIGNALLED)?;
        flag::register(signal, &SIGNALLED).map(drop)
    })
}
