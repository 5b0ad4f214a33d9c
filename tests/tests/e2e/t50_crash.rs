//! SIGKILL under sync flush (written next).
