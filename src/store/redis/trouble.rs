//! What keeps other instances' appends from reaching this instance's
//! streams promptly (the single-server tailer or the cluster follower
//! failing while the store's own commands work): kept for `/readyz`'s
//! `degraded`, and logged once when it starts and once when it ends, not
//! on every retry.

use std::sync::Mutex;

/// Why other instances' appends do not reach this one promptly.
#[derive(Clone, Debug)]
pub struct Trouble {
    /// What failed.
    pub why: String,
    /// Redis refused this instance's user the topics' channels (`NOPERM`):
    /// its own appends' announcements on them are refused too.
    pub denied: bool,
}

/// The current trouble of one part (the tailer, or the follower).
pub struct Slot {
    part: &'static str,
    /// What its trouble means for the streams.
    meaning: &'static str,
    now: Mutex<Option<Trouble>>,
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
        now.as_ref().map(|t| {
            let also = if t.denied {
                "; nor are this instance's appends announced on them"
            } else {
                ""
            };
            format!("{}: {}{also}: {}", self.part, t.why, self.meaning)
        })
    }

    /// Records the part's state; a change is logged once (at WARN when it
    /// goes wrong: deliveries slow down or stop, silently else).
    pub fn set(&self, now: Option<Trouble>) {
        let mut was = self.now.lock().expect("poisoned");
        match (&*was, &now) {
            (None, Some(t)) => {
                tracing::warn!(reason = %t.why, "{}: {}", self.part, self.meaning);
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
