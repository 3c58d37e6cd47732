//! prefetch (to be written)
