//! GAEN export (being written).
