// GPU loss kernels vs the CPU reference.
