//! Advertisement codecs (being written).
