// GPU groupnorm kernels vs the CPU reference.
