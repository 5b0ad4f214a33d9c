//! actormq store (placeholder while being written).
