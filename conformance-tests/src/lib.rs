//! The conformance suite. (Skeleton — being written.)
