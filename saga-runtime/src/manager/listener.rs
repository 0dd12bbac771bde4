//! The reply listener: receives the service's replies, applies each to the execution it names in
//! a task of its own, and settles every delivery: acknowledged when the reply advanced an execution
//! or changed nothing, nacked (delivered again) when its handling failed for a reason that may
//! pass, dead-lettered with the reason otherwise.

use std::sync::{Arc, Weak};

use tokio::sync::{Semaphore, watch};

use super::advance::Input;
use super::stats::{Counters, Tally};
use super::{Inner, ReplyOutcome, SagaError};
use crate::broker::{Delivery, Subscription};
use crate::committer::Phase;
use crate::error::{BrokerError, LoadError, RepositoryError};
use crate::execution::{ReplyRejection, SagaStatus};
use crate::message::{BrokerMessage, SagaResponse, header};

/// How many replies are handled at once: a delivery is taken from the broker only when one of
/// them is done, so a flood waits with the broker instead of filling memory with tasks.
const HANDLED_AT_ONCE: usize = 64;

/// Receives the service's replies and resumes the executions they name, each in its own task (at
/// most [`HANDLED_AT_ONCE`] at a time), until `stop` turns true. Every task holds a clone of
/// `working`, as does the listener itself.
pub(super) async fn listen(
    inner: Weak<Inner>,
    mut subscription: Subscription,
    mut stop: watch::Receiver<bool>,
    working: watch::Receiver<()>,
) {
    let slots = Arc::new(Semaphore::new(HANDLED_AT_ONCE));
    loop {
        let slot = tokio::select! {
            biased;
            () = stopped(&mut stop) => break,
            slot = Arc::clone(&slots).acquire_owned() => slot,
        };
        let Ok(slot) = slot else {
            break;
        };
        let delivery = tokio::select! {
            biased;
            () = stopped(&mut stop) => break,
            delivery = subscription.next() => delivery,
        };
        let Some(delivery) = delivery else {
            break;
        };
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let working = working.clone();
        tokio::spawn(async move {
            handle_delivery(&inner, delivery).await;
            drop(working);
            drop(slot);
        });
    }
    // What was received but not taken goes back to the broker.
    drop(subscription);
}

/// Returns once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopping| *stopping).await;
}

/// What to do with a delivery, given how applying its reply went.
#[derive(Debug)]
enum Verdict {
    /// The reply advanced its execution: acknowledge it.
    Applied,
    /// The reply names no stored execution: acknowledge it.
    Unknown,
    /// The reply changed nothing: acknowledge it. With `reject_late_work`, its execution was
    /// rejected before it came, so the work it reports is rejected first.
    Ignored {
        reason: ReplyRejection,
        reject_late_work: bool,
    },
    /// Handling it failed for a reason that may pass: have it delivered again.
    Retry(SagaError),
    /// Handling it can never succeed: set it aside.
    Abandon(SagaError),
}

/// The verdict on a reply whose application had `result`.
fn verdict(result: Result<ReplyOutcome, SagaError>) -> Verdict {
    match result {
        Ok(ReplyOutcome::Applied { .. }) => Verdict::Applied,
        Ok(ReplyOutcome::Ignored {
            reason: ReplyRejection::UnknownExecution,
            ..
        }) => Verdict::Unknown,
        Ok(ReplyOutcome::Ignored { reason, .. }) => Verdict::Ignored {
            reason,
            reject_late_work: reason == ReplyRejection::ExecutionEnded(SagaStatus::Errored),
        },
        Err(error) if is_transient(&error) => Verdict::Retry(error),
        Err(error) => Verdict::Abandon(error),
    }
}

