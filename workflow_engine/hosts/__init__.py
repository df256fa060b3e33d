"""Hosts drive the kernel: execute jobs and run the maintenance tick."""
