//! actormq wire protocol (placeholder while being written).
