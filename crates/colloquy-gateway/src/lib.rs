//! colloquy-gateway: the network edge. Authenticates requests (JWT), checks
//! and normalises input, hands messages to the pipeline and pushes replies
//! back over HTTP and WebSocket.
//!
//! This crate must not run the dialogue policy: it enqueues messages on the
//! bus and reads the store; the stages of colloquy-worker do the rest.

pub mod api;
pub mod auth;
pub mod clock;
pub mod feed;
pub mod hub;
pub mod input;
pub mod metrics;
pub mod openapi;
pub mod ratelimit;
pub mod server;
