//! Which actor serves each topic, and the one rule that lets an idle
//! topic actor stop without losing a message: a message meant for it is
//! counted in its entry ([`Registry::deliver`], under the map's read lock)
//! before it is queued, the actor counts it off when it handles it
//! ([`Inbound::arrived`]), and the actor leaves the map only under the
//! write lock while nothing is counted ([`Registry::release`]). After
//! that nobody can reach it: the next message starts a new actor, which
//! opens the topic afresh.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, RwLock,
    },
};

use actix::{Actor, Addr};

/// Messages counted on their way to one actor, and whether it has
/// started (set its mailbox's capacity; until then actix's default of 16
/// applies, and a burst of first messages would find it full).
#[derive(Clone, Debug, Default)]
pub(crate) struct Inbound(Arc<AtomicUsize>, Arc<std::sync::atomic::AtomicBool>);

impl Inbound {
    /// The actor has started.
    pub(crate) fn started(&self) {
        self.1.store(true, Ordering::Release);
    }

    /// A counted message was handled.
    pub(crate) fn arrived(&self) {
        // Saturating: a message that was never counted (a test's actor).
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }
}

struct Entry<A: Actor> {
    addr: Addr<A>,
    inbound: Inbound,
}

/// Topic name → running actor.
pub(crate) struct Registry<A: Actor> {
    map: RwLock<HashMap<Arc<str>, Entry<A>>>,
}

impl<A: Actor> Default for Registry<A> {
    fn default() -> Self {
        Registry {
            map: RwLock::default(),
        }
    }
}

impl<A: Actor> Registry<A> {
    /// The running actor of `name`.
    pub(crate) fn get(&self, name: &str) -> Option<Addr<A>> {
        let map = self.map.read().expect("poisoned");
        map.get(name)
            .filter(|e| e.addr.connected())
            .map(|e| e.addr.clone())
    }

    /// Calls `send` with the running actor of `name` and whether it has
    /// started, counting one message on its way to it (`send` must queue
    /// exactly one counted message, or return `None` having queued none).
    /// `None` without such an actor.
    pub(crate) fn deliver<R>(
        &self,
        name: &str,
        send: impl FnOnce(&Addr<A>, bool) -> Option<R>,
    ) -> Option<Option<R>> {
        let map = self.map.read().expect("poisoned");
        let e = map.get(name).filter(|e| e.addr.connected())?;
        e.inbound.0.fetch_add(1, Ordering::AcqRel);
        let sent = send(&e.addr, e.inbound.1.load(Ordering::Acquire));
        if sent.is_none() {
            e.inbound.arrived();
        }
        Some(sent)
    }

    /// Registers `addr` for `name`, with its message count.
    pub(crate) fn insert(&self, name: Arc<str>, addr: Addr<A>, inbound: Inbound) {
        self.map
            .write()
            .expect("poisoned")
            .insert(name, Entry { addr, inbound });
    }

    /// Takes the actor counting `inbound` out of the map if no message is
    /// on its way to it; `false` (and nothing changes) otherwise.
    pub(crate) fn release(&self, name: &str, inbound: &Inbound) -> bool {
        let mut map = self.map.write().expect("poisoned");
        let ours = map
            .get(name)
            .is_some_and(|e| Arc::ptr_eq(&e.inbound.0, &inbound.0));
        if !ours || inbound.0.load(Ordering::Acquire) > 0 {
            return false;
        }
        map.remove(name);
        true
    }

    /// How many actors run.
    pub(crate) fn len(&self) -> usize {
        self.map.read().expect("poisoned").len()
    }
}
