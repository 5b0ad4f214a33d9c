//! actormq book (placeholder).
