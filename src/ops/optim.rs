//! optim ops (`shaders/optim.wgsl`). Contract: see the functions below.
