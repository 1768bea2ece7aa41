//! What kind of failure an error is, shared by every crate's error type so a host maps them
//! one way (an HTTP status, an exit code) without knowing which crate failed.

/// What kind of failure an error is, for a host to map (an HTTP status, an exit code).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The request names something that is not there: a tensor, a proposal, a file.
    NotFound,
    /// The request is malformed or asks for something impossible (a bad slice, 300 into I8).
    Invalid,
    /// The request does not fit the current state (a patch whose original bytes differ).
    Conflict,
    /// The host refuses it (read-only, a path outside the allowed folders).
    Forbidden,
    /// More than one request may do at once.
    TooLarge,
    /// The machine failed (I/O) or a bug stopped the work.
    Internal,
}
