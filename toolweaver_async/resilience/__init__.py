"""Keeping the agent going when a store is slow or down: breakers, guards, the outage journal
and its replay, and the health ping that ends an open period."""
