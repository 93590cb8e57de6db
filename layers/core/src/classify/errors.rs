use super::Classify;
use crate::Outcome;

/// The default classifier: every `Err` is a failure, every `Ok` a success.
///
/// ```
/// use tower_hardening_core::{Classify, ErrorsAsFailures, Outcome};
///
/// assert_eq!(ErrorsAsFailures.classify(&Ok::<_, ()>(1)), Outcome::Success);
/// assert_eq!(ErrorsAsFailures.classify(&Err::<(), _>(())), Outcome::Failure);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErrorsAsFailures;

impl<Res, E> Classify<Res, E> for ErrorsAsFailures {
    fn classify(&self, result: &Result<Res, E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        }
    }
}
