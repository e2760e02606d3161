//! Routing by header, decoders, handlers and their outcomes (pure: no I/O).

use std::collections::HashMap;
use std::sync::Arc;

use kafka_client::ConsumerRecord;

use crate::config::UnknownEventPolicy;
use crate::context::EventContext;

/// A boxed error for handler failures.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a handler reports for one event.
#[derive(Debug)]
pub enum Outcome {
    /// Done: its outputs and changes go into the event's transaction.
    Complete,
    /// Finished later through the [`Completion`](crate::Completion) taken with
    /// [`EventContext::defer`]; the event's transaction waits for it (at most
    /// `eos.commit_deadline`).
    Incomplete,
    /// The event cannot be processed: the instance goes unhealthy and stops; the event's offset
    /// is not committed, so the next owner reads it again.
    Fail(BoxError),
}

/// Why a record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

impl DecodeError {
    /// A decode error with this message.
    pub fn new(message: impl Into<String>) -> DecodeError {
        DecodeError(message.into())
    }
}

/// Turns an input record into an event. Implemented for closures
/// `Fn(&ConsumerRecord) -> Result<E, DecodeError>`.
pub trait Decoder<E>: Send + Sync + 'static {
    /// Decodes `record`.
    fn decode(&self, record: &ConsumerRecord) -> Result<E, DecodeError>;
}

impl<E, F> Decoder<E> for F
where
    F: Fn(&ConsumerRecord) -> Result<E, DecodeError> + Send + Sync + 'static,
{
    fn decode(&self, record: &ConsumerRecord) -> Result<E, DecodeError> {
        self(record)
    }
}

/// Processes one decoded event against the partition's store. Implemented for closures
/// `Fn(&mut EventContext<'_, S>, E) -> Outcome`. Handlers run on the partition's worker task,
/// one event at a time, in offset order; they must not block for long (use
/// [`EventContext::defer`] for slow work).
pub trait Handler<S, E>: Send + Sync + 'static {
    /// Handles `event`.
    fn handle(&self, ctx: &mut EventContext<'_, S>, event: E) -> Outcome;
}

impl<S, E, F> Handler<S, E> for F
where
    F: Fn(&mut EventContext<'_, S>, E) -> Outcome + Send + Sync + 'static,
{
    fn handle(&self, ctx: &mut EventContext<'_, S>, event: E) -> Outcome {
        self(ctx, event)
    }
}

/// What running a route gave.
pub(crate) enum RouteResult {
    /// The handler ran.
    Handled(Outcome),
    /// The decoder refused the record.
    Undecodable(DecodeError),
    /// No handler for this record (unknown type, `Skip` policy).
    Skipped,
    /// No handler for this record, `Fail` policy.
    Unknown(String),
}

/// A decoder and a handler with the event type erased.
pub(crate) trait Route<S>: Send + Sync {
    fn run(&self, ctx: &mut EventContext<'_, S>) -> RouteResult;
}

struct Typed<D, H, E> {
    decoder: D,
    handler: H,
    _event: std::marker::PhantomData<fn() -> E>,
}

impl<S, E, D, H> Route<S> for Typed<D, H, E>
where
    D: Decoder<E>,
    H: Handler<S, E>,
    E: 'static,
{
    fn run(&self, ctx: &mut EventContext<'_, S>) -> RouteResult {
        match self.decoder.decode(ctx.record_ref()) {
            Ok(event) => RouteResult::Handled(self.handler.handle(ctx, event)),
            Err(e) => RouteResult::Undecodable(e),
        }
    }
}

pub(crate) fn typed<S, E, D, H>(decoder: D, handler: H) -> Arc<dyn Route<S>>
where
    S: 'static,
    E: 'static,
    D: Decoder<E>,
    H: Handler<S, E>,
{
    Arc::new(Typed {
        decoder,
        handler,
        _event: std::marker::PhantomData,
    })
}

/// The routing table: event type (the routing header's value) → route.
pub(crate) struct Router<S> {
    pub header: String,
    pub routes: HashMap<Vec<u8>, Arc<dyn Route<S>>>,
    pub default: Option<Arc<dyn Route<S>>>,
    pub unknown: UnknownEventPolicy,
}

impl<S> Router<S> {
    /// The route for `record`: the first routing header's value names it.
    pub(crate) fn run(&self, ctx: &mut EventContext<'_, S>) -> RouteResult {
        let kind = ctx
            .record_ref()
            .headers
            .iter()
            .find(|h| h.key == self.header)
            .and_then(|h| h.value.as_deref());
        if let Some(route) = kind.and_then(|k| self.routes.get(k)) {
            return route.run(ctx);
        }
        match self.unknown {
            UnknownEventPolicy::Default => match &self.default {
                Some(d) => d.run(ctx),
                None => RouteResult::Skipped,
            },
            UnknownEventPolicy::Skip => RouteResult::Skipped,
            UnknownEventPolicy::Fail => RouteResult::Unknown(match kind {
                Some(k) => format!(
                    "no handler for event type {:?} (header {})",
                    String::from_utf8_lossy(k),
                    self.header
                ),
                None => format!("no {} header and no default handler", self.header),
            }),
        }
    }
}
