//! Send and pull through the broker data path (written next).
