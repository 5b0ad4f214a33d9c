//! Integration tests of actormq-store (one binary; see each module).

mod common;
mod t10_append_read;
mod t20_model;
mod t30_crash;
mod t40_corruption;
mod t50_retention;
mod t60_index_flush;
mod t70_disk_full;
mod t80_replica;
mod t90_recovery_perf;
