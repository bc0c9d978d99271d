// GPU layout kernels vs the CPU reference.
