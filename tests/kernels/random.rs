// GPU random kernels vs the CPU reference.
