//! The template API: what a process instance does with its events and timers.
//!
//! A template is the behaviour; its `State` is what one instance (one key) remembers, and is
//! exactly what the runtime persists in redb. The runtime owns everything else: activation,
//! passivation, deduplication, durable timers, retries, checkpoints.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use vigil_actors::event::Event;
//! use vigil_actors::record::{Record, RecordKind};
//! use vigil_actors::template::{Context, Subscription, Template, TemplateError};
//!
//! /// Alerts when a customer adds a tenth item to their cart.
//! struct BigCart;
//!
//! #[derive(Clone, Default, Serialize, Deserialize)]
//! struct Items { count: u32 }
//!
//! impl Template for BigCart {
//!     type State = Items;
//!     fn subscriptions(&self) -> Vec<Subscription> {
//!         vec![Subscription::new("CART_ITEM_ADDED")]
//!     }
//!     fn on_event(&self, state: &mut Items, event: &Event, cx: &mut Context<'_>) -> Result<(), TemplateError> {
//!         state.count += 1;
//!         if state.count == 10 {
//!             cx.emit(Record::new(RecordKind::Alert, "BIG_CART", cx.key(), event.time));
//!         }
//!         Ok(())
//!     }
//! }
//! ```

use std::any::Any;

use serde::de::DeserializeOwned;
use serde::Serialize;
use smallvec::SmallVec;
use vigil_storage::codec::{self, CodecError};

use crate::event::Event;
use crate::record::Record;
use crate::spec::FieldPath;
use crate::time::Millis;

/// An event type a template receives, and what keys its instances: by default (`key` empty)
/// the event type's configured correlation key; otherwise the parts of `key`, joined with `|`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub event_type: String,
    pub key: Vec<KeyPart>,
}

/// One part of an instance key computed from an event (see [`Subscription::grouped_by`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    /// A payload field: a string as is, a number as its decimal text. An event without it (or
    /// with another JSON type) is not delivered to the template.
    Field(FieldPath),
    /// The event type's name.
    EventType,
    /// A fixed text, e.g. `*`: every event of the subscription goes to one instance.
    Constant(String),
}

impl Subscription {
    pub fn new(event_type: impl Into<String>) -> Subscription {
        Subscription {
            event_type: event_type.into(),
            key: Vec::new(),
        }
    }

    pub fn keyed_by(event_type: impl Into<String>, key: FieldPath) -> Subscription {
        Subscription {
            event_type: event_type.into(),
            key: vec![KeyPart::Field(key)],
        }
    }

    /// Keyed by several parts (a composite key), their values joined with `|`.
    pub fn grouped_by(event_type: impl Into<String>, parts: Vec<KeyPart>) -> Subscription {
        Subscription {
            event_type: event_type.into(),
            key: parts,
        }
    }
}

/// A handler failure. `Retryable` failures (and panics) are retried against the instance's
/// last good state up to the job's `max_retries`; then, like `Permanent` ones, the event is
/// dead-lettered with this message and the instance carries on without it. (For a template
/// whose handlers run in place, see [`Template::handles_in_place`].)
#[derive(Debug, Clone, thiserror::Error)]
pub enum TemplateError {
    #[error("{0}")]
    Retryable(String),
    #[error("{0}")]
    Permanent(String),
}

