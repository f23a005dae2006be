//! Exposure scoring (being written).
