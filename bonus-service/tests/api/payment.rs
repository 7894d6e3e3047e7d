//! The in-test payment responder: the documented behaviour the payment
//! service implements for `bonus.payment.requested`.
//!
//! * A credit adds exactly `amount` to the user's bonus balance.
//! * A debit takes `min(amount, bonus balance)`; a conversion moves
//!   `min(amount, bonus balance)` from the bonus balance to the real one.
//! * Each `request_id` is applied at most once; every delivery of it is
//!   answered with the same `bonus.payment.settled`.
//! * It can be told to refuse (answer `succeeded = false`, move nothing) or
//!   to hold requests unanswered until released.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use service_core::events::{
    handler, BonusOperation, BonusPaymentRequested, BonusPaymentSettled, DomainEvent, Event,
    EventBus,
};

#[derive(Default)]
struct State {
    bonus: HashMap<(String, String), i64>,
    real: HashMap<(String, String), i64>,
    /// How often each request id moved money (must never exceed 1).
    applied: HashMap<String, u32>,
    /// How often each request id was delivered.
    deliveries: HashMap<String, u32>,
    answers: HashMap<String, BonusPaymentSettled>,
    refuse: bool,
    hold: bool,
    held: Vec<Event>,
}

#[derive(Clone, Default)]
pub(crate) struct PaymentResponder {
    state: Arc<Mutex<State>>,
}

impl PaymentResponder {
    /// Answers requests on `bus`.
    pub(crate) async fn attach(bus: &EventBus) -> Self {
        let responder = Self::default();
        let me = responder.clone();
        let bus_for_answers = bus.clone();
        bus.on(
            BonusPaymentRequested::TYPE,
            "test-payment",
            handler(move |event| {
                let me = me.clone();
                let bus = bus_for_answers.clone();
                async move {
                    if let Some(answer) = me.handle(&event) {
                        bus.emit_event(&answer).await?;
                    }
                    Ok(())
                }
            }),
        )
        .await
        .unwrap();
        responder
    }

    fn handle(&self, event: &Event) -> Option<Event> {
        let request = BonusPaymentRequested::from_event(event).unwrap();
        let mut state = self.state.lock().unwrap();
        *state
            .deliveries
            .entry(request.request_id.clone())
            .or_default() += 1;
        if state.hold {
            state.held.push(event.clone());
            return None;
        }
        let answer = match state.answers.get(&request.request_id) {
            Some(answer) => answer.clone(),
            None => {
                let answer = state.apply(&request);
                state
                    .answers
                    .insert(request.request_id.clone(), answer.clone());
                answer
            }
        };
        Some(
            answer
                .to_event(&event.tenant_id, Some(&request.user_id))
                .unwrap(),
        )
    }

    /// Refuse (or stop refusing) every new request.
    pub(crate) fn refuse(&self, refuse: bool) {
        self.state.lock().unwrap().refuse = refuse;
    }

    /// Hold new requests unanswered.
    pub(crate) fn hold(&self) {
        self.state.lock().unwrap().hold = true;
    }

    /// Stop holding and answer every held delivery (in order) on `bus`.
    pub(crate) async fn release(&self, bus: &EventBus) {
        let held = {
            let mut state = self.state.lock().unwrap();
            state.hold = false;
            std::mem::take(&mut state.held)
        };
        for event in held {
            let request = BonusPaymentRequested::from_event(&event).unwrap();
            self.state
                .lock()
                .unwrap()
                .deliveries
                .entry(request.request_id.clone())
                .and_modify(|n| *n -= 1);
            if let Some(answer) = self.handle(&event) {
                bus.emit_event(&answer).await.unwrap();
            }
        }
    }

    pub(crate) fn bonus_balance(&self, user: &str, currency: &str) -> i64 {
        let state = self.state.lock().unwrap();
        *state
            .bonus
            .get(&(user.to_owned(), currency.to_owned()))
            .unwrap_or(&0)
    }

    pub(crate) fn real_balance(&self, user: &str, currency: &str) -> i64 {
        let state = self.state.lock().unwrap();
        *state
            .real
            .get(&(user.to_owned(), currency.to_owned()))
            .unwrap_or(&0)
    }

    /// How often `request_id` moved money.
    pub(crate) fn applied(&self, request_id: &str) -> u32 {
        *self
            .state
            .lock()
            .unwrap()
            .applied
            .get(request_id)
            .unwrap_or(&0)
    }

    /// How often `request_id` was delivered.
    pub(crate) fn deliveries(&self, request_id: &str) -> u32 {
        *self
            .state
            .lock()
            .unwrap()
            .deliveries
            .get(request_id)
            .unwrap_or(&0)
    }

    /// Request ids that moved money for `user_bonus_id`'s requests, any kind.
    pub(crate) fn applied_for(&self, user_bonus_id: &str) -> Vec<(String, u32)> {
        let state = self.state.lock().unwrap();
        let mut ids: Vec<(String, u32)> = state
            .applied
            .iter()
            .filter(|(id, _)| id.starts_with(user_bonus_id))
            .map(|(id, n)| (id.clone(), *n))
            .collect();
        ids.sort();
        ids
    }

    /// Every request id applied, with its count.
    pub(crate) fn all_applied(&self) -> HashMap<String, u32> {
        self.state.lock().unwrap().applied.clone()
    }
}

impl State {
    fn apply(&mut self, request: &BonusPaymentRequested) -> BonusPaymentSettled {
        let key = (request.user_id.clone(), request.currency.clone());
        let mut settled = BonusPaymentSettled {
            request_id: request.request_id.clone(),
            operation: request.operation,
            user_bonus_id: request.user_bonus_id.clone(),
            user_id: request.user_id.clone(),
            currency: request.currency.clone(),
            succeeded: false,
            amount_applied: 0,
            transaction_id: None,
            reason: None,
        };
        if self.refuse || request.amount <= 0 {
            settled.reason = Some("refused by the test payment service".to_owned());
            return settled;
        }
        let bonus = self.bonus.entry(key.clone()).or_default();
        let moved = match request.operation {
            BonusOperation::Credit => {
                *bonus += request.amount;
                request.amount
            }
            BonusOperation::Debit => {
                let moved = request.amount.min(*bonus);
                *bonus -= moved;
                moved
            }
            BonusOperation::Convert => {
                let moved = request.amount.min(*bonus);
                *bonus -= moved;
                *self.real.entry(key).or_default() += moved;
                moved
            }
        };
        *self.applied.entry(request.request_id.clone()).or_default() += 1;
        settled.succeeded = true;
        settled.amount_applied = moved;
        settled.transaction_id = (moved > 0).then(|| uuid::Uuid::now_v7().to_string());
        settled
    }
}