/// Handles one delivery of the reply topic and settles it.
async fn handle_delivery(inner: &Arc<Inner>, delivery: Delivery) {
    let counters = &inner.counters;
    let message_id = delivery.message().id;
    let reply = match SagaResponse::from_message(delivery.message()) {
        Ok(reply) => reply,
        Err(error) => {
            counters.add(Tally::Malformed);
            tracing::warn!(%message_id, %error, "dead-lettering a message that is not a saga reply");
            dead_letter(counters, delivery, error.to_string()).await;
            return;
        }
    };
    let (id, request) = (reply.saga(), reply.request());
    if inner.recent_replies.seen(id, request) {
        counters.add(Tally::Ignored);
        tracing::debug!(saga.id = %id, %message_id, "acknowledged a copy of a reply handled lately");
        ack(delivery).await;
        return;
    }
    match verdict(inner.apply(id, Input::Reply(reply)).await) {
        Verdict::Applied => {
            counters.add(Tally::Applied);
            inner.recent_replies.remember(id, request);
        }
        Verdict::Unknown => {
            counters.add(Tally::Unknown);
            tracing::info!(saga.id = %id, %message_id, "ignored a reply for an execution that is not stored");
        }
        Verdict::Ignored {
            reason,
            reject_late_work,
        } => {
            counters.add(Tally::Ignored);
            tracing::info!(saga.id = %id, %message_id, %reason, "ignored a reply");
            if reject_late_work {
                if let Err(error) = reject_work_of(inner, delivery.message()).await {
                    tracing::warn!(saga.id = %id, %message_id, %error, "could not reject a late reply's work; asking for the reply again");
                    nack(delivery).await;
                    return;
                }
            }
            // Answered already, or its execution ended: a copy can never change anything.
            if matches!(
                reason,
                ReplyRejection::Duplicate | ReplyRejection::ExecutionEnded(_)
            ) {
                inner.recent_replies.remember(id, request);
            }
        }
        Verdict::Retry(error) => {
            counters.add(Tally::Failed);
            // Storage or transport trouble: have the reply delivered again.
            tracing::warn!(saga.id = %id, %message_id, %error, "handling a reply failed; asking for redelivery");
            nack(delivery).await;
            return;
        }
        Verdict::Abandon(error) => {
            counters.add(Tally::Failed);
            tracing::error!(saga.id = %id, %message_id, %error, "handling a reply failed for good; dead-lettering it");
            dead_letter(counters, delivery, error.to_string()).await;
            return;
        }
    }
    ack(delivery).await;
}

/// Acknowledges `delivery`.
async fn ack(delivery: Delivery) {
    let message_id = delivery.message().id;
    if let Err(error) = delivery.ack().await {
        tracing::warn!(%message_id, %error, "acknowledging a reply failed");
    }
}

/// Asks for `delivery` to be delivered again.
async fn nack(delivery: Delivery) {
    let message_id = delivery.message().id;
    if let Err(error) = delivery.nack().await {
        tracing::warn!(%message_id, %error, "asking for a redelivery failed");
    }
}

/// Rejects, at the service that sent `reply`, the transaction its command ran in, when the reply
/// comes after its execution was rejected (the step gave up waiting: a timeout). That service did
/// the work without being part of the decision, so no reject reached it; its tentative work would
/// stay staged for ever. A reject is idempotent, so a service that did get one, or staged nothing,
/// is not harmed.
async fn reject_work_of(inner: &Inner, reply: &BrokerMessage) -> Result<(), BrokerError> {
    match late_work_reject(reply) {
        Some(reject) => inner.broker.publish(reject).await,
        None => Ok(()),
    }
}

/// The reject of the transaction a late `reply` reports work in; none when it names no service or
/// no transaction (it leaves nothing to reject).
fn late_work_reject(reply: &BrokerMessage) -> Option<BrokerMessage> {
    let service = reply.headers.get(header::SERVICE)?;
    let transactions = crate::message::parse_transactions(reply)?;
    let transaction = transactions.last()?;
    tracing::info!(%service, %transaction, "rejecting the work of a reply that came after its saga was rejected");
    Some(
        BrokerMessage::new(
            Phase::Reject.topic(service),
            serde_json::Value::String(transaction.to_string()),
        )
        .with_header(header::TRANSACTION, transaction.to_string())
        .with_header(header::SAGA, transaction.to_string()),
    )
}

/// Sets `delivery` aside with `reason`, and counts it.
async fn dead_letter(counters: &Counters, delivery: Delivery, reason: String) {
    let message_id = delivery.message().id;
    match delivery.dead_letter(reason).await {
        Ok(()) => counters.add(Tally::DeadLettered),
        Err(error) => {
            // The broker asked for a redelivery instead: it comes back and is set aside then.
            tracing::warn!(%message_id, %error, "dead-lettering a reply failed");
        }
    }
}

