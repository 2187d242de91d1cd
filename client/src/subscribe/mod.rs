//! Subscribing: a topic as an async [`Stream`] of [`Item`]s that
//! reconnects by itself, resumes after the last event it yielded, and
//! reports gaps and connection changes as items of their own.

mod state;

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
    time::Duration,
};

use futures_util::Stream;

use crate::{
    client::Client,
    cursor::CursorStore,
    error::{Error, Result},
    types::{Event, Gap, Start},
};

use state::State;

/// What a [`Subscription`] yields.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Item {
    /// The next event: every event after the start position, in order,
    /// each once, across reconnects.
    Event(Event),
    /// Events that cannot be delivered (trimmed by retention, lost to
    /// damage, or of a deleted or wiped log); the subscription goes on
    /// after [`Gap::resumed_after`].
    Gap(Gap),
    /// A stream is open, resuming after `after` (`None`: from the start
    /// position, nothing received yet).
    Connected {
        /// The cursor the stream resumes after.
        after: Option<String>,
    },
    /// The stream broke, ended or could not be opened; the next attempt
    /// starts after `delay`.
    Disconnected {
        /// What happened.
        reason: String,
        /// Failed attempts in a row (0: an immediate reconnect, e.g. with
        /// a renewed token).
        attempt: u32,
        /// The wait before the next attempt.
        delay: Duration,
    },
}

impl Item {
    /// The position this item moves the subscription to: an event's
    /// cursor, or where reading goes on after a gap.
    pub fn cursor(&self) -> Option<&str> {
        match self {
            Item::Event(e) => Some(&e.cursor),
            Item::Gap(g) => Some(&g.resumed_after),
            _ => None,
        }
    }
}

/// How to subscribe: where to start, where to keep the position.
#[derive(Clone)]
pub struct SubscribeOptions {
    pub(crate) start: Start,
    pub(crate) store: Option<Arc<dyn CursorStore>>,
    pub(crate) auto_commit: bool,
    pub(crate) on_gap_resume: bool,
    pub(crate) idle_timeout: Duration,
}

impl Default for SubscribeOptions {
    fn default() -> SubscribeOptions {
        SubscribeOptions {
            start: Start::Latest,
            store: None,
            auto_commit: true,
            on_gap_resume: false,
            idle_timeout: Duration::from_secs(45),
        }
    }
}

impl SubscribeOptions {
    /// From the next event published, no cursor store.
    pub fn new() -> SubscribeOptions {
        SubscribeOptions::default()
    }

    /// Where to start when the cursor store has no cursor (default
    /// [`Start::Latest`]).
    pub fn start(mut self, start: Start) -> SubscribeOptions {
        self.start = start;
        self
    }

    /// Keeps the position in `store`: the subscription starts after the
    /// cursor it holds (the start position counts only while it holds
    /// none), and saves each item's cursor once the item is handled.
    pub fn cursor_store(mut self, store: impl CursorStore + 'static) -> SubscribeOptions {
        self.store = Some(Arc::new(store));
        self
    }

    /// Like [`cursor_store`](SubscribeOptions::cursor_store) with a shared store.
    pub fn shared_cursor_store(mut self, store: Arc<dyn CursorStore>) -> SubscribeOptions {
        self.store = Some(store);
        self
    }

    /// When the cursor of a yielded item is saved. `true` (the default):
    /// when the next item is asked for, i.e. once the caller is done with
    /// it, so a process that stops while handling an item gets it again
    /// on restart. `false`: only by [`Subscription::commit`], e.g. after a
    /// batch of items is written out.
    pub fn auto_commit(mut self, auto: bool) -> SubscribeOptions {
        self.auto_commit = auto;
        self
    }

    /// Asks the broker for `?on_gap=resume`: a gap arrives as an
    /// `event: gap` frame on the stream instead of a `416` answer (both
    /// become [`Item::Gap`]). The event type `gap` is then the broker's:
    /// do not publish events of that type to a topic read this way.
    pub fn on_gap_resume(mut self, on: bool) -> SubscribeOptions {
        self.on_gap_resume = on;
        self
    }

