//! The root package exists to hold end-to-end tests and benches.
