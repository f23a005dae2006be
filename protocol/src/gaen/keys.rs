//! GAEN keys (being written).
