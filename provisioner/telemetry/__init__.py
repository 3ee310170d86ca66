"""What the daemon tells a monitoring system: Prometheus metrics (metrics.py: what the
daemon counts as it works; fleet.py: what the database holds, read at each scrape).
prometheus_client is used here and nowhere else."""

from .metrics import Metrics

__all__ = ["Metrics"]
