//! layout ops (`shaders/layout.wgsl`). Contract: see the functions below.
