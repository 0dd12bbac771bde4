//! Catching the panics of user code (command handlers, settlement callbacks), so that a panic fails
//! the one message it happened in instead of the task that serves the topic.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;

/// Calls `call` and awaits the future it returns; a panic in either is caught and returned as its
/// message.
pub(super) async fn catch_panic<Fut: Future>(
    call: impl FnOnce() -> Fut,
) -> Result<Fut::Output, String> {
    let future =
        std::panic::catch_unwind(AssertUnwindSafe(call)).map_err(|panic| panic_message(&*panic))?;
    AssertUnwindSafe(future)
        .catch_unwind()
        .await
        .map_err(|panic| panic_message(&*panic))
}

/// The text a panic was raised with (`panic!` gives a `&str` or a `String`).
fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|message| (*message).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_call_that_does_not_panic_gives_its_output() {
        assert_eq!(catch_panic(|| async { 7 }).await, Ok(7));
    }

    #[tokio::test]
    async fn a_panic_before_the_future_is_caught_with_its_message() {
        let caught = catch_panic(|| -> std::future::Ready<()> { panic!("sync {}", 1) }).await;
        assert_eq!(caught, Err("sync 1".to_owned()));
    }

    #[tokio::test]
    async fn a_panic_inside_the_future_is_caught_with_its_message() {
        let caught = catch_panic(|| async { panic!("async") }).await;
        assert_eq!(caught, Err::<(), _>("async".to_owned()));
    }

    #[test]
    fn a_panic_without_text_is_named_as_such() {
        assert_eq!(panic_message(&42_u8), "a non-string panic");
    }
}
