//! In-memory [`oncetask_core::Store`]. (Skeleton — being written.)
