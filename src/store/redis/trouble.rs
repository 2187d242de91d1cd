//! What keeps other instances' appends from reaching this instance's
//! streams promptly (the single-server tailer or the cluster follower
//! failing while the store's own commands work): kept for `/readyz`'s
//! `degraded`, and logged once when it starts and once when it ends, not
//! on every retry.

use std::sync::Mutex;

/// The current trouble of one part (the tailer, or the follower).
pub struct Slot {
    part: &'static str,
    /// What its trouble means for the streams.
    meaning: &'static str,
    /// Why it fails, while it does.
    now: Mutex<Option<String>>,
}

impl Slot {
    /// A slot for `part`, whose trouble means `meaning`.
    pub const fn new(part: &'static str, meaning: &'static str) -> Self {
        Slot {
            part,
            meaning,
            now: Mutex::new(None),
        }
    }

    /// The trouble as `/readyz` says it, if any.
    pub fn describe(&self) -> Option<String> {
        let now = self.now.lock().expect("poisoned");
        now.as_ref()
            .map(|why| format!("{}: {why}: {}", self.part, self.meaning))
    }

    /// Records why the part fails (`None`: it works). Only a change is
    /// logged: WARN when it goes wrong (deliveries slow down or stop), INFO
    /// when it works again.
    pub fn set(&self, now: Option<String>) {
        let mut was = self.now.lock().expect("poisoned");
        match (&*was, &now) {
            (None, Some(why)) => {
                tracing::warn!(reason = %why, "{}: {}", self.part, self.meaning);
            }
            (Some(_), None) => tracing::info!("{}: works again", self.part),
            _ => {}
        }
        *was = now;
    }

    /// It has no trouble now.
    pub fn clear(&self) {
        self.set(None);
    }
}
