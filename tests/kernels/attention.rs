// GPU attention kernels vs the CPU reference.
