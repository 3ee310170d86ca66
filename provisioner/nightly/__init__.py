"""The nightly hardware-lab run: reimage a pool by upgrade domain, check every host that
came back, and report (JUnit XML for CI dashboards, HTML for people)."""
