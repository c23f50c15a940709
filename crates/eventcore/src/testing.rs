//! Given-events / when-command / then-events tests for aggregates.
//!
//! ```text
//! given::<Donor>([registered()]).when(rename("Épicerie")).then([renamed("Épicerie")]);
//! given::<Donor>([]).when(rename("x")).then_rejected("donor_not_found");
//! ```
//! Every event that a `then` checks is also round-tripped through the stored encoding, so an
//! event that would not survive storage fails its test.

use std::fmt::Debug;

use crate::{decode_event, encode_event, Aggregate, Rejection};

pub struct Given<A: Aggregate> {
    state: A,
}

pub fn given<A: Aggregate>(history: impl IntoIterator<Item = A::Event>) -> Given<A> {
    let history: Vec<A::Event> = history.into_iter().collect();
    Given { state: A::replay(&history) }
}

impl<A: Aggregate> Given<A> {
    pub fn when(self, command: A::Command) -> Then<A> {
        let result = self.state.decide(&command);
        Then { state: self.state, result }
    }
}

pub struct Then<A: Aggregate> {
    state: A,
    result: Result<Vec<A::Event>, Rejection>,
}

impl<A: Aggregate> Then<A>
where
    A::Event: Debug,
{
    /// Asserts the command produced exactly `expected`; returns the state after them.
    #[track_caller]
    pub fn then(self, expected: impl IntoIterator<Item = A::Event>) -> A {
        let expected: Vec<_> = expected.into_iter().collect();
        match self.result {
            Ok(events) => {
                assert_eq!(events, expected, "unexpected events");
                let mut state = self.state;
                for event in &events {
                    let enc = encode_event(event);
                    let back: A::Event = decode_event(&enc.event_type, enc.schema_version, enc.data)
                        .unwrap_or_else(|e| panic!("event does not survive storage: {e}"));
                    assert_eq!(&back, event, "event changed through storage");
                    state.apply(event);
                }
                state
            }
            Err(rejection) => panic!("expected events {expected:?}, got rejection {rejection}"),
        }
    }

    /// Asserts the command was rejected with `code`; returns the rejection for further checks.
    #[track_caller]
    pub fn then_rejected(self, code: &str) -> Rejection {
        match self.result {
            Ok(events) => panic!("expected rejection {code}, got events {events:?}"),
            Err(rejection) => {
                assert_eq!(rejection.code, code, "wrong rejection: {rejection}");
                rejection
            }
        }
    }

    /// The raw outcome, for checks that do not fit the two above.
    pub fn outcome(self) -> Result<Vec<A::Event>, Rejection> {
        self.result
    }
}
