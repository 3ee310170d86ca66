"""The REST API (/v1) and the HTTP boot endpoints, on one HTTP server."""
