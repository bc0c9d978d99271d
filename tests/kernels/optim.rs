// GPU optim kernels vs the CPU reference.
