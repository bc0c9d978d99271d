//! random ops (`shaders/random.wgsl`). Contract: see the functions below.
