//! SIGINT and SIGTERM for the long-running commands (`produce`, `consume`, `copy`).
//!
//! The first signal asks the command to finish: it stops reading input, flushes, commits (or
//! ends the open transaction) and closes its consumer, which leaves the group at once instead
//! of after a session timeout. The process then exits with 128 + the signal number (130 for
//! SIGINT, 143 for SIGTERM), as a shell reports a process killed by it. A second signal exits
//! at once, with the second signal's code.
//!
//! Only these commands install the handlers: the others keep the default disposition and die
//! by the signal.

use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// Exit code after SIGINT.
pub const SIGINT_EXIT: u8 = 130;
/// Exit code after SIGTERM.
pub const SIGTERM_EXIT: u8 = 143;

/// Whether a stop was asked for, and by which signal. Cheap to clone.
#[derive(Clone)]
pub struct Stop {
    tx: Arc<watch::Sender<Option<u8>>>,
}

impl Stop {
    /// A stop that no signal triggers (for commands that keep the default disposition).
    pub fn never() -> Stop {
        Stop {
            tx: Arc::new(watch::channel(None).0),
        }
    }

    /// Installs the SIGINT and SIGTERM handlers (needs the tokio runtime).
    pub fn on_signals() -> std::io::Result<Stop> {
        let stop = Stop::never();
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        let tx = stop.tx.clone();
        tokio::spawn(async move {
            loop {
                let code = tokio::select! {
                    Some(()) = int.recv() => SIGINT_EXIT,
                    Some(()) = term.recv() => SIGTERM_EXIT,
                    else => return,
                };
                if tx.borrow().is_some() {
                    eprintln!("kfk: interrupted again, exiting now");
                    std::process::exit(code.into());
                }
                eprintln!("kfk: interrupted, finishing (press Ctrl-C again to exit at once)");
                tx.send_replace(Some(code));
            }
        });
        Ok(stop)
    }

    /// The exit code of the signal that asked for the stop, if one did.
    pub fn requested(&self) -> Option<u8> {
        *self.tx.borrow()
    }

    /// Resolves once a stop is asked for (at once if it was already).
    pub async fn wait(&self) {
        let mut rx = self.tx.subscribe();
        // The sender lives in `self`, so this cannot fail while we wait.
        let _ = rx.wait_for(Option::is_some).await;
    }
}
