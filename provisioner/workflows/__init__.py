"""Node workflows: steps over the drivers, run by the conductor's workers."""
