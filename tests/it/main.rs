//! Integration tests: hookrelay started for real, driven over real sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api;
mod cli;
mod controls;
mod crash;
mod delivery;
mod destinations;
mod helpers;
mod scale;
mod store;
