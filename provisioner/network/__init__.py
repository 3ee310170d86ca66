"""The guests' network: their addresses, the names everything resolves by, and the role
endpoints a load balancer keeps in front of them."""
