// GPU conv2d kernels vs the CPU reference.