/// A template: the behaviour of one kind of keyed process instance.
pub trait Template: Send + Sync + 'static {
    /// What one instance remembers. Persisted with the codec; `Default` is a new instance.
    type State: Serialize + DeserializeOwned + Clone + Default + Send + 'static;

    /// The event types routed to this template's instances.
    fn subscriptions(&self) -> Vec<Subscription>;

    /// Handles one event of the instance keyed `cx.key()`. Events come one at a time, in the
    /// order they were read, deduplicated by event id.
    fn on_event(
        &self,
        state: &mut Self::State,
        event: &Event,
        cx: &mut Context<'_>,
    ) -> Result<(), TemplateError>;

    /// Handles a timer set with [`Context::set_timer`], once the watermark reaches its time.
    fn on_timer(
        &self,
        _state: &mut Self::State,
        _timer: &str,
        _cx: &mut Context<'_>,
    ) -> Result<(), TemplateError> {
        Ok(())
    }

    /// Whether the instance has ended. An ended instance's state and timers are deleted;
    /// only a small tombstone stays for the job's `dedup_retention` to ignore duplicates.
    fn is_complete(&self, _state: &Self::State) -> bool {
        false
    }

    /// The state as JSON, for timelines and inspection.
    fn describe(&self, _state: &Self::State) -> serde_json::Value {
        serde_json::Value::Null
    }

    /// Whether the runtime remembers the ids of this template's events (to ignore duplicates)
    /// and keeps a tombstone of an ended instance for the job's `dedup_retention`. `false`
    /// suits instances that aggregate an unbounded stream (windows): no hash per event is kept,
    /// and an ended instance is deleted at once, so the next event for its key starts a new one.
    fn dedup_by_event_id(&self) -> bool {
        true
    }

    /// Whether the runtime may call the handlers on the instance's state itself rather than on
    /// a copy. That saves a clone of the state (and its timers) per event, but a failure
    /// (error or panic) then leaves the state half changed: the runtime restarts the shard from
    /// its last checkpoint, and from then on runs this template's handlers on copies, with
    /// retries and dead letters as described at [`TemplateError`]. Return `true` only for
    /// handlers that fail by bug, not on bad input (the built-in templates).
    fn handles_in_place(&self) -> bool {
        false
    }
}

pub use vigil_storage::TimerName;

/// An instance's timers: each one's name and the event time it fires at. Two inline: an order
/// has an SLA and an expiry, a pattern run its deadline.
pub type Timers = SmallVec<[(TimerName, Millis); 2]>;

/// The timers a handler call set or cancelled, each with its time before the call. Inline:
/// a call changes one or two timers, and this is made for every call.
pub(crate) type TimerChanges = SmallVec<[(TimerName, Option<Millis>); 2]>;

/// What a handler may do besides changing its state: emit records and manage its timers.
pub struct Context<'a> {
    key: &'a str,
    time: Millis,
    watermark: Millis,
    pub(crate) outputs: &'a mut Vec<Record>,
    pub(crate) timers: &'a mut Timers,
    /// Each timer this call set or cancelled, once, with its time before the call.
    pub(crate) timers_before: TimerChanges,
}

impl<'a> Context<'a> {
    pub(crate) fn new(
        key: &'a str,
        time: Millis,
        watermark: Millis,
        outputs: &'a mut Vec<Record>,
        timers: &'a mut Timers,
    ) -> Context<'a> {
        Context {
            key,
            time,
            watermark,
            outputs,
            timers,
            timers_before: TimerChanges::new(),
        }
    }

    /// A context for unit-testing a template outside the runtime.
    pub fn for_test(
        key: &'a str,
        time: Millis,
        outputs: &'a mut Vec<Record>,
        timers: &'a mut Timers,
    ) -> Context<'a> {
        Context {
            key,
            time,
            watermark: crate::time::MIN_TIME,
            outputs,
            timers,
            timers_before: TimerChanges::new(),
        }
    }

    /// The same context with the shard's watermark at `watermark` (for tests of templates that
    /// look at it).
    pub fn with_watermark(mut self, watermark: Millis) -> Context<'a> {
        self.watermark = watermark;
        self
    }

    /// The instance's key.
    pub fn key(&self) -> &str {
        self.key
    }

    /// The event time of what is being handled: the event's time, or the timer's time.
    pub fn time(&self) -> Millis {
        self.time
    }

    /// The shard's current watermark.
    pub fn watermark(&self) -> Millis {
        self.watermark
    }

    pub fn emit(&mut self, record: Record) {
        self.outputs.push(record);
    }

    /// Sets (or moves) the timer `name` of this instance to fire at event time `at`.
    pub fn set_timer(&mut self, name: &str, at: Millis) {
        self.note_change(name);
        match self.timers.iter_mut().find(|(n, _)| n == name) {
            Some(timer) => timer.1 = at,
            None => self.timers.push((name.into(), at)),
        }
    }

    pub fn cancel_timer(&mut self, name: &str) {
        if self.timer(name).is_some() {
            self.note_change(name);
            self.timers.retain(|(n, _)| n != name);
        }
    }

    /// Remembers a timer's time before this call changes it (the runtime moves only the
    /// timers that changed in its timer index).
    fn note_change(&mut self, name: &str) {
        if !self.timers_before.iter().any(|(n, _)| n == name) {
            let before = self.timer(name);
            self.timers_before.push((name.into(), before));
        }
    }

    pub fn timer(&self, name: &str) -> Option<Millis> {
        self.timers.iter().find(|(n, _)| n == name).map(|(_, t)| *t)
    }
}

