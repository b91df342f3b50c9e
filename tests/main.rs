//! The integration tests, one binary: each module starts the real `lngpt-collector` (built by cargo
//! for this test target) on a private directory and talks to it over its real socket, files and HTTP
//! port, against a real store (`common` holds the harness: the daemon, the MongoDB stand-in, an HTTP
//! and SSE client, a webhook receiver, a Chromium driver).
//!
//! One binary rather than one per file: the 347 crates are linked once, not twenty times. Run one
//! module or one test with a filter: `cargo test --test it page::`, `cargo test --test it hostile`.

mod common;

mod api;
mod backpressure;
mod budget;
mod cli;
mod files;
mod guard;
mod ingest;
mod mongo;
mod monitor;
mod notify;
mod notify_cli;
mod page;
mod properties;
mod python_client;
mod reads;
mod redaction;
mod reload;
mod rollups;
mod socket;
mod state;
mod store_conformance;
mod systemd;
