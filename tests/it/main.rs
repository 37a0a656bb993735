//! Integration tests: hookrelay started for real, driven over real sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api;
mod audit;
mod cli;
mod community;
mod conformance;
mod controls;
mod crash;
mod credentials;
mod delivery;
pub mod destinations;
mod egress;
mod email;
mod fairness;
mod faults;
mod helpers;
mod mtls;
mod oauth2;
pub mod ops;
mod portal;
mod postgres_store;
mod routing;
mod scale;
mod security;
mod sources;
mod store;
pub(crate) mod ui;