/// An instance's state behind the object-safe [`DynTemplate`].
pub type AnyState = Box<dyn Any + Send>;

/// The object-safe twin of [`Template`], implemented for every template by a blanket impl;
/// the runtime holds templates as `Box<dyn DynTemplate>`.
pub trait DynTemplate: Send + Sync {
    fn subscriptions(&self) -> Vec<Subscription>;
    fn new_state(&self) -> AnyState;
    fn decode_state(&self, bytes: &[u8]) -> Result<AnyState, CodecError>;
    /// Appends the encoded state to `out`.
    fn encode_state(&self, state: &AnyState, out: &mut Vec<u8>);
    fn clone_state(&self, state: &AnyState) -> AnyState;
    fn on_event(
        &self,
        state: &mut AnyState,
        event: &Event,
        cx: &mut Context<'_>,
    ) -> Result<(), TemplateError>;
    fn on_timer(
        &self,
        state: &mut AnyState,
        timer: &str,
        cx: &mut Context<'_>,
    ) -> Result<(), TemplateError>;
    fn is_complete(&self, state: &AnyState) -> bool;
    fn describe(&self, state: &AnyState) -> serde_json::Value;
    fn dedup_by_event_id(&self) -> bool {
        true
    }
    fn handles_in_place(&self) -> bool {
        false
    }
}

fn downcast<S: 'static>(state: &AnyState) -> &S {
    state
        .downcast_ref::<S>()
        .expect("instance state belongs to its template")
}

fn downcast_mut<S: 'static>(state: &mut AnyState) -> &mut S {
    state
        .downcast_mut::<S>()
        .expect("instance state belongs to its template")
}

impl<T: Template> DynTemplate for T {
    fn subscriptions(&self) -> Vec<Subscription> {
        Template::subscriptions(self)
    }
    fn new_state(&self) -> AnyState {
        Box::new(T::State::default())
    }
    fn decode_state(&self, bytes: &[u8]) -> Result<AnyState, CodecError> {
        Ok(Box::new(codec::decode::<T::State>(bytes)?))
    }
    fn encode_state(&self, state: &AnyState, out: &mut Vec<u8>) {
        codec::encode_into(downcast::<T::State>(state), out)
            .expect("encoding into memory cannot fail for serde-derived types")
    }
    fn clone_state(&self, state: &AnyState) -> AnyState {
        Box::new(downcast::<T::State>(state).clone())
    }
    fn on_event(
        &self,
        state: &mut AnyState,
        event: &Event,
        cx: &mut Context<'_>,
    ) -> Result<(), TemplateError> {
        Template::on_event(self, downcast_mut::<T::State>(state), event, cx)
    }
    fn on_timer(
        &self,
        state: &mut AnyState,
        timer: &str,
        cx: &mut Context<'_>,
    ) -> Result<(), TemplateError> {
        Template::on_timer(self, downcast_mut::<T::State>(state), timer, cx)
    }
    fn is_complete(&self, state: &AnyState) -> bool {
        Template::is_complete(self, downcast::<T::State>(state))
    }
    fn describe(&self, state: &AnyState) -> serde_json::Value {
        Template::describe(self, downcast::<T::State>(state))
    }
    fn dedup_by_event_id(&self) -> bool {
        Template::dedup_by_event_id(self)
    }
    fn handles_in_place(&self) -> bool {
        Template::handles_in_place(self)
    }
}
