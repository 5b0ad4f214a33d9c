//! Integration tests of actormq-actors (one binary, one module per area).

mod t10_supervisor;
mod t11_guarded;
mod t12_guarded_broker;
mod t15_registry;
mod t16_broker_meta;
mod t17_registrar;
mod t18_subscription_groups;
mod t20_net;
mod t21_client_session;
mod t22_session_faults;
mod t30_backpressure;
mod t40_send_pull;
mod t41_long_poll;
mod t42_batching;
mod t43_disk_full;
mod t44_offset_bounds;
mod t45_transactions;
mod t46_idempotent;
mod t46_timer;
mod t47_pop;
