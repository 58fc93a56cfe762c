"""Stage 1: referring expression → box."""
