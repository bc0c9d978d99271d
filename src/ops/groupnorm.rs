//! groupnorm ops (`shaders/groupnorm.wgsl`). Contract: see the functions below.
