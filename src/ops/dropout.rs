//! dropout ops (`shaders/dropout.wgsl`). Contract: see the functions below.
