//! IPP print jobs (being written).
