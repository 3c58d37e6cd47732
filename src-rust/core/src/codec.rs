//! codec (to be written)
