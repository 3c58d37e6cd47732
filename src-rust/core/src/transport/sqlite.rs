//! sqlite transport (to be written)
