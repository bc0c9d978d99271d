//! embedding ops (`shaders/embedding.wgsl`). Contract: see the functions below.
