//! A WebSocket's publishes in flight: started as their frames are read, answered in the order
//! they were sent. With a durable store, the publishes a client sends without waiting for
//! each `ack` share a commit, rather than taking one each.

use std::collections::VecDeque;
use std::sync::Arc;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use switchboard_hub::Message;

use crate::error::AppError;
use crate::wire::frames::Reference;

/// Most publishes of one WebSocket in flight (read, not yet answered). Past it the session
/// stops reading the client's frames until the oldest is answered: each holds its message,
/// so this bounds what one client can make the gateway hold for it at
/// `MAX_IN_FLIGHT × max_message_bytes`. Enough for a publisher that does not wait for its
/// acks to fill a commit of the store.
pub const MAX_IN_FLIGHT: usize = 64;

/// A publish whose answer is due, in the order the client sent it.
struct InFlight {
    /// The client's `ref`, for its answer.
    reference: Option<Reference>,
    outcome: BoxFuture<'static, Result<Arc<Message>, AppError>>,
}

/// What a publish came to: its message (`ack`) or why not (`error`).
pub struct Answer {
    pub reference: Option<Reference>,
    pub outcome: Result<Arc<Message>, AppError>,
}

/// The publishes of one connection, oldest first. Empty, it allocates nothing.
#[derive(Default)]
pub struct Publishes {
    in_flight: VecDeque<InFlight>,
}

impl Publishes {
    /// Whether another publish may be read: fewer than [`MAX_IN_FLIGHT`] are in flight.
    pub fn has_room(&self) -> bool {
        self.in_flight.len() < MAX_IN_FLIGHT
    }

    pub fn is_empty(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// Queues a publish (already started, or already refused) to be answered after those
    /// before it.
    pub fn push(
        &mut self,
        reference: Option<Reference>,
        outcome: impl Future<Output = Result<Arc<Message>, AppError>> + Send + 'static,
    ) {
        self.in_flight.push_back(InFlight {
            reference,
            outcome: Box::pin(outcome),
        });
    }

    /// The oldest publish's answer, once it has one. Cancel-safe: dropped before then, the
    /// publish stays first in line.
    pub async fn next(&mut self) -> Answer {
        let Some(oldest) = self.in_flight.front_mut() else {
            return std::future::pending().await;
        };
        let outcome = (&mut oldest.outcome).await;
        self.answered(outcome)
    }

    /// The oldest publish's answer if it has one already.
    pub fn next_ready(&mut self) -> Option<Answer> {
        let outcome = self
            .in_flight
            .front_mut()?
            .outcome
            .as_mut()
            .now_or_never()?;
        Some(self.answered(outcome))
    }

    fn answered(&mut self, outcome: Result<Arc<Message>, AppError>) -> Answer {
        let oldest = self.in_flight.pop_front();
        let reference = oldest.expect("only the oldest is answered").reference;
        Answer { reference, outcome }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use switchboard_hub::{Data, Position, TopicName};
    use tokio::sync::oneshot;

    fn message(seq: u64) -> Arc<Message> {
        let position = Position {
            tag: 0,
            epoch: 1,
            seq,
        };
        Message::new(
            TopicName::new("t").expect("a topic"),
            position,
            0,
            &Data::from_text("x"),
        )
    }

    fn seq(answer: &Answer) -> u64 {
        answer.outcome.as_ref().expect("published").position.seq
    }

    #[tokio::test]
    async fn answers_come_in_the_order_the_publishes_were_sent() {
        let mut publishes = Publishes::default();
        let (first_done, first) = oneshot::channel();
        let (second_done, second) = oneshot::channel();
        publishes.push(
            Some(1.into()),
            async move { Ok(first.await.expect("sent")) },
        );
        publishes.push(
            Some(2.into()),
            async move { Ok(second.await.expect("sent")) },
        );
        let refused = AppError::new(ErrorCode::Forbidden, "no");
        publishes.push(Some(3.into()), std::future::ready(Err(refused)));
        // The second is done first, but waits for the first.
        second_done.send(message(2)).expect("waited for");
        assert!(publishes.next_ready().is_none());
        first_done.send(message(1)).expect("waited for");
        let answer = publishes.next().await;
        assert_eq!((seq(&answer), answer.reference), (1, Some(1.into())));
        assert_eq!(seq(&publishes.next_ready().expect("ready")), 2);
        let refusal = publishes.next_ready().expect("ready");
        assert_eq!(
            refusal.outcome.expect_err("refused").code,
            ErrorCode::Forbidden
        );
        assert!(publishes.is_empty());
    }

    #[tokio::test]
    async fn room_runs_out_at_the_limit() {
        let mut publishes = Publishes::default();
        for n in 0..MAX_IN_FLIGHT {
            assert!(publishes.has_room());
            let published = message(n as u64 + 1);
            publishes.push(None, std::future::ready(Ok(published)));
        }
        assert!(!publishes.has_room());
        publishes.next().await;
        assert!(publishes.has_room());
    }
}
