"""Reading a running lab: its state read back from the kernel (readback), declarative checks,
and packet traces."""
