"""Measuring the service: `make bench` (bench/) and `make load` (load/)."""
