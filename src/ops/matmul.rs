//! matmul ops (`shaders/matmul.wgsl`). Contract: see the functions below.
