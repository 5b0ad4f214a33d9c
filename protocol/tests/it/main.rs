//! Integration tests of actormq-protocol: round trips, malformed input,
//! fuzzing.

mod t10_roundtrip;
mod t20_malformed;
mod t30_fuzz;
