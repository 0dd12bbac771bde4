//! What a builder accepts for a port it keeps behind an `Arc`: the implementation itself, or one
//! already shared, so that one repository, broker or participant store serves several managers,
//! participants or services.

use std::sync::Arc;

/// A value a builder keeps as an `Arc<P>`, `P` being a port (`dyn SagaExecutionRepository`,
/// `dyn Broker`, `dyn ParticipantStore`): an implementation of the port (moved into a new `Arc`),
/// an `Arc` of one, or an `Arc<dyn Port>` (shared as it is).
pub trait Shared<P: ?Sized> {
    /// The value behind an `Arc` of the port.
    fn into_shared(self) -> Arc<P>;
}

impl<P: ?Sized> Shared<P> for Arc<P> {
    fn into_shared(self) -> Arc<P> {
        self
    }
}

/// Implements [`Shared`] of the port trait `$port` for its implementations and their `Arc`s.
macro_rules! shared_port {
    ($port:path) => {
        impl<T: $port> $crate::shared::Shared<dyn $port> for T {
            fn into_shared(self) -> ::std::sync::Arc<dyn $port> {
                ::std::sync::Arc::new(self)
            }
        }

        impl<T: $port> $crate::shared::Shared<dyn $port> for ::std::sync::Arc<T> {
            fn into_shared(self) -> ::std::sync::Arc<dyn $port> {
                self
            }
        }
    };
}
pub(crate) use shared_port;
