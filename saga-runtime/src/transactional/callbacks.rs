//! The `on_commit` / `on_reject` callbacks: what they receive ([`Settled`]), and calling those of a
//! settlement, each with the effects it is registered for.

use std::future::Future;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use uuid::Uuid;

use super::panics::catch_panic;
use crate::participant_store::{Outcome, StagedEffect};

/// A settled transaction, as the `on_commit` / `on_reject` callbacks receive it.
///
/// A callback runs at least once per effect: a settlement cut short (a crash, a panic) is finished
/// later with the same decision and hands the effects it had not removed again. The transaction id
/// with an effect's key identifies the effect across such repeats, for a callback to apply it once
/// (for instance by recording the pair beside what it applies, in the same database transaction).
#[derive(Debug, Clone, PartialEq)]
pub struct Settled {
    /// The transaction.
    pub transaction: Uuid,
    /// Its staged effects, in the order they were staged (only the callback's topic's, for a
    /// callback registered for one topic).
    pub effects: Vec<StagedEffect>,
}

type Callback = Arc<dyn Fn(Settled) -> BoxFuture<'static, ()> + Send + Sync>;

/// A callback and the command topic whose effects it is limited to (`None`: every topic's).
struct TopicCallback {
    topic: Option<String>,
    callback: Callback,
}

/// The callbacks of a participant, in the order they were added.
#[derive(Default)]
pub(super) struct Callbacks {
    on_commit: Vec<TopicCallback>,
    on_reject: Vec<TopicCallback>,
}

impl Callbacks {
    /// Adds `callback`, called when a transaction settles as `outcome`, with the effects of `topic`
    /// (`None`: all of them).
    pub(super) fn add<F, Fut>(&mut self, outcome: Outcome, topic: Option<String>, callback: F)
    where
        F: Fn(Settled) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let callback: Callback = Arc::new(move |settled| Box::pin(callback(settled)));
        let callbacks = match outcome {
            Outcome::Committed => &mut self.on_commit,
            Outcome::Rejected => &mut self.on_reject,
        };
        callbacks.push(TopicCallback { topic, callback });
    }

    /// Calls the callbacks of `outcome`, one after another, with `transaction`'s `effects` (a
    /// callback of one topic only with that topic's, and not at all when it staged nothing). Stops
    /// at the first callback that panics, returning the panic's message: the effects are then not
    /// settled, and the next attempt calls every callback again.
    pub(super) async fn call(
        &self,
        outcome: Outcome,
        transaction: Uuid,
        effects: &[StagedEffect],
    ) -> Result<(), String> {
        let callbacks = match outcome {
            Outcome::Committed => &self.on_commit,
            Outcome::Rejected => &self.on_reject,
        };
        for TopicCallback { topic, callback } in callbacks {
            let Some(effects) = effects_for(topic.as_deref(), effects) else {
                continue;
            };
            let settled = Settled {
                transaction,
                effects,
            };
            catch_panic(|| callback(settled)).await?;
        }
        Ok(())
    }
}

/// The effects a callback of `topic` receives: all of them for a callback of every topic, that
/// topic's for the others, `None` when that topic staged nothing (the callback is not called).
fn effects_for(topic: Option<&str>, effects: &[StagedEffect]) -> Option<Vec<StagedEffect>> {
    let Some(topic) = topic else {
        return Some(effects.to_vec());
    };
    let effects = effects
        .iter()
        .filter(|effect| effect.topic == topic)
        .cloned()
        .collect::<Vec<_>>();
    (!effects.is_empty()).then_some(effects)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use serde_json::Value;

    use super::*;

    fn effect(topic: &str, key: &str) -> StagedEffect {
        StagedEffect {
            topic: topic.to_owned(),
            key: key.to_owned(),
            effect: Value::Null,
        }
    }

    fn keys(settled: &Settled) -> Vec<&str> {
        settled.effects.iter().map(|e| e.key.as_str()).collect()
    }

    #[test]
    fn a_callback_of_every_topic_gets_every_effect() {
        let effects = [effect("Book", "a"), effect("Pay", "b")];
        assert_eq!(effects_for(None, &effects), Some(effects.to_vec()));
    }

    #[test]
    fn a_callback_of_one_topic_gets_only_its_effects_and_none_when_it_staged_nothing() {
        let effects = [effect("Book", "a"), effect("Pay", "b"), effect("Book", "c")];
        let booked = effects_for(Some("Book"), &effects).expect("Book staged");
        assert_eq!(booked, vec![effects[0].clone(), effects[2].clone()]);
        assert_eq!(effects_for(Some("Ship"), &effects), None);
    }

    #[tokio::test]
    async fn the_callbacks_of_the_outcome_are_called_in_order_with_their_effects() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let mut callbacks = Callbacks::default();
        for (outcome, topic, name) in [
            (Outcome::Committed, None, "all"),
            (Outcome::Rejected, None, "rejected"),
            (Outcome::Committed, Some("Pay"), "pay"),
            (Outcome::Committed, Some("Ship"), "ship"),
        ] {
            let calls = Arc::clone(&calls);
            callbacks.add(outcome, topic.map(str::to_owned), move |settled| {
                let calls = Arc::clone(&calls);
                async move {
                    let keys = keys(&settled).join(",");
                    calls.lock().unwrap().push(format!("{name}:{keys}"));
                }
            });
        }
        let effects = [effect("Book", "a"), effect("Pay", "b")];
        let transaction = Uuid::new_v4();
        let called = callbacks
            .call(Outcome::Committed, transaction, &effects)
            .await;
        assert_eq!(called, Ok(()));
        assert_eq!(*calls.lock().unwrap(), ["all:a,b", "pay:b"]);
    }

    #[tokio::test]
    async fn a_panicking_callback_stops_the_settlement_with_its_message() {
        let mut callbacks = Callbacks::default();
        let after = Arc::new(Mutex::new(false));
        callbacks.add(Outcome::Rejected, None, |_| async { panic!("ledger down") });
        let reached = Arc::clone(&after);
        callbacks.add(Outcome::Rejected, None, move |_| {
            let reached = Arc::clone(&reached);
            async move { *reached.lock().unwrap() = true }
        });
        let effects = [effect("Book", "a")];
        let called = callbacks
            .call(Outcome::Rejected, Uuid::new_v4(), &effects)
            .await;
        assert_eq!(called, Err("ledger down".to_owned()));
        assert!(!*after.lock().unwrap(), "no callback runs after a panic");
    }
}