/// Whether a failure may pass if the same reply is handled again later.
fn is_transient(error: &SagaError) -> bool {
    matches!(
        error,
        SagaError::Repository(RepositoryError::Storage(_) | RepositoryError::Conflict { .. })
            | SagaError::Broker(_)
            | SagaError::Busy { .. }
            // Registered later by a run, or known to another instance.
            | SagaError::Load(LoadError::UnknownSaga { .. })
    )
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::error::ExecutionError;

    fn ignored(reason: ReplyRejection) -> Result<ReplyOutcome, SagaError> {
        Ok(ReplyOutcome::Ignored {
            id: Uuid::new_v4(),
            reason,
        })
    }

    #[test]
    fn an_applied_reply_is_acknowledged() {
        let applied = Ok(ReplyOutcome::Applied {
            id: Uuid::new_v4(),
            status: SagaStatus::Finished,
        });
        assert!(matches!(verdict(applied), Verdict::Applied));
    }

    #[test]
    fn a_reply_for_no_stored_execution_is_counted_apart() {
        assert!(matches!(
            verdict(ignored(ReplyRejection::UnknownExecution)),
            Verdict::Unknown
        ));
    }

    #[test]
    fn only_a_reply_after_a_rejection_has_its_work_rejected() {
        assert!(matches!(
            verdict(ignored(ReplyRejection::ExecutionEnded(SagaStatus::Errored))),
            Verdict::Ignored {
                reject_late_work: true,
                ..
            }
        ));
        for reason in [
            ReplyRejection::ExecutionEnded(SagaStatus::Finished),
            ReplyRejection::Duplicate,
            ReplyRejection::NotWaiting,
        ] {
            assert!(
                matches!(
                    verdict(ignored(reason)),
                    Verdict::Ignored { reject_late_work: false, reason: found } if found == reason
                ),
                "{reason}"
            );
        }
    }

    #[test]
    fn failures_that_may_pass_are_retried() {
        let id = Uuid::new_v4();
        for error in [
            SagaError::Repository(RepositoryError::Storage("locked".into())),
            SagaError::Repository(RepositoryError::Conflict {
                id,
                expected: 1,
                found: 2,
            }),
            SagaError::Broker(BrokerError::Closed),
            SagaError::Busy {
                id,
                owner: "b".to_owned(),
            },
            SagaError::Load(LoadError::UnknownSaga {
                id,
                saga: "later".to_owned(),
            }),
        ] {
            assert!(is_transient(&error), "{error}");
            assert!(matches!(verdict(Err(error)), Verdict::Retry(_)));
        }
    }

    #[test]
    fn failures_that_cannot_pass_are_set_aside() {
        let id = Uuid::new_v4();
        for error in [
            SagaError::Repository(RepositoryError::Corrupt {
                id,
                reason: "bad json".to_owned(),
            }),
            SagaError::Load(LoadError::Corrupt {
                id,
                reason: "bad steps".to_owned(),
            }),
            SagaError::Execution(ExecutionError::AlreadyRolledBack {
                id,
                what: "saga".to_owned(),
            }),
        ] {
            assert!(!is_transient(&error), "{error}");
            assert!(matches!(verdict(Err(error)), Verdict::Abandon(_)));
        }
    }

    #[test]
    fn a_late_reply_s_work_is_rejected_in_its_innermost_transaction() {
        let (outer, inner) = (Uuid::new_v4(), Uuid::new_v4());
        let reply = BrokerMessage::new("orderReply", serde_json::Value::Null)
            .with_header(header::SERVICE, "payment")
            .with_header(header::TRANSACTIONS, format!("{outer},{inner}"));
        let reject = late_work_reject(&reply).expect("a reject");
        assert_eq!(reject.topic, Phase::Reject.topic("payment"));
        assert_eq!(reject.headers[header::TRANSACTION], inner.to_string());
        assert_eq!(reject.headers[header::SAGA], inner.to_string());
    }

    #[test]
    fn a_late_reply_naming_no_service_or_transaction_leaves_nothing_to_reject() {
        let transaction = Uuid::new_v4().to_string();
        let anonymous = BrokerMessage::new("orderReply", serde_json::Value::Null)
            .with_header(header::TRANSACTIONS, transaction);
        assert!(late_work_reject(&anonymous).is_none());
        let untracked = BrokerMessage::new("orderReply", serde_json::Value::Null)
            .with_header(header::SERVICE, "payment");
        assert!(late_work_reject(&untracked).is_none());
    }
}
