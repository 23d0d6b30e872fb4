//! Rust clients (placeholder).
