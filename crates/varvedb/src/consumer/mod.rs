//! Consumers: subscriptions, processors (sync and async) and projections, with one failure
//! policy ([`OnError`]) for all of them.
//!
//! A [`Subscription`] reads events after a position and waits for new ones; a [`Processor`]
//! drives an [`EventHandler`] from a durable, named cursor (an [`AsyncProcessor`] an
//! [`AsyncEventHandler`]); a [`Projection`] keeps a read model in the same transaction as its
//! cursor. They reach the store only through `Storage` methods.

mod group;
mod policy;
mod processor;
mod projection;
mod subscription;

pub use policy::OnError;
pub use processor::{
    AsyncEventHandler, AsyncProcessor, EventHandler, HandlerError, Processor, ProcessorOptions,
};
pub use projection::{Model, Projection, ProjectionHandler};
pub use subscription::{OwnedEvent, SUBSCRIPTION_BATCH_EVENTS, Subscription, SubscriptionItem};
