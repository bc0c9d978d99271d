//! loss ops (`shaders/loss.wgsl`). Contract: see the functions below.
