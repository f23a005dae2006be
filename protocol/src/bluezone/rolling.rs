//! rolling
