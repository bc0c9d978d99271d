//! conv2d ops (`shaders/conv2d.wgsl`). Contract: see the functions below.
