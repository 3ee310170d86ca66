"""The agent: runs in the maintenance image (and later on hosts). Standard library only,
so it runs on the bare python3 that the maintenance image carries."""
