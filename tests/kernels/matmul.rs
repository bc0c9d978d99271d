// GPU matmul kernels vs the CPU reference.
