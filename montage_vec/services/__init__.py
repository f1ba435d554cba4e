"""Clients of the app's other services: the user service (cache invalidation) and the
check-in service (an HTTP source of check-ins)."""
