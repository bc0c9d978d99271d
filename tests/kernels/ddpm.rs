// GPU ddpm kernels vs the CPU reference.
