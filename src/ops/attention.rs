//! attention ops (`shaders/attention.wgsl`). Contract: see the functions below.
