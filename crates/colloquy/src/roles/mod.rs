//! The server roles, each built from the parts of [`crate::wiring`] it
//! uses: `serve` (everything in one process), `gateway`, `worker` and
//! `migrate`.

pub mod gateway;
pub mod migrate;
pub mod serve;
pub mod worker;