    /// A stream on which nothing at all arrives for this long is taken as
    /// dead and reopened (default 45 s; an idle broker stream carries a
    /// comment every 2 s and a keep-alive every 15 s).
    pub fn idle_timeout(mut self, t: Duration) -> SubscribeOptions {
        self.idle_timeout = t;
        self
    }
}

impl Client {
    /// Subscribes to `topic`. Nothing is sent until the stream is polled.
    ///
    /// ```no_run
    /// # async fn f() -> sluice_client::Result<()> {
    /// use futures_util::StreamExt;
    /// use sluice_client::{Client, FileCursorStore, Item, Start, SubscribeOptions};
    ///
    /// let client = Client::new("http://127.0.0.1:8080")?;
    /// let options = SubscribeOptions::new()
    ///     .start(Start::Earliest)
    ///     .cursor_store(FileCursorStore::new("orders.cursor"));
    /// let mut sub = client.subscribe("orders", options);
    /// while let Some(item) = sub.next().await {
    ///     match item? {
    ///         Item::Event(e) => println!("{}: {}", e.cursor, e.data),
    ///         Item::Gap(g) => eprintln!("gap: {g}"),
    ///         other => eprintln!("{other:?}"),
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn subscribe(&self, topic: &str, options: SubscribeOptions) -> Subscription {
        Subscription {
            store: options.store.clone(),
            auto_commit: options.auto_commit,
            state: Some(Box::new(State::new(self.clone(), topic, options))),
            pending: None,
            yielded: None,
            committed: None,
        }
    }
}

type Next =
    Pin<Box<dyn Future<Output = (Box<State>, Option<String>, Option<Result<Item>>)> + Send>>;

/// A subscription: a [`Stream`] of `Result<Item>`. Transport failures and
/// broker restarts are retried without end (each shown as
/// [`Item::Disconnected`]); an `Err` is a refusal that retrying cannot
/// cure (a bad topic, a token refused, a cursor store failing), after
/// which the stream ends, except for a cursor store's failure to save,
/// which is reported and reading goes on.
pub struct Subscription {
    state: Option<Box<State>>,
    pending: Option<Next>,
    store: Option<Arc<dyn CursorStore>>,
    auto_commit: bool,
    /// The cursor of the last event or gap yielded.
    yielded: Option<String>,
    /// The cursor saved last.
    committed: Option<String>,
}

impl Subscription {
    /// The cursor of the last event (or gap) yielded: where a new
    /// subscription would resume.
    pub fn cursor(&self) -> Option<&str> {
        self.yielded.as_deref()
    }

    /// Saves the cursor of the last item yielded in the cursor store now
    /// (without a store, does nothing).
    pub async fn commit(&mut self) -> Result<()> {
        if let (Some(store), Some(c)) = (&self.store, &self.yielded) {
            if self.committed.as_ref() != Some(c) {
                store.save(c).await.map_err(Error::CursorStore)?;
                self.committed = Some(c.clone());
            }
        }
        Ok(())
    }
}

impl Stream for Subscription {
    type Item = Result<Item>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Item>>> {
        let this = self.get_mut();
        if this.pending.is_none() {
            let Some(mut state) = this.state.take() else {
                return Poll::Ready(None);
            };
            let commit = match (&this.store, &this.yielded) {
                (Some(store), Some(c))
                    if this.auto_commit && this.committed.as_ref() != Some(c) =>
                {
                    Some((store.clone(), c.clone()))
                }
                _ => None,
            };
            this.pending = Some(Box::pin(async move {
                let mut saved = None;
                if let Some((store, c)) = commit {
                    if let Err(e) = store.save(&c).await {
                        return (state, None, Some(Err(Error::CursorStore(e))));
                    }
                    saved = Some(c);
                }
                let item = state.next().await;
                (state, saved, item)
            }));
        }
        let next = this.pending.as_mut().expect("set above");
        let (state, saved, item) = ready!(next.as_mut().poll(cx));
        this.pending = None;
        if !state.done() {
            this.state = Some(state);
        }
        if saved.is_some() {
            this.committed = saved;
        }
        if let Some(Ok(i)) = &item {
            if let Some(c) = i.cursor() {
                this.yielded = Some(c.to_owned());
            }
        }
        Poll::Ready(item)
    }
}
