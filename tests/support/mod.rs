//! Fixtures shared by the test binaries.

pub mod crd_schema;
