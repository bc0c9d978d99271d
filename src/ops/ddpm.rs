//! ddpm ops (`shaders/ddpm.wgsl`). Contract: see the functions below.
