// GPU embedding kernels vs the CPU reference.
