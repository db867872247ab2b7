//! sans-IO core
