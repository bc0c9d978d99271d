// GPU dropout kernels vs the CPU reference.
